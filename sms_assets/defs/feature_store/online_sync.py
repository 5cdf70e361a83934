"""Redis kept in step with the offline feature table: every row written since the watermark, and every
row removed since then, or everything on a full refresh.

The watermark is the newest `computed_at` / `removed_at` (see features/assets.py) that Redis has taken
in. It is stored in Redis itself, next to the rows it describes: if Redis loses its data, it loses the
watermark too, and the next sync starts from the beginning instead of trusting a record kept elsewhere.
It moves only after every change up to it is written, so a run that fails half-way is simply done again.

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

import pandas as pd
import psycopg
from psycopg import sql

from sms_assets.defs.features.assets import FEATURE_TABLE, REMOVED_TABLE
from sms_assets.defs.features.schema import FEATURE_NAMES
from sms_assets.lib.feast_config import FEATURE_VIEW
from sms_assets.lib.urls import REDIS_ERRORS, ServiceUnavailable, redact, redis_session

if TYPE_CHECKING:
    from feast import FeatureStore

SYNC_CHUNK_ROWS = 10_000
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


def watermark_key(project: str) -> str:
    # Ends with the project name, like Feast's own keys, so a project's keys can be found together.
    return f"sms_assets:online_synced_through:{FEATURE_VIEW}:{project}"


def read_watermark(redis_url: str, project: str) -> datetime | None:
    """The newest change Redis has taken in; None when it holds nothing of this project."""
    with redis_session(redis_url) as client:
        value = client.get(watermark_key(project))
    return datetime.fromisoformat(value.decode()) if isinstance(value, bytes) else None


def write_watermark(redis_url: str, project: str, value: datetime) -> None:
    with redis_session(redis_url) as client:
        client.set(watermark_key(project), value.isoformat())


def newest_change(conn: psycopg.Connection) -> datetime | None:
    """When the offline table last changed (a row written or removed); None if it never held a row."""
    query = sql.SQL("SELECT greatest((SELECT max(computed_at) FROM {}), (SELECT max(removed_at) FROM {}))")
    row = conn.execute(query.format(sql.Identifier(FEATURE_TABLE), sql.Identifier(REMOVED_TABLE))).fetchone()
    return row[0] if row else None


def plan(conn: psycopg.Connection, since: datetime | None, redis_url: str, project: str) -> Plan:
    """The changes after `since` (None: everything, and whatever Redis holds beyond the table)."""
    from sms_assets.defs.feature_store import online_keys  # imports Feast: only where a sync runs

    through = newest_change(conn)
    if since is None:
        table = sql.Identifier(FEATURE_TABLE)
        offline = {i for (i,) in conn.execute(sql.SQL("SELECT message_id FROM {}").format(table))}
        removed = sorted(online_keys.online_ids(redis_url, project) - offline)
    else:
        query = sql.SQL("SELECT message_id FROM {} WHERE removed_at > %s ORDER BY message_id")
        removed = [i for (i,) in conn.execute(query.format(sql.Identifier(REMOVED_TABLE)), (since,))]
    return Plan(since, through, removed)


def sync(store: FeatureStore, conn: psycopg.Connection, redis_url: str, plan: Plan) -> int:
    """Delete the removed messages, write the changed rows, then move the watermark; returns rows written.

    A Redis failure raises ServiceUnavailable naming the server; the watermark then stays where it was,
    so the next sync covers the same changes again.
    """
    from sms_assets.defs.feature_store import online_keys

    online_keys.delete(redis_url, store.project, plan.removed)
    written = 0
    if plan.through is not None:
        query = sql.SQL("SELECT {} FROM {} WHERE computed_at <= %s").format(
            sql.SQL(", ").join(map(sql.Identifier, SYNCED_COLUMNS)), sql.Identifier(FEATURE_TABLE)
        )
        params: tuple = (plan.through,)
        if plan.since is not None:
            query += sql.SQL(" AND computed_at > %s")
            params += (plan.since,)
        with conn.cursor(name="online_sync") as cursor:
            cursor.execute(query, params)
            while chunk := cursor.fetchmany(SYNC_CHUNK_ROWS):
                _write(store, redis_url, pd.DataFrame(chunk, columns=SYNCED_COLUMNS))
                written += len(chunk)
        write_watermark(redis_url, store.project, plan.through)
        # Redis has taken these removals in; the ones after `through` wait for the next sync.
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE removed_at <= %s").format(sql.Identifier(REMOVED_TABLE)),
            (plan.through,),
        )
        conn.commit()
    return written


def _write(store: FeatureStore, redis_url: str, frame: pd.DataFrame) -> None:
    try:
        store.write_to_online_store(FEATURE_VIEW, df=frame)
    except REDIS_ERRORS as exc:
        raise ServiceUnavailable(
            f"Redis at {redact(redis_url)} failed while writing {len(frame)} rows of {FEATURE_VIEW}: {exc}"
        ) from exc
