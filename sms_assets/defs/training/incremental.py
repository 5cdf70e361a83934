"""The training set kept in step with its inputs: the point-in-time join computed again only for the
messages whose label row or feature row changed since the last build.

A message's training row depends on its own label row and its own feature row alone (the join is by
message_id, as of the message's event time), so the rows of every other message stand. The training
table's note records what its last build joined: the join's definition (the features asked for and the
feature repo's code version), `through`, the newest feature row it saw, the build's number, and the
fingerprint of the table's content (row count and the sum of a hash of every row, as a table replaced
whole records it: both ways give the same data version for the same rows). A build with no such note, or
another definition, joins every message again and replaces the table whole.

The messages joined again are those labelled now with no training row or another label, time or text,
those with a training row and no label any more, and those whose feature row was written after `through`.
Their ids stay in `sms_training_set__changed`, noted with the build's number, until the next build: the
rows `no_future_features` verifies in full on an incremental pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString, cast

import dagster as dg
import numpy as np
import psycopg
from psycopg import sql
from pydantic import Field

from sms_core.contracts import FEATURE_TABLE
from sms_core.postgres import id_array, table_exists
from sms_core.tables import ROW_HASH, Replaced, fingerprint, fingerprint_parts, table_note, write_note

BUILD = "build"


class TrainingSetConfig(dg.Config):
    """Whether a build joins every labelled message, not only the changed ones."""

    full: bool = Field(
        default=False, description="Join every labelled message again, as the first build does."
    )


@dataclass(frozen=True)
class Built:
    """What the training table's note says of its last build."""

    through: datetime
    rows: int
    digest: int


