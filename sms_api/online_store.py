"""What the API asks the offline table when Redis holds no features for an id, and whether Redis holds
every message it must (what /ready reports).

An id Redis lacks is looked up in the feature table (by primary key): a message that exists there is
a store that lost keys, a 503 that a sync repairs; only an id the table does not hold is unknown, a
404. The lookups share one connection per server process, opened on first use and dropped after any
failure (or a request that gave up on it mid-query), so a flood of unknown ids never opens more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime

import psycopg
from psycopg import sql

from sms_core import online_keys, urls
from sms_core.online_store import EXISTING_IDS, Holding, must_hold_query, parse_watermark, watermark_key
from sms_core.prediction import OnlineStoreIncomplete, UnknownMessageError

# /ready counts the project's keys (a SCAN) and the rows Redis must hold at most this often.
HOLDING_TTL_S = 5.0


class OfflineTable:
    """The feature table, asked on one connection of this process's own."""

    def __init__(self, postgres_url: str):
        self.postgres_url = postgres_url
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()

    async def _query(self, query: sql.Composed, params: Sequence) -> list[tuple]:
        async with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        urls.libpq_conninfo(self.postgres_url),
                        connect_timeout=urls.CONNECT_TIMEOUT_S,
                        autocommit=True,
                    )
                cursor = await self._conn.execute(query, params)
                return await cursor.fetchall()
            except BaseException:
                # Failed or abandoned half-way (a deadline): the connection's state is unknown.
                await self.close()
                raise

    async def existing(self, message_ids: Sequence[int]) -> list[int]:
        """Which of the ids the feature table holds."""
        return [int(i) for (i,) in await self._query(EXISTING_IDS, (list(message_ids),))]

    async def unknown_or_lost(self, message_ids: Sequence[int]) -> LookupError:
        """What to answer for ids Redis holds no features for: OnlineStoreIncomplete when the table
        holds any of them (Redis lost them, or a sync is on its way), else UnknownMessageError."""
        existing = await self.existing(message_ids)
        if existing:
            return OnlineStoreIncomplete(existing, sorted(set(message_ids) - set(existing)))
        return UnknownMessageError(message_ids, offline_checked=True)

    async def must_hold(self, watermark: datetime | None) -> int:
        query, params = must_hold_query(watermark)
        [(count,)] = await self._query(query, params)
        return int(count)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            await conn.close()


class HoldingCheck:
    """Whether Redis holds every message it must, counted at most every HOLDING_TTL_S seconds."""

    def __init__(self, redis_url: str, project: str, offline: OfflineTable, timeout_s: float):
        self.redis_url = redis_url
        self.project = project
        self.offline = offline
        self.timeout_s = timeout_s
        self._last: tuple[float, Holding] | None = None

    async def holding(self) -> Holding:
        last = self._last
        if last is not None and time.monotonic() - last[0] < HOLDING_TTL_S:
            return last[1]
        client = urls.async_redis_client(self.redis_url, self.timeout_s)
        try:
            raw = await client.get(watermark_key(self.project))
            keys, exact = await online_keys.count_held_async(client, self.project)
        finally:
            await client.aclose()
        watermark = parse_watermark(raw)
        holding = Holding.of(keys, exact, await self.offline.must_hold(watermark), watermark)
        self._last = (time.monotonic(), holding)
        return holding
