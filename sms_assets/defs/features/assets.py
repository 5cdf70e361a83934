"""The features group: `sms_features`, the table Feast reads as its offline source.

Every run brings the table in line with the messages: a new message gets its row, a message whose text
(or time) changed gets its row computed again, a message that is gone loses its row and leaves a
tombstone in `sms_features_removed` for the online sync. When the feature code changes (its code version
is derived from `schema.py` and `compute.py`) or the table's columns differ from the schema, every row
is computed again into a new table, in pieces by message_id range that the executor runs side by side,
and the last step swaps it in, in one transaction, once every piece succeeded.

`computed_at` says when a row was last written, on one clock that only moves forward across runs (they
take a lock first): the online sync writes to Redis exactly the rows written after its watermark.

Comparing every message with its row reads both tables whole. A run does it only when the raw table
is not the one the last comparison saw (its content fingerprint is in the feature table's note, with
the row count and feature sums): arrivals are only ever added, so otherwise the arrivals without a row
are all there is to compute, and the run reads only what it writes.
"""

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
from psycopg import sql
from pydantic import Field

from sms_assets.defs.fan_out import PieceWritten, fan_out_asset, planned, summary
from sms_assets.defs.features import table
from sms_assets.defs.features.table import (
    COLUMN_NAMES,
    FEATURE_CODE_VERSION,
    FEATURE_TABLE,
    INDEXES_DDL,
    MESSAGE_IDS,
    NEW_ARRIVALS_SQL,
    PIECE_SQL,
    REMOVE_GONE_SQL,
    REMOVED_DDL,
    STAGED_COLUMNS,
    STAGING_DDL,
    STAGING_PREFIX,
    STALE_MESSAGES_SQL,
    UPSERT,
    rebuild_reason,
)
from sms_assets.defs.ingestion import batches
from sms_assets.defs.ingestion.assets import SMS_ARRIVALS, raw_sms_messages
from sms_assets.defs.resources import PostgresResource
from sms_assets.defs.shared import PREVIEW_ROWS, STORES_POOL, preview_table, table_metadata
from sms_core.postgres import copy_rows, id_ranges, insert_new, query_frame

# Messages per piece of a full recompute: about 13 s of one core each here, long beside a step's start.
PIECE_ROWS = 500_000

# sms_features follows new messages. It does not wait for ingestions in progress: under a steady stream
# one nearly always is, and the features would starve. Each run computes features for every message
# without them, so an ingestion that ends while the run is under way (which eager counts as handled)
# is covered by the next run, or by the catch-up sensor once the stream stops.
FOLLOW_NEW_MESSAGES = (
    dg.AutomationCondition.eager()
    .without(~dg.AutomationCondition.any_deps_in_progress())
    .with_label("eager, even while arrivals are being ingested")
)


class FeaturesConfig(dg.Config):
    """In how many pieces a full recompute of the feature table runs, and what a run compares."""

    # Messages per piece of a full recompute: the pieces are steps that the executor runs side by side.
    piece_rows: int = Field(default=PIECE_ROWS, gt=0)
    compare_all: bool = Field(
        default=False,
        description="Compare every message with its row even when only arrivals can have come since the "
        "last run that did: a row changed outside the pipeline is then written again.",
    )


@dataclass(frozen=True)
class FeaturePlan:
    """What the planning step hands the last one."""

    rebuild: str | None  # why every row is computed again; None: only the changed ones
    compare_all: bool  # every message compared with its row, whatever the raw table's note says
    staging: str | None  # the table the pieces of a full recompute fill
    started: float  # time.time(): the steps run in processes of their own


@dataclass(frozen=True)
class FeaturePiece:
    """The messages with message_id in [first_id, last_id], computed into `staging`; with no staging
    table, nothing (the changed rows are computed by the last step, under the lock)."""

    staging: str | None
    first_id: int = 0
    last_id: int = 0

    @property
    def name(self) -> str:
        # A Dagster mapping key: letters, digits and underscores.
        return f"ids_{self.first_id}_{self.last_id}" if self.staging else "changes"


@dg.op(
    ins={"raw_sms_messages": dg.In(dg.Nothing), "sms_arrivals": dg.In(dg.Nothing)},
    out={"planned": dg.Out(FeaturePlan), "pieces": dg.DynamicOut(FeaturePiece)},
    pool=STORES_POOL,
)
def plan_features(
    context: dg.OpExecutionContext, config: FeaturesConfig, postgres: PostgresResource
) -> Iterator[dg.Output | dg.DynamicOutput]:
    """Decides whether every row is computed again and, if so, cuts the messages into id ranges of
    about `piece_rows` each, to be computed into a new table side by side."""
    started = time.time()
    with postgres.connect() as conn:
        batches.ensure_tables(conn)
        conn.execute(REMOVED_DDL)  # type: ignore[arg-type]
        table.drop_abandoned(conn, context.instance)
        rebuild = rebuild_reason(conn)
        staging = None
        pieces = [FeaturePiece(None)]
        if not rebuild:  # a table written before it had the indexes (a recomputed one has them)
            conn.execute(INDEXES_DDL)  # type: ignore[arg-type]
        if rebuild:
            context.log.info(f"computing every row again: {rebuild}")
            staging = f"{STAGING_PREFIX}{context.run_id.replace('-', '_')}"
            conn.execute(STAGING_DDL.format(sql.Identifier(staging)))
            ranges = id_ranges(conn, MESSAGE_IDS, (), config.piece_rows)
            pieces = [FeaturePiece(staging, first, last) for first, last, _ in ranges] or pieces
        conn.commit()
    plan = FeaturePlan(rebuild, config.compare_all, staging, started)
    yield from planned(plan, pieces, lambda piece: piece.name)


