"""The project's own SQL: connections that fail fast and are watched for a silent server
(`watchdog.py`), queries read in chunks, rows copied in bulk (tables replaced whole are `tables.py`)."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, LiteralString, cast

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from sms_core.urls import CONNECT_TIMEOUT_S, ServiceUnavailable, libpq_conninfo, postgres_unavailable, redact
from sms_core.watchdog import Watched


@contextmanager
def connect(url: str) -> Iterator[psycopg.Connection]:
    """A connection to `url`; an unreachable server raises ServiceUnavailable within seconds, and one
    that stops answering while the block waits on it within `watchdog.SILENT_BOUND_S`."""
    try:
        conn = Watched.connect(libpq_conninfo(url), connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.OperationalError as exc:
        raise postgres_unavailable(url, exc) from exc
    conn._url = url
    try:
        with conn:
            yield conn
    except psycopg.OperationalError as exc:
        if conn._cut:
            # psycopg's own error says the server closed the connection: the watchdog did, for this.
            raise ServiceUnavailable(f"Postgres at {redact(url)} stopped answering: {conn._cut}") from None
        if conn.broken:
            raise postgres_unavailable(url, exc) from exc
        raise


def copy_rows(
    cur: psycopg.Cursor, table: sql.Identifier, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """Append `rows` to `table` in one COPY."""
    names = sql.SQL(", ").join(sql.Identifier(name) for name in columns)
    with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(table, names)) as copy:
        for row in rows:
            copy.write_row(row)


def id_ranges(
    conn: psycopg.Connection, ids: sql.Composable, params: Sequence[Any], piece_rows: int
) -> list[tuple[int, int, int]]:
    """The ids that the query `ids` selects (one column, message_id) cut into ranges of about
    `piece_rows` rows each, of equal row counts (within one) whatever the ids' gaps: (first id, last id,
    rows) per range, in order; none when it selects nothing."""
    count = sql.SQL("SELECT count(*), min(message_id), max(message_id) FROM ({}) ids").format(ids)
    rows, first, last = conn.execute(count, params).fetchone() or (0, 0, 0)
    if not rows:
        return []
    pieces = -(-int(rows) // piece_rows)
    if pieces == 1:  # no need to number the ids
        return [(int(first), int(last), int(rows))]
    query = sql.SQL(
        "SELECT min(message_id), max(message_id), count(*) FROM (SELECT message_id, "
        "ntile(%s) OVER (ORDER BY message_id) AS piece FROM ({}) ids) numbered GROUP BY piece ORDER BY 1"
    ).format(ids)
    return [(int(first), int(last), int(n)) for first, last, n in conn.execute(query, (pieces, *params))]


def count_rows(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    assert row is not None
    return int(row[0])


def query_frame(conn: psycopg.Connection, query: str) -> pd.DataFrame:
    """The result of `query` as a DataFrame with the query's column names."""
    with conn.cursor() as cur:
        cur.execute(cast(LiteralString, query))
        columns = [column.name for column in cur.description or []]
        return pd.DataFrame(cur.fetchall(), columns=columns)


def query_chunks(
    conn: psycopg.Connection, query: str, rows: int, params: Sequence[Any] | None = None
) -> Iterator[pd.DataFrame]:
    """The result of `query` (with `params`) as DataFrames of at most `rows` rows, read through a
    server-side cursor: memory holds one chunk, whatever the result's size."""
    with conn.cursor(name="chunks") as cur:
        cur.execute(cast(LiteralString, query), params)
        columns = [column.name for column in cur.description or []]
        while chunk := cur.fetchmany(rows):
            yield pd.DataFrame(chunk, columns=columns)


def id_array(
    conn: psycopg.Connection, query: str, rows: int = 100_000, params: Sequence[Any] | None = None
) -> np.ndarray:
    """The one bigint column of `query` (with `params`) as an int64 array, read in chunks through a
    server-side cursor: eight bytes an id, where a list or set of Python ints would take about sixty."""
    ids = array("q")
    with conn.cursor(name="ids") as cur:
        cur.execute(cast(LiteralString, query), params)
        while chunk := cur.fetchmany(rows):
            ids.extend(i for (i,) in chunk)
    return np.frombuffer(ids, dtype=np.int64)


def table_columns(conn: psycopg.Connection, table: str) -> list[str]:
    """A table's column names in their order; empty when there is no such table."""
    return [name for name, _ in column_types(conn, table)]


def column_types(conn: psycopg.Connection, table: str) -> list[tuple[str, str]]:
    """A table's (column name, SQL type) pairs in their order; empty when there is no such table."""
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return [(name, kind) for name, kind in rows]


def table_exists(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def insert_new(
    conn: psycopg.Connection,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    on_conflict: str = "DO NOTHING",
) -> int:
    """Add `rows` to `table`, skipping (or, with `on_conflict`, updating) keys it already holds.

    The rows are copied (COPY) into a temporary table first, so a large batch costs one round trip, then
    merged with a single INSERT ... ON CONFLICT: running it twice with the same rows changes nothing.
    Returns the number of rows inserted or updated. Runs in the caller's transaction.
    """
    staging = sql.Identifier(f"{table}__incoming")
    names = sql.SQL(", ").join(sql.Identifier(name) for name in columns)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
                staging, sql.Identifier(table)
            )
        )
        copy_rows(cur, staging, columns, rows)
        cur.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ").format(
                sql.Identifier(table), names, names, staging
            )
            + sql.SQL(on_conflict)  # type: ignore[arg-type]
        )
        inserted = cur.rowcount
        cur.execute(sql.SQL("DROP TABLE {}").format(staging))
    return inserted
