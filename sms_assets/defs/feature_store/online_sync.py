"""Redis kept in step with the offline feature table, one window at a time, from a watermark.

The watermark is the newest event_timestamp that Redis holds for the feature view. It is stored in Redis
itself, next to the rows it describes: if Redis loses its data, it loses the watermark too, and the next
sync starts from the beginning instead of trusting a record kept elsewhere. It moves only after Feast
has written the whole window, so a run that fails half-way is simply done again.

Each window reaches back `overlap` before the watermark, for rows that land after newer ones (a batch
delayed on its way). feature_store.yaml sets `skip_dedup: true`, so Feast writes every row of the window
without first reading what Redis holds: the overlap's rows are written again on every sync (the same
values, so Redis ends the same), one round trip per batch instead of two. Rows later than the overlap
are picked up by the periodic full reconciliation.

Feast's own `materialize_incremental` does not fit here: its window ends at the wall clock, so a row
that reaches the offline table after its event time has passed is skipped for good, and with ttl 0 its
first window starts a year back, which would skip the 2024 initial load.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
import redis
from feast import FeatureStore
from psycopg import sql

from sms_assets.lib.feast_config import FEATURE_VIEW
from sms_assets.lib.urls import ServiceUnavailable, redact, redis_client, redis_unavailable

DEFAULT_OVERLAP = timedelta(hours=1)


@dataclass(frozen=True)
class Window:
    """The event-time range a sync materializes, and how many offline rows fall in it."""

    start: datetime
    end: datetime
    rows: int
    full: bool


def watermark_key(project: str) -> str:
    # Ends with the project name, like Feast's own keys, so a project's keys can be found together.
    return f"sms_assets:online_watermark:{FEATURE_VIEW}:{project}"


def read_watermark(redis_url: str, project: str) -> datetime | None:
    """The newest event_timestamp Redis holds for the feature view; None when it holds nothing."""
    client = redis_client(redis_url)
    try:
        value = client.get(watermark_key(project))
    except redis.RedisError as exc:
        raise redis_unavailable(redis_url, exc) from exc
    finally:
        client.close()
    return datetime.fromisoformat(value.decode()) if isinstance(value, bytes) else None


def write_watermark(redis_url: str, project: str, value: datetime) -> None:
    client = redis_client(redis_url)
    try:
        client.set(watermark_key(project), value.isoformat())
    except redis.RedisError as exc:
        raise redis_unavailable(redis_url, exc) from exc
    finally:
        client.close()


def offline_range(conn: psycopg.Connection, table: str) -> tuple[datetime, datetime] | None:
    """The oldest and newest event_timestamp in the offline table; None when it is empty."""
    row = conn.execute(
        sql.SQL("SELECT min(event_timestamp), max(event_timestamp) FROM {}").format(sql.Identifier(table))
    ).fetchone()
    if not row or row[0] is None:
        return None
    return row[0], row[1]


def plan_window(
    conn: psycopg.Connection,
    table: str,
    watermark: datetime | None,
    overlap: timedelta = DEFAULT_OVERLAP,
) -> Window | None:
    """The window that brings Redis up to date: everything without a watermark, else from it (less
    `overlap`) to the newest offline row. None when the offline table is empty."""
    bounds = offline_range(conn, table)
    if bounds is None:
        return None
    oldest, newest = bounds
    start = oldest if watermark is None else min(max(oldest, watermark - overlap), newest)
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE event_timestamp BETWEEN %s AND %s").format(
            sql.Identifier(table)
        ),
        (start, newest),
    ).fetchone()
    return Window(start, newest, int(row[0]) if row else 0, full=start == oldest)


def sync(store: FeatureStore, redis_url: str, window: Window, watermark: datetime | None) -> datetime:
    """Materialize the window into Redis, then advance the watermark; returns the new watermark.

    A Redis failure while writing raises ServiceUnavailable naming the server and the window; the
    watermark then stays where it was, so the next sync covers the same rows again.
    """
    try:
        store.materialize(window.start, window.end, feature_views=[FEATURE_VIEW])
    except redis.RedisError as exc:
        raise ServiceUnavailable(
            f"Redis at {redact(redis_url)} failed while materializing {FEATURE_VIEW} "
            f"[{window.start.isoformat()}, {window.end.isoformat()}]: {exc}"
        ) from exc
    newest = window.end if watermark is None else max(watermark, window.end)
    write_watermark(redis_url, store.project, newest)
    return newest
