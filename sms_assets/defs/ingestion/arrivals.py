"""The arrivals half of the ingestion group: batches of new messages and late labels, from the landing
folder into their tables."""

import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
from pydantic import Field

from sms_assets.defs.ingestion import batches
from sms_assets.defs.ingestion.assets import SMS_ARRIVAL_LABELS, SMS_ARRIVALS
from sms_assets.defs.ingestion.landing_files import BatchError
from sms_assets.defs.resources import LandingResource, PostgresResource
from sms_assets.defs.shared import LANDING_POOL, PREVIEW_ROWS, preview_table, table_metadata
from sms_core.postgres import count_rows, query_frame


class ArrivalsConfig(dg.Config):
    """Which landed batches a run ingests."""

    # File names in the landing folder; empty: every batch waiting there.
    batches: list[str] = Field(default_factory=list)
    # True (what arrivals_sensor asks): an asset is materialized only when its table gained rows, so
    # automation downstream wakes for real news only. False (a run a person starts): both always are,
    # so nothing downstream in the same run is skipped for want of news.
    only_news: bool = False


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            SMS_ARRIVALS,
            group_name="ingestion",
            kinds={"postgres"},
            description="Messages that arrived after the initial load, from the landing folder.",
            # Skipped by sensor runs that bring no new message (ArrivalsConfig.only_news).
            skippable=True,
        ),
        dg.AssetSpec(
            SMS_ARRIVAL_LABELS,
            group_name="ingestion",
            kinds={"postgres"},
            description="Labels of arrived messages, which may come long after the message itself.",
            skippable=True,
        ),
    ],
    description="Batches from the landing folder, each stored whole or quarantined whole.",
    pool=LANDING_POOL,
)
def ingest_arrivals(
    context: dg.AssetExecutionContext,
    config: ArrivalsConfig,
    landing: LandingResource,
    postgres: PostgresResource,
) -> Iterator[dg.MaterializeResult]:
    """New messages and late labels from the landing folder, stored once however often they land.

    A malformed batch (or an entry that is no regular file, or one above a limit) is moved to
    quarantine/ and fails the run by name, after the good batches of the same run are stored and
    materialized, so one bad file never holds back the others. A refused batch name in the run config
    fails the run before anything is read or moved.
    """
    started = time.perf_counter()
    folder = landing.folder()
    stored: list[str] = []
    rejected: list[str] = []
    added_messages = added_labels = 0
    try:
        # Every name from run config is checked before anything is read or moved.
        selected = folder.select(config.batches)
    except BatchError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    with postgres.connect() as conn:
        # Each batch commits on its own, before its file moves to processed/.
        conn.autocommit = True
        batches.ensure_tables(conn)
        for path in selected:
            if path.parent == folder.quarantined:
                rejected.append(folder.quarantine_reason(path))
                continue
            try:
                batch = folder.read(path)
            except BatchError as exc:
                folder.quarantine(path, str(exc))
                rejected.append(str(exc))
                context.log.error(f"quarantined {path.name}: {exc}")
                continue
            messages, labels = batches.store_batch(conn, batch)
            folder.archive(path)
            stored.append(path.name)
            added_messages += messages
            added_labels += labels
            context.log.info(f"{path.name}: {messages} new messages, {labels} new labels")
        summary = {
            "batches": dg.MetadataValue.json(stored),
            "rejected": dg.MetadataValue.json(rejected),
            "seconds": round(time.perf_counter() - started, 3),
        }
        for key, added, table_metadata in (
            (SMS_ARRIVALS, added_messages, _arrival_metadata),
            (SMS_ARRIVAL_LABELS, added_labels, _label_metadata),
        ):
            if added or not config.only_news or _never_materialized(context, key):
                yield dg.MaterializeResult(
                    asset_key=key,
                    metadata={**summary, **table_metadata(conn), "rows_added": added, "changed": added > 0},
                )
    if rejected:
        # A Failure's description is what the UI shows as the run's error, without a stack trace.
        raise dg.Failure(
            description=(
                f"{len(rejected)} batch(es) refused whole and moved to {folder.quarantined}; "
                f"{len(stored)} other batch(es) were stored. " + " | ".join(rejected)
            ),
            metadata={"rejected": dg.MetadataValue.json(rejected), "stored": dg.MetadataValue.json(stored)},
            allow_retries=False,
        )


def _never_materialized(context: dg.AssetExecutionContext, key: dg.AssetKey) -> bool:
    # The first run records the (possibly empty) tables, so that automation waiting for every parent
    # of sms_features to exist is not held up until the first message arrives.
    return context.instance.get_latest_materialization_event(key) is None


def _arrival_metadata(conn: Any) -> dict[str, Any]:
    newest = query_frame(
        conn,
        f"SELECT sms_id, message_id, event_timestamp, text FROM {batches.MESSAGES_TABLE} "
        f"ORDER BY event_timestamp DESC, message_id LIMIT {PREVIEW_ROWS}",
    )
    return {
        **table_metadata(conn, batches.MESSAGES_TABLE),
        "dagster/row_count": count_rows(conn, batches.MESSAGES_TABLE),
        "newest_event_timestamp": newest["event_timestamp"].iloc[0].isoformat() if len(newest) else "",
        "preview": preview_table(newest),
    }


def _label_metadata(conn: Any) -> dict[str, Any]:
    row = conn.execute(
        f"SELECT count(*) FILTER (WHERE l.label = 'ham'), count(*) FILTER (WHERE l.label = 'spam'), "
        f"count(*) FILTER (WHERE a.message_id IS NOT NULL AND l.message_id IS NULL) "
        f"FROM {batches.LABELS_TABLE} l FULL JOIN {batches.MESSAGES_TABLE} a USING (message_id)"
    ).fetchone()
    ham, spam, awaiting = row
    return {
        **table_metadata(conn, batches.LABELS_TABLE),
        "dagster/row_count": count_rows(conn, batches.LABELS_TABLE),
        "ham": int(ham),
        "spam": int(spam),
        "messages_awaiting_label": int(awaiting),
    }
