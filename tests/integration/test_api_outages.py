"""Redis or Postgres going away or going silent: the API answers 503 or 504 naming it, then serves again.

The service reaches the session's real servers through a TcpProxy, which the tests cut, slow down or
black-hole, and restore; the shared servers themselves are never stopped.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import cast

import dagster as dg
import httpx
import pytest

from sms_api.app import create_app
from sms_api.readiness import READY_TIMEOUT_S
from sms_core import online_keys, urls
from sms_core.embedded import wait_until
from tests.conftest import Services
from tests.integration.conftest import live_server, service_config
from tests.tcp_proxy import Target, TcpProxy

pytestmark = pytest.mark.integration

KNOWN = {"message_id": 42}
NEW = {"text": "are we still on for tonight?"}


def postgres_target(url: str) -> Target:
    parsed = urls.postgres(url)
    # A unix-socket URL carries its directory as ?host=/path; the embedded server listens on one only.
    host = parsed.host or str(parsed.query.get("host") or "localhost")
    port = parsed.port or 5432
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)


def postgres_through(url: str, proxy: TcpProxy) -> str:
    proxied = urls.postgres(url).difference_update_query(["host"]).set(host="127.0.0.1", port=proxy.port)
    return proxied.render_as_string(hide_password=False)


def redis_target(url: str) -> Target:
    parsed = urls.redis_kwargs(url)
    return (parsed["host"], parsed["port"])


def redis_through(url: str, proxy: TcpProxy) -> str:
    proxied = urls.parse(url, "SMS_REDIS_URL").set(host="127.0.0.1", port=proxy.port)
    return proxied.render_as_string(hide_password=False)


def test_redis_outage_is_503_with_the_reason_then_recovers(
    materialized: dg.ExecuteInProcessResult, isolated: Services
) -> None:
    proxy = TcpProxy(redis_target(isolated.redis_url)).start()
    redis_url = redis_through(isolated.redis_url, proxy)
    try:
        with live_server(create_app(service_config(isolated, redis_url=redis_url))) as api:
            assert api.post("/predict", json=KNOWN).status_code == 200
            with proxy.down():
                response = api.post("/predict", json=KNOWN)
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "service_unavailable"
                assert f"Redis at {urls.redact(redis_url)}" in response.json()["detail"]
                assert "Traceback" not in response.text
                ready = api.get("/ready")
                assert ready.status_code == 503
                assert "unreachable" in ready.json()["checks"]["redis"]
                assert ready.json()["checks"]["postgres"] == "ok"
                assert api.get("/health").status_code == 200
                # A new message's features come from its text: scoring it needs no Redis.
                assert api.post("/predict", json=NEW).status_code == 200
            assert api.post("/predict", json=KNOWN).status_code == 200
            assert api.get("/ready").status_code == 200
    finally:
        proxy.stop()


def test_postgres_down_at_start_is_503_then_serves_once_it_is_back(
    materialized: dg.ExecuteInProcessResult, isolated: Services
) -> None:
    proxy = TcpProxy(postgres_target(isolated.postgres_url))  # not started: Postgres is down
    postgres_url = postgres_through(isolated.postgres_url, proxy)
    try:
        with live_server(create_app(service_config(isolated, postgres_url=postgres_url))) as api:
            assert api.get("/health").status_code == 200
            ready = api.get("/ready")
            assert ready.status_code == 503
            assert "Postgres at postgresql" in ready.json()["checks"]["postgres"]
            for body in (KNOWN, NEW):
                response = api.post("/predict", json=body)
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "service_unavailable"
                assert "Postgres at postgresql" in response.json()["detail"]
                assert f":{proxy.port}/" in response.json()["detail"]
            proxy.start()
            assert api.post("/predict", json=KNOWN).status_code == 200
            assert api.post("/predict", json=NEW).status_code == 200
            assert api.get("/ready").status_code == 200
    finally:
        proxy.stop()


def test_postgres_outage_after_start_keeps_predictions_on_the_cached_registry(
    materialized: dg.ExecuteInProcessResult, isolated: Services
) -> None:
    proxy = TcpProxy(postgres_target(isolated.postgres_url)).start()
    postgres_url = postgres_through(isolated.postgres_url, proxy)
    try:
        with live_server(create_app(service_config(isolated, postgres_url=postgres_url))) as api:
            assert api.get("/ready").status_code == 200
            with proxy.down():
                ready = api.get("/ready")
                assert ready.status_code == 503
                assert "Postgres at postgresql" in ready.json()["checks"]["postgres"]
                # Predictions need Redis and the registry, which the service holds in memory.
                assert api.post("/predict", json=KNOWN).status_code == 200
                assert api.post("/predict", json=NEW).status_code == 200
            assert api.get("/ready").status_code == 200
    finally:
        proxy.stop()


# --- a Redis that is slow or never answers: 504 within the deadline, the loop free meanwhile ---------

DEADLINE_S = 2.0
CLIENTS = 20
# A generous bound on each answer: the deadline, plus room for 20 answers on a busy 2-core machine.
# Without the deadline a request would wait for Feast's Redis client: a 5 s socket timeout, retried.
ANSWER_BOUND_S = DEADLINE_S + 8


@dataclass
class Storm:
    predictions: list[tuple[httpx.Response, float]]  # each answer and how long it took
    health: httpx.Response
    pending_at_health: int  # predictions still unanswered when /health had answered


async def storm(base_url: str, proxy: TcpProxy) -> Storm:
    """CLIENTS concurrent predictions; once they wait on Redis, /health; then every answer."""
    limits = httpx.Limits(max_connections=CLIENTS + 1)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:

        async def timed() -> tuple[httpx.Response, float]:
            started = time.monotonic()
            response = await client.post("/predict", json=KNOWN)
            return response, time.monotonic() - started

        tasks = [asyncio.create_task(timed()) for _ in range(CLIENTS)]
        # Until a read waits on Redis (at most 30 s): the others are gathered behind it.
        for _ in range(600):
            if proxy.held_connections() >= 1 or all(task.done() for task in tasks):
                break
            await asyncio.sleep(0.05)
        health = await client.get("/health")
        pending = sum(not task.done() for task in tasks)
        return Storm(await asyncio.gather(*tasks), health, pending)


@pytest.mark.parametrize("fault", ["slow", "black_hole"])
def test_redis_that_does_not_answer_is_504_within_the_deadline_while_health_answers(
    materialized: dg.ExecuteInProcessResult, isolated: Services, fault: str
) -> None:
    proxy = TcpProxy(redis_target(isolated.redis_url)).start()
    redis_url = redis_through(isolated.redis_url, proxy)
    config = service_config(isolated, redis_url=redis_url, deadline_s=DEADLINE_S)
    try:
        with live_server(create_app(config)) as api:
            assert api.post("/predict", json=KNOWN).status_code == 200
            # Slow: every answer from Redis arrives long after the deadline.
            with proxy.delayed(DEADLINE_S * 5) if fault == "slow" else proxy.black_hole():
                answers = asyncio.run(storm(str(api.base_url), proxy))
                ready = api.get("/ready")
                text = api.post("/predict", json=NEW)
            # The predictions waited on Redis, gathered into a read or two (sms_api/coalesce.py), not
            # one connection each.
            assert 1 <= proxy.held_connections() < CLIENTS
            assert answers.health.status_code == 200
            # /health answered while every prediction still waited on Redis: nothing blocked the loop.
            assert answers.pending_at_health == CLIENTS
            for response, seconds in answers.predictions:
                assert response.status_code == 504, response.text
                body = response.json()
                assert body["error"] == "deadline_exceeded"
                assert body["detail"] == (
                    f"Redis at {urls.redact(redis_url)} did not answer within the request deadline "
                    f"of {DEADLINE_S:g} s"
                )
                assert seconds < ANSWER_BOUND_S
            assert ready.status_code == 503
            assert ready.json()["checks"]["redis"] == (
                f"Redis at {urls.redact(redis_url)} did not answer within {READY_TIMEOUT_S:g} s"
            )
            assert ready.json()["checks"]["postgres"] == "ok"
            # A new message's features come from its text: scoring it needs no Redis.
            assert text.status_code == 200, text.text
            # The fault is gone: the same server serves again, without a restart.
            for _ in range(3):
                assert api.post("/predict", json=KNOWN).status_code == 200
            assert api.post("/predict/batch", json={"message_ids": [1, 2, 3]}).status_code == 200
            assert api.get("/ready").status_code == 200
    finally:
        proxy.stop()


def test_postgres_that_never_answers_at_start_is_504_then_serves_once_it_answers(
    materialized: dg.ExecuteInProcessResult, isolated: Services
) -> None:
    proxy = TcpProxy(postgres_target(isolated.postgres_url)).start()
    postgres_url = postgres_through(isolated.postgres_url, proxy)
    config = service_config(isolated, postgres_url=postgres_url, deadline_s=DEADLINE_S)
    silent = f"Postgres at {urls.redact(postgres_url)} did not answer within {READY_TIMEOUT_S:g} s"

    def serves() -> None:
        response = api.post("/predict", json=KNOWN)
        if response.status_code != 200:
            raise AssertionError(response.text)

    proxy.fault(black_hole=True)
    try:
        # The start-up warm-up gives up at the deadline: the server starts, and answers.
        with live_server(create_app(config)) as api:
            assert api.get("/health").status_code == 200
            for body in (KNOWN, NEW):
                # 504 at the deadline, or 503 when the store's build gave up first (its connect timeout).
                response = api.post("/predict", json=body)
                assert response.status_code in (503, 504), response.text
                assert response.json()["error"] in ("deadline_exceeded", "service_unavailable")
                assert response.json()["detail"].startswith("Postgres at "), response.text
                assert f":{proxy.port}/" in response.json()["detail"]
            ready = api.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["checks"]["postgres"] == silent
            assert ready.json()["checks"]["redis"] == "ok"
            proxy.clear_fault()
            # The feature store is built once Postgres answers (the build the silence held gives up
            # at its connect timeout, 5 s, first); the server is not restarted.
            wait_until(serves, timeout_s=60, interval_s=0.5)
            assert api.post("/predict", json=NEW).status_code == 200
            assert api.get("/ready").status_code == 200
    finally:
        proxy.stop()


def test_a_key_feast_cannot_read_is_a_500_naming_redis_not_an_outage(
    materialized: dg.ExecuteInProcessResult, isolated: Services
) -> None:
    """A value of another type under a message's key (WRONGTYPE) is an answer from Redis, not its absence:
    a 500 that says so, never a 503 inviting retries."""
    key = online_keys.entity_key(isolated.feast_project, 7)
    client = urls.redis_client(isolated.redis_url)
    held = cast(dict[bytes, bytes], client.hgetall(cast(str, key)))
    try:
        client.delete(key)
        client.set(key, "not a hash")
        with live_server(create_app(service_config(isolated))) as api:
            for request in ({"message_id": 7}, {"message_ids": [6, 7, 8]}):
                path = "/predict" if "message_id" in request else "/predict/batch"
                answer = api.post(path, json=request)
                assert answer.status_code == 500, answer.text
                assert answer.json()["error"] == "online_store_error"
                assert "WRONGTYPE" in answer.json()["detail"], answer.text
            assert api.post("/predict", json=KNOWN).status_code == 200  # the other keys are read as ever
            assert api.post("/predict", json=NEW).status_code == 200
    finally:
        client.delete(key)
        client.hset(cast(str, key), mapping=cast(dict[str, bytes], held))
        client.close()
