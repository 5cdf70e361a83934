"""Redis or Postgres going away: the API answers 503 with the reason, then serves again when it is back.

The service reaches the session's real servers through a TcpProxy, which the tests cut and restore;
the shared servers themselves are never stopped.
"""

import dagster as dg
import pytest

from sms_api.app import create_app
from sms_assets.lib import urls
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
