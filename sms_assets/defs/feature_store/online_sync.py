"""Redis kept in step with the offline feature table: every row written since the watermark, and every
row removed since then, or everything on a full refresh.

The watermark is the newest `computed_at` / `removed_at` (see features/assets.py) that Redis has taken
in. It is stored in Redis itself, next to the rows it describes: if Redis loses its data, it loses the
watermark too, and the next sync starts from the beginning instead of trusting a record kept elsewhere.
It moves only after every change up to it is written, so a run that fails half-way is simply done again.

A sync is planned once, then written in pieces: the changed rows split by message_id into ranges of
about equal row counts, each written by its own Dagster step (assets.py), so a large sync (the initial
load, a recompute after a feature change) runs on as many processes as the executor allows. The
removals and the watermark wait for every piece.

Rows go to Redis through Feast's `write_to_online_store`, keyed on when a row was computed rather than
on its event time: an edited message keeps its event time, so an event-time window
(`materialize`, `materialize_incremental`) would never write its new features again. feature_store.yaml
sets `skip_dedup: true` for the same reason: Feast then writes a row even when Redis holds one with the
same event time. Removed messages are deleted by key (online_keys.py); a full refresh also deletes
whatever Redis holds that the offline table does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import psycopg
import redis
from psycopg import sql

from sms_assets.defs.features.table import FEATURE_TABLE, REMOVED_TABLE, newest_change
from sms_core.contracts import FEATURE_VIEW
from sms_core.features.schema import FEATURE_NAMES
from sms_core.online_store import Holding, must_hold_query, parse_watermark, watermark_key
from sms_core.postgres import id_array, id_ranges
from sms_core.urls import REDIS_ERRORS, ServiceUnavailable, redact, redis_session

if TYPE_CHECKING:
    from feast import FeatureStore

SYNC_CHUNK_ROWS = 10_000
# A piece of a sync: one step's rows. Large enough that a step's start-up (about 1 s) is small beside its
# writing (about 8 s of Feast's conversion per 100,000 rows here); a million rows make two pieces, one
# per core. Measured at 1M through the executor: 500,000 rows per piece 22,400 rows/s, 250,000 20,600.
PIECE_ROWS = 500_000
SYNCED_COLUMNS = ["message_id", "event_timestamp", *FEATURE_NAMES]


@dataclass(frozen=True)
class Plan:
    """What a sync writes and deletes: the changes after `since` up to `through`."""

    since: datetime | None  # None: every row (no watermark, or a full refresh)
    through: datetime | None  # the newest change; None when there is nothing at all
    removed: list[int]

    @property
    def full(self) -> bool:
        return self.since is None


@dataclass(frozen=True)
class Piece:
    """The changed rows of one plan whose message_id lies in [first_id, last_id] (None: unbounded)."""

    since: datetime | None
    through: datetime | None
    first_id: int | None
    last_id: int | None
    rows: int

    @property
    def name(self) -> str:
        # A Dagster mapping key: letters, digits and underscores.
        return "all" if self.first_id is None else f"ids_{self.first_id}_{self.last_id}"


def read_watermark(redis_url: str, project: str) -> datetime | None:
    """The newest change Redis has taken in; None when it holds nothing of this project (then every
    row is due)."""
    with redis_session(redis_url) as client:
        return parse_watermark(client.get(watermark_key(project)))


def holding(conn: psycopg.Connection, redis_url: str, project: str) -> Holding:
    """How many messages Redis holds, beside how many it must hold by its watermark."""
    from sms_core import online_keys  # imports Feast: only where it is asked

    watermark = read_watermark(redis_url, project)
    query, params = must_hold_query(watermark)
    row = conn.execute(query, params).fetchone()
    keys, exact = online_keys.count_held(redis_url, project)
    return Holding.of(keys, exact, int(row[0]) if row else 0, watermark)


def write_watermark(redis_url: str, project: str, value: datetime) -> None:
    with redis_session(redis_url) as client:
        client.set(watermark_key(project), value.isoformat())


def plan(conn: psycopg.Connection, since: datetime | None, redis_url: str, project: str) -> Plan:
    """The changes after `since` (None: everything, and whatever Redis holds beyond the table)."""
    from sms_core import online_keys  # imports Feast: only where a sync runs

    through = newest_change(conn)
    if since is None:
        offline = id_array(conn, f"SELECT message_id FROM {FEATURE_TABLE} ORDER BY message_id")
        online = online_keys.online_ids(redis_url, project)
        removed = np.setdiff1d(online, offline, assume_unique=True).tolist()
    else:
        # A message removed and added again since the watermark has a row again, which a piece writes:
        # deleting its key after that would lose it.
        query = sql.SQL(
            "SELECT message_id FROM {} r WHERE removed_at > %s "
            "AND NOT EXISTS (SELECT 1 FROM {} f WHERE f.message_id = r.message_id) ORDER BY message_id"
        ).format(sql.Identifier(REMOVED_TABLE), sql.Identifier(FEATURE_TABLE))
        removed = [i for (i,) in conn.execute(query, (since,))]
    return Plan(since, through, removed)


def _window(since: datetime | None, through: datetime) -> tuple[sql.Composable, tuple]:
    """The condition selecting the rows computed after `since` up to `through`, and its parameters."""
    if since is None:
        return sql.SQL("computed_at <= %s"), (through,)
    return sql.SQL("computed_at <= %s AND computed_at > %s"), (through, since)


def pieces(conn: psycopg.Connection, plan: Plan, piece_rows: int = PIECE_ROWS) -> list[Piece]:
    """The plan's changed rows in message_id ranges of about `piece_rows` rows each; always one piece
    at least, so that a sync with nothing to write still runs its steps (and says so)."""
    if plan.through is None:
        return [Piece(plan.since, None, None, None, 0)]
    window, params = _window(plan.since, plan.through)
    ids = sql.SQL("SELECT message_id FROM {} WHERE ").format(sql.Identifier(FEATURE_TABLE)) + window
    ranges = id_ranges(conn, ids, params, piece_rows)
    if len(ranges) <= 1:  # the whole window, without id bounds
        return [Piece(plan.since, plan.through, None, None, sum(n for _, _, n in ranges))]
    return [Piece(plan.since, plan.through, first, last, n) for first, last, n in ranges]


def write_piece(store: FeatureStore, conn: psycopg.Connection, redis_url: str, piece: Piece) -> int:
    """Write one piece's rows to Redis through Feast; returns rows written.

    A Redis failure raises ServiceUnavailable naming the server (a refusal, redis.ResponseError, as it
    is); the watermark is not moved by a piece, so the next sync covers the same changes again.
    """
    if piece.through is None:
        return 0
    window, params = _window(piece.since, piece.through)
    query = (
        sql.SQL("SELECT {} FROM {} WHERE ").format(
            sql.SQL(", ").join(map(sql.Identifier, SYNCED_COLUMNS)), sql.Identifier(FEATURE_TABLE)
        )
        + window
    )
    if piece.first_id is not None:
        query += sql.SQL(" AND message_id BETWEEN %s AND %s")
        params += (piece.first_id, piece.last_id)
    written = 0
    with conn.cursor(name="online_sync") as cursor:
        cursor.execute(query, params)
        while chunk := cursor.fetchmany(SYNC_CHUNK_ROWS):
            _write(store, redis_url, pd.DataFrame(chunk, columns=SYNCED_COLUMNS))
            written += len(chunk)
    return written


def finish(conn: psycopg.Connection, redis_url: str, project: str, plan: Plan) -> None:
    """After every piece is written: delete the removed messages, then move the watermark."""
    from sms_core import online_keys

    online_keys.delete(redis_url, project, plan.removed)
    if plan.through is None:
        return
    write_watermark(redis_url, project, plan.through)
    # Redis has taken these removals in; the ones after `through` wait for the next sync.
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE removed_at <= %s").format(sql.Identifier(REMOVED_TABLE)),
        (plan.through,),
    )
    conn.commit()


def _write(store: FeatureStore, redis_url: str, frame: pd.DataFrame) -> None:
    try:
        store.write_to_online_store(FEATURE_VIEW, df=frame)
    except redis.ResponseError:
        raise  # Redis answered, refusing: not an outage (write_online_piece says so, and does not retry)
    except REDIS_ERRORS as exc:
        raise ServiceUnavailable(
            f"Redis at {redact(redis_url)} failed while writing {len(frame)} rows of {FEATURE_VIEW}: {exc}"
        ) from exc
