"""The ingestion group: the SMS Spam Collection's initial load, and arrivals from the landing folder."""

import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
from psycopg import sql
from pydantic import Field

from sms_assets.defs.ingestion import batches
from sms_assets.defs.ingestion.dataset import DatasetError, check_load, count_lines, parse_messages, sha256
from sms_assets.defs.ingestion.landing_files import BatchError
from sms_assets.defs.resources import DatasetResource, LandingResource, PostgresResource
from sms_assets.defs.shared import LANDING_POOL, PREVIEW_ROWS, STORES_POOL, markdown_table, table_metadata
from sms_core.postgres import count_rows, query_frame
from sms_core.tables import replace_table

RAW_TABLE = "raw_sms_messages"
RAW_COLUMNS = (
    ("message_id", "bigint NOT NULL"),
    ("event_timestamp", "timestamptz NOT NULL"),
    ("label", "text NOT NULL"),
    ("text", "text NOT NULL"),
)
# Every message, from the initial load and from the landing folder.
MESSAGES_SQL = (
    f"SELECT message_id, event_timestamp, text FROM {RAW_TABLE} "
    f"UNION ALL SELECT message_id, event_timestamp, text FROM {batches.MESSAGES_TABLE}"
)
# Every labelled message: md5(text) keeps duplicate texts on one side of the train/test split without
# carrying the text into the training set. Arrivals count only once their label has come.
LABELLED_MESSAGES_SQL = (
    f"SELECT message_id, event_timestamp, label, md5(text) AS text_group FROM {RAW_TABLE} "
    f"UNION ALL SELECT message_id, event_timestamp, label, md5(text) AS text_group "
    f"FROM ({batches.LABELLED_ARRIVALS_SQL}) AS labelled_arrivals"
)


class RawMessagesConfig(dg.Config):
    """What a load must hold before it may replace raw_sms_messages."""

    # The SMS Spam Collection has 5,574 messages, 13% spam; a load holds it less the holdback (500 for
    # `sms-assets simulate`). A thousand is far below any such load and far above what a truncated or
    # wrong file holds, and it is about the least the training split works on: its held-out quarter
    # then has some 250 messages, 30 of them spam, on which F1 and ROC AUC still mean something.
    min_messages: int = Field(
        default=1000,
        description="The fewest messages (after the holdback) that may replace the table.",
    )


@dg.asset(
    group_name="ingestion",
    kinds={"postgres"},
    description="The SMS Spam Collection in Postgres: message_id, event_timestamp, label, text.",
    pool=STORES_POOL,
)
def raw_sms_messages(
    context: dg.AssetExecutionContext,
    config: RawMessagesConfig,
    dataset: DatasetResource,
    postgres: PostgresResource,
) -> dg.MaterializeResult:
    """The SMS Spam Collection in Postgres, one row per message with a stable message_id.

    A load with fewer than `min_messages` messages, or with one label only, fails naming the file and
    its counts, and the previous table stays as it was: training on it would fail or mean nothing.
    """
    started = time.perf_counter()
    path = dataset.fetch()
    held_back = dataset.held_back()
    total = count_lines(path)
    if held_back < 0 or 0 < total <= held_back:
        raise DatasetError(f"holdback {held_back} must be from 0 to {total - 1}: {path} has {total} lines")
    # Every line is still parsed, so a bad line anywhere fails the load; the tail is left for arrivals.
    rows = (
        (m.message_id, m.event_timestamp, m.label, m.text)
        for m in parse_messages(path)
        if m.message_id <= total - held_back
    )
    balance: dict[str, int] = {}
    with postgres.connect() as conn:

        def check(staging: sql.Identifier) -> None:
            # The new rows' counts, inside the replacing transaction: raising keeps the old table.
            query = sql.SQL("SELECT label, count(*) FROM {} GROUP BY label").format(staging)
            balance.update((label, int(n)) for label, n in conn.execute(query).fetchall())
            check_load(path, balance, config.min_messages, held_back)

        replaced = replace_table(
            conn, RAW_TABLE, RAW_COLUMNS, rows, primary_key="message_id", before_swap=check
        )
        count = replaced.rows
        preview = query_frame(conn, f"SELECT * FROM {RAW_TABLE} ORDER BY message_id LIMIT {PREVIEW_ROWS}")
        table = table_metadata(conn, RAW_TABLE)
    context.log.info(
        f"loaded {count} messages from {path}" if replaced.changed else f"{RAW_TABLE} already holds {path}"
    )
    return dg.MaterializeResult(
        # The fingerprint that decided whether the table changed: a reload of the same file keeps it.
        data_version=dg.DataVersion(replaced.fingerprint),
        metadata={
            **table,
            "dagster/row_count": count,
            "changed": replaced.changed,
            "source": str(path),
            "source_sha256": sha256(path),
            "ham": balance.get("ham", 0),
            "spam": balance.get("spam", 0),
            "spam_share": round(balance.get("spam", 0) / count, 4) if count else 0.0,
            "held_back": held_back,
            "min_messages": config.min_messages,
            "preview": markdown_table(preview),
            "seconds": round(time.perf_counter() - started, 3),
        },
    )


# The keys other groups depend on; the specs are written inside ingest_arrivals (a module-level
# AssetSpec would be loaded from the defs folder as an asset of its own).
SMS_ARRIVALS = dg.AssetKey("sms_arrivals")
SMS_ARRIVAL_LABELS = dg.AssetKey("sms_arrival_labels")


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
        "preview": markdown_table(newest),
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