@dg.op(pool=STORES_POOL)
def compute_feature_piece(piece: FeaturePiece, postgres: PostgresResource) -> PieceWritten:
    """Computes one range of messages into the new table, replacing whatever an earlier try left."""
    started = time.time()
    if piece.staging is None:
        return PieceWritten(0, started, started)
    staging = sql.Identifier(piece.staging)
    counts: Counter[str] = Counter()
    with (
        postgres.connect() as conn,
        postgres.connect() as source,
        conn.transaction(),
        conn.cursor() as cur,
    ):
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE message_id BETWEEN %s AND %s").format(staging),
            (piece.first_id, piece.last_id),
        )
        rows = table.feature_rows(source, PIECE_SQL, (piece.first_id, piece.last_id), counts)
        copy_rows(cur, staging, STAGED_COLUMNS, rows)
    return PieceWritten(counts["added"], started, time.time())


@dg.op(out=dg.Out(dg.Nothing), pool=STORES_POOL)
def finish_features(
    context: dg.OpExecutionContext,
    plan: FeaturePlan,
    computed: list[PieceWritten],
    postgres: PostgresResource,
) -> None:
    """Under the writers' lock: swaps a recomputed table in, then brings the table in line with the
    messages as they are now (rows for messages new, edited or removed since)."""
    counts: Counter[str] = Counter(added=sum(piece.rows for piece in computed))
    with postgres.connect() as conn:
        if plan.staging:
            with conn.transaction():
                table.swap_in_recomputed(conn, sql.Identifier(plan.staging), table.lock(conn), counts)
        # Then the messages added, edited or removed since the pieces read them (or since the last run).
        with conn.transaction():
            stamp = table.lock(conn)
            if reason := rebuild_reason(conn):
                raise dg.Failure(f"{FEATURE_TABLE} changed during the run ({reason}): run it again")
            # Read before the messages are: a raw table replaced meanwhile is compared again next run.
            raw = table.raw_content(conn)
            before = None if plan.compare_all else table.reconciled_totals(conn, raw)
            if before is None:
                counts["removed"] += conn.execute(REMOVE_GONE_SQL, {"stamp": stamp}).rowcount  # type: ignore[arg-type]
            with postgres.connect() as source:
                stale = STALE_MESSAGES_SQL if before is None else NEW_ARRIVALS_SQL
                rows = table.feature_rows(source, stale, (), counts, stamp)
                insert_new(conn, FEATURE_TABLE, COLUMN_NAMES, rows, on_conflict=UPSERT)
            totals = table.Totals.read(conn) if before is None else before + table.Totals.read(conn, stamp)
            table.note_reconciled(conn, raw, totals)
        preview = query_frame(
            conn,
            f"SELECT * FROM {FEATURE_TABLE} ORDER BY computed_at DESC, message_id DESC LIMIT {PREVIEW_ROWS}",
        )
        newest = table.newest_change(conn)
        columns = table_metadata(conn, FEATURE_TABLE)
    written = counts["added"] + counts["updated"]
    # What decides "changed" downstream: the feature code, and the newest row written or removed (the
    # watermark the online sync follows). A run that changes nothing keeps the version.
    context.set_data_version(
        context.assets_def.key,
        dg.DataVersion(f"{FEATURE_CODE_VERSION}@{newest.isoformat() if newest else '-'}"),
    )
    context.add_output_metadata(
        {
            **columns,
            "dagster/row_count": totals.rows,
            "changed": bool(written or counts["removed"]),
            "full_rebuild": plan.rebuild or "",
            "rows_added": counts["added"],
            "rows_updated": counts["updated"],
            "rows_removed": counts["removed"],
            "code_version": FEATURE_CODE_VERSION,
            "compared": (
                "new arrivals only: the raw table is the one the last comparison saw"
                if before is not None
                else "every message: "
                + (
                    "asked for (compare_all)"
                    if plan.compare_all
                    else "the raw table is not the one last compared"
                )
            ),
            "feature_means": preview_table(totals.means().round(4)),
            "preview": preview_table(preview),
            **summary(computed, plan.started, time.time(), written),
        }
    )


sms_features = fan_out_asset(
    name="sms_features",
    plan=plan_features,
    piece=compute_feature_piece,
    finish=finish_features,
    config=FeaturesConfig,
    ins={
        "raw_sms_messages": dg.AssetIn(key=raw_sms_messages.key, dagster_type=dg.Nothing),
        "sms_arrivals": dg.AssetIn(key=SMS_ARRIVALS, dagster_type=dg.Nothing),
    },
    group_name="features",
    kinds={"postgres", "pandas"},
    description="Engineered features per message, computed by `compute_features`, in line with every "
    "message: the table Feast reads as its offline source. Planned once; a full recompute in pieces "
    "side by side; finished under the writers' lock.",
    automation_condition=FOLLOW_NEW_MESSAGES,
    code_version=FEATURE_CODE_VERSION,
)
