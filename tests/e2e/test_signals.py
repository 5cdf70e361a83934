"""SIGTERM or SIGINT to `sms-assets dev`, `serve` or `run` stops everything the command started, a run
in flight included, and frees its port; a second `dev` on the same Dagster instance is refused, and
`run` beside `dev` waits in its run queue, cancelled by a signal."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psutil
import pytest
from dagster_graphql import DagsterGraphQLClient

from sms_assets import local_instance
from sms_core.embedded import free_port, wait_until
from tests.conftest import PROJECT_ROOT, Services, new_slice
from tests.processes import (
    SMS_ASSETS,
    STOP_TIMEOUT_S,
    instance_of,
    left_after,
    port_is_free,
    project_env,
    started,
    stopped,
    table_locked,
    tree,
    wait_for_http,
    wait_for_step,
)

pytestmark = pytest.mark.e2e

# The processes of `dagster dev`, by what their command lines hold.
DAGSTER_DEV_PROCESSES = (
    "dagster dev",
    "dagster_webserver",
    "dagster._daemon run",
    "code-server start",
    "api grpc",
)
STOPPED = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


@pytest.fixture
def fresh_slice(server_urls: tuple[str, str], tmp_path: Path) -> Iterator[Services]:
    with new_slice(server_urls, tmp_path / "state") as slice_:
        yield slice_


def status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    run = instance.get_run_by_id(run_id)
    assert run is not None, run_id
    return run.status


def command_lines(processes: list[psutil.Process]) -> list[str]:
    lines = []
    for process in processes:
        try:
            lines.append(" ".join(process.cmdline()))
        except psutil.Error:
            continue
    return lines


def run_worker_started(processes: list[psutil.Process]) -> bool:
    """The code server (`dagster api grpc`) starts each run in a child process of its own."""
    for process in processes:
        try:
            if "api grpc" in " ".join(process.cmdline()) and process.children():
                return True
        except psutil.Error:
            continue
    return False


@dataclass
class Dev:
    process: subprocess.Popen[bytes]
    port: int
    run_id: str
    instance: dg.DagsterInstance
    log: Path


@contextmanager
def dev_with_a_run_in_flight(slice_: Services, folder: Path) -> Iterator[Dev]:
    """`sms-assets dev`, with a run of raw_sms_messages launched through its queue and waiting inside
    its step on a table the test keeps locked."""
    port, log = free_port(), folder / "dev.log"
    with (
        table_locked(slice_.postgres_url, "raw_sms_messages"),
        started(["dev", "--port", str(port)], project_env(slice_), log) as process,
    ):
        wait_for_http(process, f"http://127.0.0.1:{port}/server_info", log)
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        run_id = client.submit_job_execution("__ASSET_JOB", asset_selection=["raw_sms_messages"])
        with instance_of(slice_) as instance:
            wait_for_step(instance, "raw_sms_messages", run_id)
            wait_until(lambda: holds(run_worker_started(tree(process.pid)), "a run worker"), timeout_s=60)
            yield Dev(process, port, run_id, instance, log)


def holds(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(f"no {what} yet")


def test_dev_is_one_per_instance_queues_the_graph_behind_a_run_and_stops_everything_on_sigterm(
    fresh_slice: Services, tmp_path: Path
) -> None:
    env = project_env(fresh_slice)
    home = fresh_slice.state_dir / "dagster_home"

    def sms_assets(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SMS_ASSETS, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
        )

    with dev_with_a_run_in_flight(fresh_slice, tmp_path) as dev:
        lines = command_lines(tree(dev.process.pid))
        for name in (*DAGSTER_DEV_PROCESSES, "sms-assets arrivals"):
            assert any(name in line for line in lines), f"no {name} under sms-assets dev: {lines}"

        # A second dev on the same instance would run a second daemon: refused, naming the first.
        second = sms_assets("dev", "--port", str(free_port()))
        assert second.returncode == 1, second.stdout + second.stderr
        assert second.stderr.strip() == (
            f"error: sms-assets dev is already running on the Dagster instance at {home} "
            f"(pid {dev.process.pid}); a second one would run a second daemon on it. Stop that one "
            "first, or set DAGSTER_HOME to another folder"
        )

        # The whole graph goes into the dev daemon's queue, held back while the run in flight holds a
        # pool it needs; a signal cancels it there, before any step of it starts.
        with started(["run"], env, tmp_path / "run.log") as graph:
            queued = wait_for_line(graph, tmp_path / "run.log", "  queued: run ")
            run_id = queued.split()[2]
            assert status(dev.instance, run_id) == dg.DagsterRunStatus.QUEUED
            assert "dagster job launch -j __ASSET_JOB" in (tmp_path / "run.log").read_text()
            graph.send_signal(signal.SIGTERM)
            assert graph.wait(timeout=STOP_TIMEOUT_S) == 130
        assert status(dev.instance, run_id) == dg.DagsterRunStatus.CANCELED
        assert f"error: run {run_id} was interrupted before it finished" in (tmp_path / "run.log").read_text()
        assert not dev.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records

        left = stopped(dev.process, signal.SIGTERM, dev.port, dev.log)
        assert left == [], f"left running after SIGTERM to sms-assets dev: {left}"
        # The run was stopped, not left "started" holding its pool.
        assert status(dev.instance, dev.run_id) in STOPPED

    # Once it has stopped, the instance is free for the next dev: the lock went with its holders.
    with local_instance.holding(home, "dev"):
        pass


def test_dev_waits_for_a_run_that_is_starting_and_a_second_run_is_refused(
    fresh_slice: Services, tmp_path: Path
) -> None:
    """From its check of the pools until its run's record holds them, `sms-assets run` holds the
    instance's lock: no dev (and so no daemon starting a run) comes up in between, and a second
    `run` is refused rather than racing it."""
    env = project_env(fresh_slice)
    home = fresh_slice.state_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    with ExitStack() as starting:
        starting.enter_context(local_instance.holding(home, "run"))
        second = subprocess.run(
            [SMS_ASSETS, "run"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert second.returncode == 1, second.stdout + second.stderr
        assert second.stderr.strip().startswith(
            f"error: sms-assets run (pid {os.getpid()}) is starting a run on the Dagster instance at {home}"
        )
        port, log = free_port(), tmp_path / "dev.log"
        with started(["dev", "--port", str(port)], env, log) as dev:
            wait_for_line(dev, log, f"waiting for sms-assets run (pid {os.getpid()}) to start its run")
            assert port_is_free(port)
            assert not local_instance.dev_alive(home)
            # Once the run's record holds the pools, the lock is let go: the waiting dev comes up.
            starting.close()
            wait_for_http(dev, f"http://127.0.0.1:{port}/server_info", log)
            assert local_instance.dev_alive(home)
            assert stopped(dev, signal.SIGTERM, port, log) == []


def wait_for_line(process: subprocess.Popen[bytes], log: Path, line: str) -> str:
    """The first line of the command's output that starts with `line` (or contains it), once written."""

    def written() -> str:
        found = [text for text in log.read_text().splitlines() if text.startswith(line) or line in text]
        if not found:
            assert process.poll() is None, f"exited before saying {line!r}:\n{log.read_text()}"
            raise AssertionError(f"not yet said: {line!r}")
        return found[0]

    wait_until(written, timeout_s=120, interval_s=0.5)
    return written()


