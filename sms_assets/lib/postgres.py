"""The project's own SQL: connections that fail fast and tables replaced atomically."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, LiteralString, cast

import pandas as pd
import psycopg
from psycopg import sql

from sms_assets.lib.urls import CONNECT_TIMEOUT_S, libpq_conninfo, postgres_unavailable


@contextmanager
def connect(url: str) -> Iterator[psycopg.Connection]:
    """A connection to `url`; an unreachable server raises ServiceUnavailable within seconds."""
    try:
        conn = psycopg.connect(libpq_conninfo(url), connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.OperationalError as exc:
        raise postgres_unavailable(url, exc) from exc
    with conn:
        yield conn


@contextmanager
def replacing(conn: psycopg.Connection, table: str, primary_key: str) -> Iterator[sql.Identifier]:
    """Build a new version of `table` under the yielded name, then swap it in, in one transaction.

    Readers see the old table until the commit and the new one after it. If the block raises (a bad
    row included), the transaction rolls back and `table` is untouched.
    """
    staging = sql.Identifier(f"{table}__loading")
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging))
        yield staging
        cur.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
                staging, sql.Identifier(f"{table}__pkey_new"), sql.Identifier(primary_key)
            )
        )
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(staging, sql.Identifier(table)))
        cur.execute(
            sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier(f"{table}__pkey_new"), sql.Identifier(f"{table}_pkey")
            )
        )


def replace_table(
    conn: psycopg.Connection,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Iterable[Sequence[Any]],
    primary_key: str,
    before_swap: Callable[[sql.Identifier], None] | None = None,
) -> int:
    """Replace `table` by `rows` (COPY), atomically; returns the number of rows written.

    `before_swap`, when given, is called with the new table's name once every row is written, in the
    same transaction: it may query the new rows, and if it raises, `table` is left as it was.
    """
    column_defs = sql.SQL(", ").join(
        # Column types are constants of the calling module, never input.
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(cast(LiteralString, type_)))
        for name, type_ in columns
    )
    names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in columns)
    count = 0
    with replacing(conn, table, primary_key) as staging, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE {} ({})").format(staging, column_defs))
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(staging, names)) as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        if before_swap is not None:
            before_swap(staging)
    return count


def replace_table_as(conn: psycopg.Connection, table: str, query: str, primary_key: str) -> int:
    """Replace `table` by the result of `query`, computed inside Postgres, atomically."""
    with replacing(conn, table, primary_key) as staging, conn.cursor() as cur:
        # The query is generated SQL (Feast's point-in-time join), not user input.
        cur.execute(sql.SQL("CREATE TABLE {} AS ").format(staging) + sql.SQL(cast(LiteralString, query)))
        return cur.rowcount


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
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(staging, names)) as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ").format(
                sql.Identifier(table), names, names, staging
            )
            + sql.SQL(on_conflict)  # type: ignore[arg-type]
        )
        inserted = cur.rowcount
        cur.execute(sql.SQL("DROP TABLE {}").format(staging))
    return inserted
