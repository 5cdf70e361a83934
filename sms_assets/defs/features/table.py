"""The feature table in Postgres: its columns, the queries that keep it in line with the messages, and
the steps of a full recompute (a new table filled in pieces, then swapped in)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString, cast

import dagster as dg
import pandas as pd
import psycopg
from psycopg import sql

from sms_assets.defs.ingestion import batches
from sms_assets.defs.ingestion.assets import MESSAGES_SQL, RAW_TABLE
from sms_assets.defs.shared import IN_FLIGHT, code_version
from sms_core.contracts import FEATURE_TABLE
from sms_core.features import compute, schema
from sms_core.features.compute import compute_features
from sms_core.features.schema import FEATURE_NAMES, NUMERIC_NAMES, postgres_columns
from sms_core.postgres import count_rows, table_columns, table_exists
from sms_core.tables import swap_in, table_note, write_note

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

# The rows in the order they were written: the newest change, the rows written after a watermark (the
# online sync, the checks' incremental passes) and the last ones written, without reading the table;
# and in the order of their ids' hashes: a checks' seeded sample (check_passes), the same way.
INDEXES_DDL = (
    f"CREATE INDEX IF NOT EXISTS {FEATURE_TABLE}_written_idx ON {FEATURE_TABLE} (computed_at, message_id);"
    f"CREATE INDEX IF NOT EXISTS {FEATURE_TABLE}_sample_idx ON {FEATURE_TABLE} (hashint8(message_id))"
)
# The note's key for the raw table's content when every message was last compared with its row.
RECONCILED_WITH = "raw_content"
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
# Arrived messages without a row. Arrivals are only ever added, never edited or removed: while the raw
# table is the one the last full reconciliation saw, these are all a run has to compute.
NEW_ARRIVALS_SQL = (
    f"SELECT a.message_id, a.event_timestamp, a.text, md5(a.text), true AS is_new "
    f"FROM {batches.MESSAGES_TABLE} a "
    f"WHERE NOT EXISTS (SELECT 1 FROM {FEATURE_TABLE} f WHERE f.message_id = a.message_id)"
)
MESSAGE_IDS = sql.SQL(f"SELECT message_id FROM ({MESSAGES_SQL}) m")  # type: ignore[arg-type]
# One piece of a full recompute: the messages in an id range.
PIECE_SQL = (
    f"SELECT message_id, event_timestamp, text, md5(text), true AS is_new FROM ({MESSAGES_SQL}) AS m "
    "WHERE message_id BETWEEN %s AND %s"
)
# A full recompute fills a table of its own, named after its run, swapped in by the last step; a run
# that failed leaves it behind for the next plan to drop.
STAGING_PREFIX = f"{FEATURE_TABLE}__recompute_"
STAGED_COLUMNS = [name for name in COLUMN_NAMES if name != "computed_at"]
STAGING_DDL = sql.SQL(
    cast(
        LiteralString,
        "CREATE TABLE {} ("
        + ", ".join(f"{name} {kind}" for name, kind in FEATURE_TABLE_COLUMNS if name != "computed_at")
        + ")",
    )
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


@dataclass(frozen=True)
class Totals:
    """The feature table's row count and the sum of each numeric feature: its means, kept in its note
    and carried forward by runs that only add rows, so that they need not read the table whole."""

    rows: int
    sums: dict[str, float]

    @classmethod
    def read(cls, conn: psycopg.Connection, written_at: datetime | None = None) -> Totals:
        """Counted in the table: every row, or those written at `written_at` (one run's)."""
        query = "SELECT count(*), " + ", ".join(f"coalesce(sum({c}), 0)::float8" for c in NUMERIC_NAMES)
        query += f" FROM {FEATURE_TABLE}" + (" WHERE computed_at = %s" if written_at else "")
        row = conn.execute(query, (written_at,) if written_at else ()).fetchone()  # type: ignore[arg-type]
        assert row is not None
        return cls(int(row[0]), dict(zip(NUMERIC_NAMES, map(float, row[1:]), strict=True)))

    @classmethod
    def noted(cls, note: Mapping[str, Any]) -> Totals | None:
        if not isinstance(note.get("rows"), int) or set(note.get("sums") or ()) != set(NUMERIC_NAMES):
            return None
        return cls(note["rows"], {c: float(note["sums"][c]) for c in NUMERIC_NAMES})

    def __add__(self, other: Totals) -> Totals:
        return Totals(self.rows + other.rows, {c: v + other.sums[c] for c, v in self.sums.items()})

    def means(self) -> pd.DataFrame:
        return pd.DataFrame([{c: v / self.rows if self.rows else None for c, v in self.sums.items()}])


def reconciled_totals(conn: psycopg.Connection, raw_content: str | None) -> Totals | None:
    """The noted totals when the last full reconciliation saw the raw table's content `raw_content`
    (then only arrivals can have come since); None when every message must be compared again."""
    note = table_note(conn, FEATURE_TABLE)
    if raw_content is None or note.get(RECONCILED_WITH) != raw_content:
        return None
    return Totals.noted(note)


def note_reconciled(conn: psycopg.Connection, raw_content: str | None, totals: Totals) -> None:
    """Record the totals, and the raw table's content every message has now been compared with."""
    note = table_note(conn, FEATURE_TABLE)
    note.update({RECONCILED_WITH: raw_content, "rows": totals.rows, "sums": totals.sums})
    write_note(conn, FEATURE_TABLE, note)


def row_count(conn: psycopg.Connection) -> int:
    """The feature table's rows, as its note counts them (every run that writes it keeps the count),
    else counted."""
    noted = Totals.noted(table_note(conn, FEATURE_TABLE))
    return noted.rows if noted else count_rows(conn, FEATURE_TABLE)


def raw_content(conn: psycopg.Connection) -> str | None:
    """The raw table's content fingerprint, as its last replacement recorded it."""
    return table_note(conn, RAW_TABLE).get("content")


def _scalar(conn: psycopg.Connection, query: str) -> Any:
    row = conn.execute(query).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


def lock(conn: psycopg.Connection) -> datetime:
    """Waits for the other writers, then reads the clock: rows committed later always carry a later
    computed_at, so the online sync's watermark never skips one."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('sms_assets.sms_features'))")
    return _scalar(conn, "SELECT clock_timestamp()")


def swap_in_recomputed(
    conn: psycopg.Connection, staging: sql.Identifier, stamp: datetime, counts: Counter[str]
) -> None:
    """The pieces' table in place of the feature table, every row stamped with `stamp`: a column
    added with a constant default is written into no row (Postgres keeps the value once)."""
    if table_exists(conn, FEATURE_TABLE):
        counts["removed"] += conn.execute(REMEMBER_GONE_SQL, {"stamp": stamp}).rowcount  # type: ignore[arg-type]
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN computed_at timestamptz NOT NULL DEFAULT {}").format(
                staging, sql.Literal(stamp)
            )
        )
        cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN computed_at DROP DEFAULT").format(staging))
        swap_in(cur, staging, FEATURE_TABLE, "message_id", {"code_version": FEATURE_CODE_VERSION})
        cur.execute(INDEXES_DDL)  # type: ignore[arg-type]


def drop_abandoned(conn: psycopg.Connection, instance: dg.DagsterInstance) -> None:
    """Drops the new tables of full recomputes whose run is no longer in flight (it failed)."""
    tables = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND starts_with(tablename, %s)",
        (STAGING_PREFIX,),
    ).fetchall()
    for (table,) in tables:
        run = instance.get_run_by_id(table.removeprefix(STAGING_PREFIX).replace("_", "-"))
        if run is None or run.status not in IN_FLIGHT:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def feature_rows(
    conn: psycopg.Connection,
    query: str,
    params: Sequence[Any],
    counts: Counter[str],
    stamp: datetime | None = None,
) -> Iterator[Sequence[Any]]:
    """Feature rows for the messages `query` selects, read through a server-side cursor in chunks,
    with `stamp` as computed_at (None: without that column); counts them as added or updated."""
    with conn.cursor(name="messages") as cursor:
        cursor.execute(query, params)  # type: ignore[arg-type]
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
                *([[stamp] * len(frame)] if stamp else []),
                strict=True,
            )


def newest_written(conn: psycopg.Connection) -> datetime | None:
    """When the newest row of the offline table was written; None if it holds none."""
    row = conn.execute(
        sql.SQL("SELECT max(computed_at) FROM {}").format(sql.Identifier(FEATURE_TABLE))
    ).fetchone()
    return row[0] if row else None


def newest_change(conn: psycopg.Connection) -> datetime | None:
    """When the offline table last changed (a row written or removed); None if it never held a row."""
    query = sql.SQL("SELECT greatest((SELECT max(computed_at) FROM {}), (SELECT max(removed_at) FROM {}))")
    row = conn.execute(query.format(sql.Identifier(FEATURE_TABLE), sql.Identifier(REMOVED_TABLE))).fetchone()
    return row[0] if row else None