def test_sigint_to_dev_stops_everything_too(fresh_slice: Services, tmp_path: Path) -> None:
    with dev_with_a_run_in_flight(fresh_slice, tmp_path) as dev:
        left = stopped(dev.process, signal.SIGINT, dev.port, dev.log)
        assert left == [], f"left running after SIGINT to sms-assets dev: {left}"
        assert status(dev.instance, dev.run_id) in STOPPED


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_its_workers_and_frees_its_port(
    signum: int, workers: int, fresh_slice: Services, tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "serve.log"
    env = {**project_env(fresh_slice), "SMS_API_WORKERS": str(workers)}
    with started(["serve", "--port", str(port)], env, log) as api:
        wait_for_http(api, f"http://127.0.0.1:{port}/health", log)
        # With more than one, they are the children of uvicorn's supervisor.
        processes = 1 if workers == 1 else 1 + workers
        wait_until(lambda: holds(len(tree(api.pid)) >= processes, "workers"), timeout_s=120)
        assert stopped(api, signum, port, log) == []
        assert "Application shutdown complete" in log.read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_to_run_stops_the_materialization_it_started_and_says_so(
    fresh_slice: Services, tmp_path: Path, signum: signal.Signals
) -> None:
    log = tmp_path / "run.log"
    with (
        table_locked(fresh_slice.postgres_url, "raw_sms_messages"),
        started(["run"], project_env(fresh_slice), log) as command,
        instance_of(fresh_slice) as instance,
    ):
        run_id = wait_for_step(instance, "raw_sms_messages")
        assert any("dg launch" in line for line in command_lines(tree(command.pid)))
        processes = tree(command.pid)
        command.send_signal(signum)
        assert command.wait(timeout=STOP_TIMEOUT_S) == 130
        assert left_after(processes, STOP_TIMEOUT_S) == []
        assert status(instance, run_id) in STOPPED
        assert f"error: run {run_id} was interrupted before it finished" in log.read_text()
        assert "message 42" not in log.read_text()
