"""Postgres going silent mid-step: the step fails within watchdog.SILENT_BOUND_S with one line naming
the server (password masked), nothing is half-written, and the next run succeeds in the same process.

The step reaches the session's real server through a TcpProxy that the test black-holes (connections
stay open, nothing the client sends is forwarded: what a stopped or wedged server looks like, whose
kernel still acknowledges every byte and keepalive); the shared server itself is never stopped.
"""

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import sqlalchemy.exc

from sms_assets.defs.resources import FeastResource, ModelStoreResource, PostgresResource
from sms_assets.defs.training.assets import TRAINING_TABLE, spam_model
from sms_core import bounds, feast_config, urls
from sms_core.postgres import connect, count_rows, table_exists
from sms_core.tables import replace_table
from sms_core.watchdog import SILENT_BOUND_S
from tests.conftest import Services
from tests.integration.test_api_outages import postgres_target, postgres_through
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-pw"  # the test server trusts every client: a password is accepted, and must be masked


def with_password(url: str) -> str:
    return urls.postgres(url).set(password=PASSWORD).render_as_string(hide_password=False)


@pytest.fixture
def proxy(scratch_database: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy(postgres_target(scratch_database)).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def test_a_table_replaced_while_postgres_goes_silent_is_left_whole(
    scratch_database: str, proxy: TcpProxy
) -> None:
    url = with_password(postgres_through(scratch_database, proxy))
    columns = [("message_id", "bigint")]
    with connect(url) as conn:
        replace_table(conn, "silent", columns, [(i,) for i in range(10)], primary_key="message_id")

    def rows() -> Iterator[tuple[int]]:
        for i in range(200_000):
            if i == 100_000:  # mid-COPY, the server stops answering
                proxy.fault(black_hole=True)
            yield (i,)

    started = time.monotonic()
    with pytest.raises(urls.ServiceUnavailable) as error, connect(url) as conn:
        replace_table(conn, "silent", columns, rows(), primary_key="message_id")
    waited = time.monotonic() - started
    assert waited < SILENT_BOUND_S + 2, waited
    print(f"replace_table failed {waited:.1f} s after it began, Postgres silent mid-COPY: {error.value}")
    message = str(error.value)
    assert message.startswith(f"Postgres at {urls.redact(url)} stopped answering: no answer for "), message
    assert "\n" not in message and PASSWORD not in message and "***" in message

    # Nothing half-written: the old table whole, no staging table left; and it works again at once.
    proxy.clear_fault()
    with connect(url) as conn:
        assert count_rows(conn, "silent") == 10
        assert not table_exists(conn, "silent__loading")
        replace_table(conn, "silent", columns, [(i,) for i in range(20)], primary_key="message_id")
        assert count_rows(conn, "silent") == 20


def test_feasts_registry_gives_up_on_a_silent_server_within_the_connect_timeout(
    scratch_database: str, proxy: TcpProxy, server_urls: tuple[str, str]
) -> None:
    # Its SQLAlchemy engine reads the bounds from the registry URL (feast_config.feast_env).
    url = with_password(postgres_through(scratch_database, proxy))
    proxy.fault(black_hole=True)
    started = time.monotonic()
    with pytest.raises(sqlalchemy.exc.OperationalError, match="timeout expired"):
        feast_config.feature_store(url, server_urls[1], "silent_registry").list_entities()
    assert time.monotonic() - started < 2 * bounds.CONNECT_TIMEOUT_S + 2


def test_feasts_registry_gives_up_on_a_server_that_goes_silent(
    scratch_database: str, proxy: TcpProxy, server_urls: tuple[str, str]
) -> None:
    url = with_password(postgres_through(scratch_database, proxy))
    store = feast_config.feature_store(url, server_urls[1], "silent_registry")
    assert store.list_entities() == []
    proxy.fault(black_hole=True)
    started = time.monotonic()
    with pytest.raises(sqlalchemy.exc.OperationalError):
        store.list_entities(allow_cache=False)
    # The watchdog cuts the pooled connection's ping; SQLAlchemy then tries one new connection.
    assert time.monotonic() - started < SILENT_BOUND_S + bounds.CONNECT_TIMEOUT_S + 2


def test_a_long_statement_on_a_server_that_answers_is_not_cut(scratch_database: str) -> None:
    # The watchdog asks the server on a new connection; a server that answers keeps the statement.
    with connect(scratch_database) as conn:
        row = conn.execute("SELECT pg_sleep(%s), 1", (SILENT_BOUND_S + 1,)).fetchone()
    assert row is not None and row[1] == 1


def test_spam_model_fails_within_the_bound_when_postgres_goes_silent_then_trains_on_the_next_run(
    materialized: dg.ExecuteInProcessResult,
    resources: dict[str, Any],
    isolated: Services,
    tmp_path: Path,
) -> None:
    proxy = TcpProxy(postgres_target(isolated.postgres_url)).start()
    try:
        url = with_password(postgres_through(isolated.postgres_url, proxy))
        postgres = PostgresResource(url=url)
        through_proxy = {
            **resources,
            "postgres": postgres,
            "feast": FeastResource(
                postgres=postgres, redis=resources["feast"].redis, project=isolated.feast_project
            ),
            "model_store": ModelStoreResource(root=str(tmp_path / "models")),
        }
        result: dict[str, dg.ExecuteInProcessResult] = {}

        def run() -> None:
            result["run"] = dg.materialize(
                [spam_model],
                resources=through_proxy,
                raise_on_error=False,
                instance=dg.DagsterInstance.ephemeral(),
            )

        step = threading.Thread(target=run)
        step.start()
        # Silent once the step reads the training set: mid-step, after its store and registry are up.
        wait_for_training_set_read(isolated.postgres_url)
        silent_at = time.monotonic()
        proxy.fault(black_hole=True)
        step.join(timeout=SILENT_BOUND_S + 30)
        failed_after = time.monotonic() - silent_at
        assert not step.is_alive(), "the step still waits on a silent Postgres"
        run_result = result["run"]
        assert not run_result.success
        [failure] = [e for e in run_result.all_events if e.event_type_value == "STEP_FAILURE"]
        error = failure.step_failure_data.error  # type: ignore[union-attr]
        while error is not None and error.cls_name != "ServiceUnavailable":
            error = error.cause  # Dagster wraps the step's own error
        assert error is not None, failure.step_failure_data
        line = error.message.strip()
        assert line.startswith(
            f"sms_core.urls.ServiceUnavailable: Postgres at {urls.redact(url)} stopped answering: "
        ), line
        assert "\n" not in line
        # What Dagster's log shows for the step: that line, with nothing below it.
        assert error.cause is None
        message = str(failure.step_failure_data)
        assert PASSWORD not in message
        assert failed_after < SILENT_BOUND_S + 5, failed_after
        print(f"spam_model failed {failed_after:.1f} s after Postgres went silent: {line}")
        assert not list((tmp_path / "models").glob("*/manifest.json"))  # no model half-saved

        # The next run, in the same process, once the server answers again.
        proxy.clear_fault()
        again = dg.materialize([spam_model], resources=through_proxy, instance=dg.DagsterInstance.ephemeral())
        assert again.success
    finally:
        proxy.stop()


def wait_for_training_set_read(admin_url: str, timeout_s: float = 120) -> None:
    """Return once a session of the database has read the training set (any state: its reads are short)."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(urls.libpq_conninfo(admin_url), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND (query LIKE %s OR query LIKE %s)",
                (f"%FROM {TRAINING_TABLE}%", '%FROM "chunks"%'),
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.005)
    raise AssertionError("spam_model never read the training set")
