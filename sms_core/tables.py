"""Tables replaced whole and atomically, and the note each replacement records on its table."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, LiteralString, cast

import psycopg
from psycopg import sql

from sms_core.postgres import copy_rows

# A row's hash, by a table alias: a content fingerprint is the row count and the sum of these.
ROW_HASH = "hashtextextended({}::text, 0)"


def fingerprint(rows: int, digest: int | str) -> str:
    """A table's content fingerprint, from its row count and the sum of its rows' hashes."""
    return f"{rows}:{digest}"


def fingerprint_parts(value: str) -> tuple[int, int] | None:
    """The row count and hash sum of a fingerprint; None if `value` is not one."""
    rows, sep, digest = value.partition(":")
    return (int(rows), int(digest)) if sep and rows.isdigit() and digest.lstrip("-").isdigit() else None


@dataclass(frozen=True)
class Replaced:
    """What replacing a table did: its rows, whether its content (or its note) changed, and the
    fingerprint of its content that decided it (row count and a hash of every row)."""

    rows: int
    changed: bool
    fingerprint: str
    # Rows added, removed or changed against the table replaced (every row when there was none); None
    # when not counted.
    rows_changed: int | None = None


def replace_table(
    conn: psycopg.Connection,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Iterable[Sequence[Any]],
    primary_key: str,
    note: Mapping[str, str] | None = None,
    before_swap: Callable[[sql.Identifier], None] | None = None,
) -> Replaced:
    """Replace `table` by `rows` (COPY), atomically, unless they are exactly what it holds.

    `before_swap`, when given, is called with the new table's name once every row is written, in the
    same transaction: it may query the new rows, and if it raises, `table` is left as it was.
    """
    column_defs = sql.SQL(", ").join(
        # Column types are constants of the calling module, never input.
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(cast(LiteralString, type_)))
        for name, type_ in columns
    )
    staging = _staging(table)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging))
        cur.execute(sql.SQL("CREATE TABLE {} ({})").format(staging, column_defs))
        copy_rows(cur, staging, [name for name, _ in columns], rows)
        if before_swap is not None:
            before_swap(staging)
        return _swap_in(cur, table, primary_key, note or {})


def replace_table_as(
    conn: psycopg.Connection,
    table: str,
    query: str,
    primary_key: str,
    note: Mapping[str, str] | None = None,
    count_changed_rows: bool = False,
) -> Replaced:
    """Replace `table` by the result of `query`, computed inside Postgres, atomically, unless the
    result is exactly what it holds. `count_changed_rows`: also count the rows that differ from the
    old table's (one more pass over both)."""
    staging = _staging(table)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging))
        # The query is generated SQL (Feast's point-in-time join), not user input.
        cur.execute(sql.SQL("CREATE TABLE {} AS ").format(staging) + sql.SQL(cast(LiteralString, query)))
        return _swap_in(cur, table, primary_key, note or {}, count_changed_rows)


def _staging(table: str) -> sql.Identifier:
    return sql.Identifier(f"{table}__loading")


def _swap_in(
    cur: psycopg.Cursor,
    table: str,
    primary_key: str,
    note: Mapping[str, str],
    count_changed_rows: bool = False,
) -> Replaced:
    """Swap the filled staging table in for `table` (the caller's transaction makes it atomic).

    Readers see the old table until the commit and the new one after it; if anything raises, the
    transaction rolls back and `table` is untouched. The table's comment records a fingerprint of its
    content with the caller's `note`: when both match the old table's, the old table is kept as it is.
    """
    staging = _staging(table)
    query = f"SELECT count(*), coalesce(sum({ROW_HASH.format('s')}), 0)::text FROM {{}} s"
    cur.execute(sql.SQL(cast(LiteralString, query)).format(staging))
    rows, digest = cur.fetchone() or (0, "0")
    content = fingerprint(rows, digest)
    new_note = {**note, "content": content}
    if _note(cur, table) == new_note:
        cur.execute(sql.SQL("DROP TABLE {}").format(staging))
        return Replaced(int(rows), changed=False, fingerprint=content, rows_changed=0)
    changed_rows = _changed_rows(cur, staging, int(rows), table, primary_key) if count_changed_rows else None
    swap_in(cur, staging, table, primary_key, new_note)
    return Replaced(int(rows), changed=True, fingerprint=content, rows_changed=changed_rows)


def _changed_rows(
    cur: psycopg.Cursor, staging: sql.Identifier, staged_rows: int, table: str, primary_key: str
) -> int:
    """The rows of `staging` (`staged_rows` of them) that `table` lacks or holds otherwise, and the rows
    of `table` it lacks: every staged row when there is no `table` yet."""
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
    if not (cur.fetchone() or (False,))[0]:
        return staged_rows
    query = (
        f"SELECT count(*) FROM (SELECT {{key}} AS k, {ROW_HASH.format('n')} AS h FROM {{new}} n) a "
        f"FULL JOIN (SELECT {{key}} AS k, {ROW_HASH.format('o')} AS h FROM {{old}} o) b USING (k) "
        "WHERE a.h IS DISTINCT FROM b.h"
    )
    cur.execute(
        sql.SQL(cast(LiteralString, query)).format(
            key=sql.Identifier(primary_key), new=staging, old=sql.Identifier(table)
        )
    )
    return int((cur.fetchone() or (0,))[0])


def swap_in(
    cur: psycopg.Cursor, filled: sql.Identifier, table: str, primary_key: str, note: Mapping[str, str]
) -> None:
    """Make the filled table `table`, with its primary key and `note` (see `table_note`), in place of
    the old one; the caller's transaction makes it atomic."""
    cur.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
            filled, sql.Identifier(f"{table}__pkey_new"), sql.Identifier(primary_key)
        )
    )
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
    cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(filled, sql.Identifier(table)))
    cur.execute(
        sql.SQL("ALTER INDEX {} RENAME TO {}").format(
            sql.Identifier(f"{table}__pkey_new"), sql.Identifier(f"{table}_pkey")
        )
    )
    write_note(cur, table, note)


def write_note(cur: psycopg.Cursor | psycopg.Connection, table: str, note: Mapping[str, Any]) -> None:
    """Record `note` (JSON) on `table`, in place of what it held, in the caller's transaction."""
    cur.execute(
        sql.SQL("COMMENT ON TABLE {} IS {}").format(sql.Identifier(table), sql.Literal(json.dumps(note)))
    )


def table_note(conn: psycopg.Connection, table: str) -> dict[str, Any]:
    """What the last replacement (or `write_note`) recorded on `table`; empty if nothing."""
    with conn.cursor() as cur:
        return _note(cur, table)


def _note(cur: psycopg.Cursor, table: str) -> dict[str, Any]:
    cur.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (table,))
    row = cur.fetchone()
    try:
        return json.loads(row[0]) if row and row[0] else {}
    except json.JSONDecodeError:
        return {}
