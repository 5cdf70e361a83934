"""The compose stack, run natively from docker-compose.yml: Dagster's code location, webserver and daemon on
dagster.yaml's Postgres storage, and the prediction API behind its bearer token.

The whole graph is launched the way a person or a script does it against the stack, through the
webserver's GraphQL API; the daemon takes the run off the queue; the API then serves the model the run
promoted, from the shared models volume. See tests/native_stack.py for what is adapted to run without a
container engine (host names, ports, paths; nothing else).
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import psutil
import pytest
from dagster_graphql import DagsterGraphQLClient

from sms_assets.defs.shared import POOLS
from sms_assets.launch import ASSET_JOB
from sms_core import settings
from sms_core.embedded import wait_until
from sms_core.model.store import ModelStore
from tests.conftest import Services, dataset_file, new_slice
from tests.e2e.test_readme_run import ASSETS
from tests.native_stack import NativeService, NativeStack, native_stack
from tests.processes import materialized_assets
from tests.unit.test_compose import PROJECT_SERVICES, ROOT, compose, read_env_file

pytestmark = pytest.mark.e2e

TOKEN = secrets.token_urlsafe(32)
# Generous bounds for a loaded two-core machine: what the test waits for, never what it measures.
HEALTHY_TIMEOUT_S = 300
RUN_TIMEOUT_S = 600
STOP_TIMEOUT_S = 60
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@pytest.fixture
def slice_(server_urls: tuple[str, str], tmp_path: Path) -> Iterator[Services]:
    with new_slice(server_urls, tmp_path / "unused-state") as isolated:
        yield isolated


def test_the_stack_runs_the_graph_it_is_asked_for_and_serves_it_behind_the_token(
    slice_: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The .env a user writes: the documented one, with a token of their own and a local dataset.
    dotenv = {
        **read_env_file(ROOT / ".env.example"),
        settings.API_TOKEN_ENV: TOKEN,
        "SMS_DATASET_FILE": str(dataset_file()),
    }
    stack = native_stack(
        compose(dotenv),
        list(PROJECT_SERVICES),
        tmp_path,
        servers={"postgres": slice_.postgres_url, "redis": slice_.redis_url},
        # The one setting changed beyond hosts, ports and paths: a Feast project of this test's own, so
        # that its Redis keys and registry rows meet no other test's (the database is its own already).
        overrides={settings.PROJECT_ENV: slice_.feast_project},
    )
    services = stack.services
    try:
        stack.start(HEALTHY_TIMEOUT_S)
        for name in ("webserver", "daemon"):
            services[name].wait_healthy(HEALTHY_TIMEOUT_S)
        check_every_pool_has_its_limit_before_any_run(services["daemon"], monkeypatch)
        api = services["api"]
        with httpx.Client(base_url=f"http://127.0.0.1:{api.ports[8000]}", timeout=30) as http:
            check_api_answers_but_is_not_ready_without_a_model(api, http)
            run_id = launch_the_whole_graph(services["webserver"], stack)
            check_the_daemon_ran_it_from_the_queue(services["daemon"], run_id, monkeypatch)
            api.wait_healthy(HEALTHY_TIMEOUT_S)  # the compose health check passes: a model is served
            check_predictions_need_the_token(api, http)
            check_the_workers(api)
    finally:
        left = stack.stop(STOP_TIMEOUT_S)
    assert left == {}, f"SIGTERM left processes running: {left}"
    for service in services.values():
        assert TOKEN not in service.log.read_text(errors="replace"), f"{service.name} logged the token"


def check_api_answers_but_is_not_ready_without_a_model(api: NativeService, http: httpx.Client) -> None:
    def answers() -> None:
        assert api.process and api.process.poll() is None, api.output()
        http.get("/health").raise_for_status()

    wait_until(answers, timeout_s=HEALTHY_TIMEOUT_S, interval_s=1)
    ready = http.get("/ready")
    assert ready.status_code == 503, ready.text
    assert ready.json()["checks"]["model"].startswith("no served model in ")
    with pytest.raises(subprocess.CalledProcessError):
        api.check_health()


def launch_the_whole_graph(webserver: NativeService, stack: NativeStack) -> str:
    """Every asset and check, submitted through the webserver's GraphQL API; returns once the run ended."""
    client = DagsterGraphQLClient("127.0.0.1", port_number=webserver.ports[3000])
    run_id = client.submit_job_execution(ASSET_JOB)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (status := client.get_run_status(run_id)) not in FINISHED:
        assert time.monotonic() < deadline, f"run {run_id} is still {status} after {RUN_TIMEOUT_S} s"
        for service in stack.started:
            assert service.process and service.process.poll() is None, f"{service.name}:\n{service.output()}"
        time.sleep(2)
    assert status == dg.DagsterRunStatus.SUCCESS, stack.services["code-location"].output(20_000)
    return run_id


