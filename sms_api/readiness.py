"""Whether Redis and Postgres answer, asked on the event loop, each within READY_TIMEOUT_S.

`/ready` asks both at once with asyncio clients (redis-py's and psycopg's), so a server that accepts
connections but never answers makes it report "did not answer within 1 s" rather than hold the
request, a worker thread or the other checks; an unreachable one reports its error. Either way the
URL is named with its password masked. Once both answer, it asks whether Redis holds every message it
must (sms_api.online_store), within the same bound.
"""

from __future__ import annotations

import asyncio

import psycopg
import redis

from sms_api.online_store import HoldingCheck
from sms_core import urls
from sms_core.contracts import FEATURE_TABLE

READY_TIMEOUT_S = 1.0
OK = "ok"


def _silent(service: str, url: str) -> str:
    return f"{service} at {urls.redact(url)} did not answer within {READY_TIMEOUT_S:g} s"


async def redis_check(url: str) -> str:
    """The answer of Redis at `url`: "ok", or why it did not answer within READY_TIMEOUT_S."""
    # One attempt, and socket timeouts that bound the client even if the task were never cancelled.
    client = urls.async_redis_client(url, READY_TIMEOUT_S)
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await client.ping()  # pyright: ignore[reportGeneralTypeIssues]  (stubs type the sync client's)
        return OK
    except (TimeoutError, redis.TimeoutError):
        return _silent("Redis", url)
    except urls.REDIS_ERRORS as exc:
        return str(urls.redis_unavailable(url, exc))
    finally:
        await client.aclose()


async def postgres_check(url: str) -> str:
    """The answer of Postgres at `url`: "ok", or why it did not answer within READY_TIMEOUT_S."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            # libpq's connect_timeout has a floor of 2 s; the asyncio timeout is what applies.
            conn = await psycopg.AsyncConnection.connect(
                urls.libpq_conninfo(url), connect_timeout=urls.CONNECT_TIMEOUT_S
            )
            async with conn:
                await conn.execute("select 1")
        return OK
    except TimeoutError:
        return _silent("Postgres", url)
    except psycopg.Error as exc:
        return str(urls.postgres_unavailable(url, exc))


async def online_store_check(check: HoldingCheck) -> str:
    """Whether Redis holds every message it must by its watermark: "ok", or how many it holds of how
    many (a known id it lacks is a 503, which no load balancer should route to); asked within
    READY_TIMEOUT_S."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            holding = await check.holding()
    except TimeoutError:
        return f"could not count the online store's keys within {READY_TIMEOUT_S:g} s"
    except urls.REDIS_ERRORS as exc:
        return str(urls.redis_unavailable(check.redis_url, exc))
    except psycopg.errors.UndefinedTable:
        return f"incomplete: {FEATURE_TABLE} does not exist yet; materialize the asset graph"
    except psycopg.Error as exc:
        return str(urls.postgres_unavailable(check.offline.postgres_url, exc))
    if holding.lost:
        return f"incomplete: {holding.describe()}; a sync is due"
    return OK


async def services_check(redis_url: str, postgres_url: str) -> dict[str, str]:
    """Both checks, run at once: {"redis": ..., "postgres": ...}."""
    redis_answer, postgres_answer = await asyncio.gather(redis_check(redis_url), postgres_check(postgres_url))
    return {"redis": redis_answer, "postgres": postgres_answer}
