"""The features group: `sms_features`, the table Feast reads as its offline source.

Every run brings the table in line with the messages: a new message gets its row, a message whose text
(or time) changed gets its row computed again, a message that is gone loses its row and leaves a
tombstone in `sms_features_removed` for the online sync. When the feature code changes (its code version
is derived from `schema.py` and `compute.py`) or the table's columns differ from the schema, every row
is computed again into a new table that replaces the old one in one transaction.

`computed_at` says when a row was last written, on one clock that only moves forward across runs (they
take a lock first): the online sync writes to Redis exactly the rows written after its watermark.
"""

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import dagster as dg
import pandas as pd
import psycopg

from sms_assets.defs.features import compute, schema
from sms_assets.defs.features.compute import compute_features
from sms_assets.defs.features.schema import FEATURE_NAMES, NUMERIC_NAMES, postgres_columns
from sms_assets.defs.ingestion import batches
from sms_assets.defs.ingestion.assets import MESSAGES_SQL, SMS_ARRIVALS, raw_sms_messages
from sms_assets.defs.resources import PostgresResource
from sms_assets.defs.shared import PREVIEW_ROWS, STORES_POOL, code_version, markdown_table
from sms_assets.lib.postgres import (
    count_rows,
    insert_new,
    query_frame,
    replace_table,
    table_columns,
    table_exists,
    table_note,
)

FEATURE_TABLE = "sms_features"
REMOVED_TABLE = "sms_features_removed"
FEATURE_CODE_VERSION = code_version(schema.__name__, compute.__name__)
FEATURE_CHUNK_ROWS = 50_000
FEATURE_TABLE_COLUMNS = (
    ("message_id", "bigint NOT NULL"),
    ("event_timestamp", "timestamptz NOT NULL"),
    *postgres_columns(),
    # md5 of the text the features were computed from: an edited text no longer matches it.
    ("source_md5", "text NOT NULL"),
    ("computed_at", "timestamptz NOT NULL"),
)
COLUMN_NAMES = [name for name, _ in FEATURE_TABLE_COLUMNS]

# sms_features follows new messages. It does not wait for ingestions in progress: under a steady stream
# one nearly always is, and the features would starve. Each run computes features for every message
# without them, so an ingestion that ends while the run is under way (which eager counts as handled)
# is covered by the next run, or by the catch-up sensor once the stream stops.
FOLLOW_NEW_MESSAGES = (
    dg.AutomationCondition.eager()
    .without(~dg.AutomationCondition.any_deps_in_progress())
    .with_label("eager, even while arrivals are being ingested")
)

REMOVED_DDL = (
    f"CREATE TABLE IF NOT EXISTS {REMOVED_TABLE} "
    "(message_id bigint PRIMARY KEY, removed_at timestamptz NOT NULL)"
)
# Messages whose row is missing or was computed from another text or time.
STALE_MESSAGES_SQL = (
    f"SELECT m.message_id, m.event_timestamp, m.text, md5(m.text), f.message_id IS NULL AS is_new "
    f"FROM ({MESSAGES_SQL}) AS m LEFT JOIN {FEATURE_TABLE} f USING (message_id) "
    f"WHERE f.message_id IS NULL OR f.source_md5 <> md5(m.text) OR f.event_timestamp <> m.event_timestamp"
)
ALL_MESSAGES_SQL = (
    f"SELECT message_id, event_timestamp, text, md5(text), true AS is_new FROM ({MESSAGES_SQL}) AS m"
)
# Rows whose message is gone, deleted and remembered (with the run's clock) for the online sync.
REMOVE_GONE_SQL = f"""
    WITH gone AS (
        DELETE FROM {FEATURE_TABLE} f
        WHERE NOT EXISTS (SELECT 1 FROM ({MESSAGES_SQL}) m WHERE m.message_id = f.message_id)
        RETURNING f.message_id
    )
    INSERT INTO {REMOVED_TABLE} (message_id, removed_at) SELECT message_id, %(stamp)s FROM gone
    ON CONFLICT (message_id) DO UPDATE SET removed_at = EXCLUDED.removed_at
"""
# Before a full rebuild: the rows the new table will not have.
REMEMBER_GONE_SQL = f"""
    INSERT INTO {REMOVED_TABLE} (message_id, removed_at)
    SELECT f.message_id, %(stamp)s FROM {FEATURE_TABLE} f
    WHERE NOT EXISTS (SELECT 1 FROM ({MESSAGES_SQL}) m WHERE m.message_id = f.message_id)
    ON CONFLICT (message_id) DO UPDATE SET removed_at = EXCLUDED.removed_at
"""
UPSERT = "(message_id) DO UPDATE SET " + ", ".join(
    f"{name} = EXCLUDED.{name}" for name in COLUMN_NAMES if name != "message_id"
)