def check_every_pool_has_its_limit_before_any_run(
    daemon: NativeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a brand-new database, the daemon's first round would otherwise let two queued runs that share a
    pool start together: the run queue limits only a pool it has seen."""
    monkeypatch.setenv("DAGSTER_HOME", daemon.env["DAGSTER_HOME"])
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", daemon.env["DAGSTER_POSTGRES_URL"])
    instance = dg.DagsterInstance.get()
    try:
        assert instance.get_runs() == []
        limits = {pool: instance.event_log_storage.get_concurrency_info(pool).slot_count for pool in POOLS}
        assert limits == dict.fromkeys(POOLS, 1), limits
    finally:
        instance.dispose()


def check_the_daemon_ran_it_from_the_queue(
    daemon: NativeService, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's history, read from the Postgres storage dagster.yaml names, as the daemon wrote it."""
    monkeypatch.setenv("DAGSTER_HOME", daemon.env["DAGSTER_HOME"])
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", daemon.env["DAGSTER_POSTGRES_URL"])
    instance = dg.DagsterInstance.get()
    try:
        events = [log.dagster_event for log in instance.all_logs(run_id) if log.dagster_event]
        types = [event.event_type for event in events]
        # Queued by the webserver (QueuedRunCoordinator), then launched by the daemon, then run.
        queued, launched, succeeded = (
            types.index(event_type)
            for event_type in (
                dg.DagsterEventType.RUN_ENQUEUED,
                dg.DagsterEventType.RUN_STARTING,
                dg.DagsterEventType.RUN_SUCCESS,
            )
        )
        assert queued < launched < succeeded
        assert set(ASSETS) <= materialized_assets(events)
    finally:
        instance.dispose()


def check_predictions_need_the_token(api: NativeService, http: httpx.Client) -> None:
    served = ModelStore(Path(api.env[settings.MODEL_DIR_ENV])).served_version()
    assert served
    auth = {"Authorization": f"Bearer {TOKEN}"}

    known = http.post("/predict", json={"message_id": 42}, headers=auth)
    assert known.status_code == 200, known.text
    assert (known.json()["message_id"], known.json()["model_version"]) == (42, served)
    batch = http.post("/predict/batch", json={"texts": ["WINNER!! Call 09061701461 now"]}, headers=auth)
    assert batch.status_code == 200, batch.text

    missing = http.post("/predict", json={"message_id": 42})
    assert missing.status_code == 401
    assert missing.json()["error"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = http.post("/predict", json={"message_id": 42}, headers={"Authorization": f"Bearer {TOKEN[::-1]}"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert http.get("/ready").status_code == 200


def check_the_workers(api: NativeService) -> None:
    """SMS_API_WORKERS server processes, as uvicorn's supervisor spawns them."""
    assert api.process
    children = psutil.Process(api.process.pid).children()
    workers = [child for child in children if "spawn_main" in " ".join(child.cmdline())]
    assert len(workers) == settings.load(api.env).api_workers == 2