@dataclass(frozen=True)
class Join:
    """A build's point-in-time join: its definition, the SQL of the labelled messages (message_id,
    event_timestamp, label, text_group) and the table it fills."""

    definition: str
    labelled_sql: str
    table: str

    @property
    def changed_table(self) -> str:
        return changed_table(self.table)

    def note(self, through: datetime | None, build: int) -> dict[str, Any]:
        """The note of a build (without its content, which the caller adds)."""
        return {"join": self.definition, "through": through.isoformat() if through else None, BUILD: build}

    def next_build(self, conn: psycopg.Connection) -> int:
        """The number of the build to come: one more than the last, whatever it joined."""
        return build_of(conn, self.table) + 1

    def last_build(self, conn: psycopg.Connection) -> Built | None:
        """The last build, if it joined this definition and noted what an incremental one needs."""
        note = table_note(conn, self.table)
        content = fingerprint_parts(str(note.get("content", "")))
        if note.get("join") != self.definition or not note.get("through") or content is None:
            return None
        return Built(datetime.fromisoformat(note["through"]), *content)

    def mark_changed(self, conn: psycopg.Connection, since: datetime, build: int) -> int:
        """Fill the changed table with the messages to join again, noted with `build`, and commit
        (Feast reads it on a connection of its own); returns how many of them are labelled now."""
        changed = sql.Identifier(self.changed_table)
        query = sql.SQL(
            "CREATE UNLOGGED TABLE {changed} AS "
            "SELECT coalesce(e.message_id, t.message_id) AS message_id "
            "FROM (SELECT message_id, event_timestamp, label, text_group FROM ({labelled}) m) e "
            "FULL JOIN (SELECT message_id, event_timestamp, label, text_group FROM {table}) t "
            "USING (message_id) WHERE e.message_id IS NULL OR t.message_id IS NULL "
            "OR (e.event_timestamp, e.label, e.text_group) IS DISTINCT FROM "
            "(t.event_timestamp, t.label, t.text_group) "
            "UNION SELECT message_id FROM {features} WHERE computed_at > %s"
        ).format(
            changed=changed,
            labelled=sql.SQL(cast(LiteralString, self.labelled_sql)),
            table=sql.Identifier(self.table),
            features=sql.Identifier(FEATURE_TABLE),
        )
        with conn.transaction():
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(changed))
            conn.execute(query, (since,))
            conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (message_id)").format(changed))
            write_note(conn, self.changed_table, {BUILD: build})
            row = conn.execute(f"SELECT count(*) FROM ({self.entity_sql()}) e").fetchone()  # type: ignore[arg-type]
        return int(row[0]) if row else 0

    def forget_changed(self, conn: psycopg.Connection) -> None:
        """After a build that joined every message: no changed table (a check verifies every row)."""
        with conn.transaction():
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(self.changed_table)))

    def entity_sql(self) -> str:
        """The labelled messages to join again, as Feast's entity SQL."""
        return (
            f"SELECT * FROM ({self.labelled_sql}) m "
            f"WHERE message_id IN (SELECT message_id FROM {self.changed_table})"
        )

    def apply(
        self, conn: psycopg.Connection, joined_sql: str | None, last: Built, through: datetime, build: int
    ) -> Replaced:
        """Replace the changed messages' rows by those of the join `joined_sql` (None: none of them is
        labelled, their rows just go), and note the build `build`, in one transaction."""
        table, changed = sql.Identifier(self.table), sql.Identifier(self.changed_table)
        joined = (
            sql.SQL("CREATE TEMP TABLE training_joined ON COMMIT DROP AS ")
            + sql.SQL(cast(LiteralString, joined_sql))
            if joined_sql is not None
            else sql.SQL("CREATE TEMP TABLE training_joined (LIKE {}) ON COMMIT DROP").format(table)
        )
        # The old and new rows of the changed messages, side by side: what each adds to the fingerprint.
        compared = sql.SQL(
            "SELECT count(a.message_id), coalesce(sum(a.h), 0), count(b.message_id), coalesce(sum(b.h), 0), "
            "count(*) FILTER (WHERE a.h IS DISTINCT FROM b.h) "
            "FROM (SELECT message_id, {old_hash} AS h FROM {table} o "
            "      WHERE message_id IN (SELECT message_id FROM {changed})) a "
            "FULL JOIN (SELECT message_id, {new_hash} AS h FROM training_joined n) b USING (message_id)"
        ).format(
            old_hash=sql.SQL(cast(LiteralString, ROW_HASH.format("o"))),
            new_hash=sql.SQL(cast(LiteralString, ROW_HASH.format("n"))),
            table=table,
            changed=changed,
        )
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(joined)
            cur.execute(compared)
            old_rows, old_sum, new_rows, new_sum, differ = cur.fetchone() or (0, 0, 0, 0, 0)
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE message_id IN (SELECT message_id FROM {})").format(
                    table, changed
                )
            )
            cur.execute(sql.SQL("INSERT INTO {} SELECT * FROM training_joined").format(table))
            rows = last.rows + int(new_rows) - int(old_rows)
            content = fingerprint(rows, last.digest + int(new_sum) - int(old_sum))
            write_note(cur, self.table, {**self.note(through, build), "content": content})
        return Replaced(rows, changed=bool(differ), fingerprint=content, rows_changed=int(differ))


def definition(features: list[str], repo_version: str) -> str:
    """The join's definition: the features asked for, and the code version of the repo defining them."""
    return json.dumps({"features": sorted(features), "repo": repo_version}, sort_keys=True)


def changed_table(table: str) -> str:
    """The table of the messages the last build of `table` joined again."""
    return f"{table}__changed"


def build_of(conn: psycopg.Connection, table: str) -> int:
    """The number of the last build of `table` (or of its changed table), 0 if none is noted."""
    return int(table_note(conn, table).get(BUILD) or 0)


def changed_ids(conn: psycopg.Connection, table: str) -> np.ndarray | None:
    """The messages the last build of `table` joined again, in order; None when it joined every message
    (or did not note its changed ones)."""
    changed = changed_table(table)
    if not table_exists(conn, changed) or build_of(conn, changed) != build_of(conn, table):
        return None
    return id_array(conn, f"SELECT message_id FROM {changed} ORDER BY message_id")


def sample_ids(conn: psycopg.Connection, table: str, seed: int, size: int) -> np.ndarray:
    """`size` rows of `table` that the last build did not join again, drawn with `seed`, in order."""
    query = (
        f"SELECT message_id FROM {table} "
        f"WHERE message_id NOT IN (SELECT message_id FROM {changed_table(table)}) "
        "ORDER BY hashint8extended(message_id, %s) LIMIT %s"
    )
    return np.sort(id_array(conn, query, params=[seed, size]))