@dg.asset(
    deps=[raw_sms_messages, SMS_ARRIVALS],
    group_name="features",
    kinds={"postgres", "pandas"},
    description="Text statistics and the text per message: the table Feast reads as its offline source.",
    automation_condition=FOLLOW_NEW_MESSAGES,
    code_version=FEATURE_CODE_VERSION,
    pool=STORES_POOL,
)
def sms_features(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    """Engineered features per message, computed by `compute_features`, in line with every message."""
    started = time.perf_counter()
    counts: Counter[str] = Counter()
    with postgres.connect() as conn:
        batches.ensure_tables(conn)
        with conn.transaction():
            # One writer at a time, and its clock read after the lock: rows committed later always
            # carry a later computed_at, so the online sync's watermark never skips one.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('sms_assets.sms_features'))")
            stamp = _scalar(conn, "SELECT clock_timestamp()")
            conn.execute(REMOVED_DDL)  # type: ignore[arg-type]
            rebuild = rebuild_reason(conn)
            with postgres.connect() as source:
                if rebuild:
                    context.log.info(f"computing every row again: {rebuild}")
                    if table_exists(conn, FEATURE_TABLE):
                        counts["removed"] = conn.execute(REMEMBER_GONE_SQL, {"stamp": stamp}).rowcount  # type: ignore[arg-type]
                    rows = _feature_rows(source, ALL_MESSAGES_SQL, stamp, counts)
                    note = {"code_version": FEATURE_CODE_VERSION}
                    replace_table(conn, FEATURE_TABLE, FEATURE_TABLE_COLUMNS, rows, "message_id", note)
                else:
                    counts["removed"] = conn.execute(REMOVE_GONE_SQL, {"stamp": stamp}).rowcount  # type: ignore[arg-type]
                    rows = _feature_rows(source, STALE_MESSAGES_SQL, stamp, counts)
                    insert_new(conn, FEATURE_TABLE, COLUMN_NAMES, rows, on_conflict=UPSERT)
        count = count_rows(conn, FEATURE_TABLE)
        means = query_frame(
            conn,
            "SELECT "
            + ", ".join(f"avg({c})::float8 AS {c}" for c in NUMERIC_NAMES)
            + f" FROM {FEATURE_TABLE}",
        )
        preview = query_frame(
            conn,
            f"SELECT * FROM {FEATURE_TABLE} ORDER BY event_timestamp DESC, message_id LIMIT {PREVIEW_ROWS}",
        )
    seconds = time.perf_counter() - started
    written = counts["added"] + counts["updated"]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": count,
            "changed": bool(written or counts["removed"]),
            "full_rebuild": rebuild or "",
            "rows_added": counts["added"],
            "rows_updated": counts["updated"],
            "rows_removed": counts["removed"],
            "code_version": FEATURE_CODE_VERSION,
            "feature_means": markdown_table(means.round(4)),
            "preview": markdown_table(preview),
            "seconds": round(seconds, 3),
            "rows_per_second": round(written / seconds) if seconds else 0,
        }
    )


def rebuild_reason(conn: psycopg.Connection) -> str | None:
    """Why every row must be computed again (no table, other feature code, other columns), or None."""
    columns = table_columns(conn, FEATURE_TABLE)
    if not columns:
        return f"{FEATURE_TABLE} does not exist yet"
    recorded = table_note(conn, FEATURE_TABLE).get("code_version")
    if recorded != FEATURE_CODE_VERSION:
        return f"the feature code changed (code version {recorded} -> {FEATURE_CODE_VERSION})"
    if columns != COLUMN_NAMES:
        return f"its columns {columns} differ from the schema's {COLUMN_NAMES}"
    return None


def _scalar(conn: psycopg.Connection, query: str) -> Any:
    row = conn.execute(query).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


def _feature_rows(
    conn: psycopg.Connection, query: str, stamp: datetime, counts: Counter[str]
) -> Iterator[Sequence[Any]]:
    """Feature rows for the messages `query` selects, read through a server-side cursor in chunks;
    counts them in `counts` as added or updated."""
    with conn.cursor(name="messages") as cursor:
        cursor.execute(query)  # type: ignore[arg-type]
        while chunk := cursor.fetchmany(FEATURE_CHUNK_ROWS):
            frame = pd.DataFrame(chunk, columns=["message_id", "event_timestamp", "text", "md5", "is_new"])
            features = compute_features(frame["text"])
            new = int(frame["is_new"].sum())
            counts["added"] += new
            counts["updated"] += len(frame) - new
            yield from zip(
                frame["message_id"].tolist(),
                frame["event_timestamp"].tolist(),
                *(features[c].tolist() for c in FEATURE_NAMES),
                frame["md5"].tolist(),
                [stamp] * len(frame),
                strict=True,
            )
