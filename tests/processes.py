"""Commands a test starts as the README does, what each of them started, and whether all of it is gone.

The process tree is read with psutil while the command runs: once a parent exits, its children are
re-parented and no longer show up under it, so what is checked afterwards is that snapshot, pid by pid
(a pid is only the same process while its creation time is the same).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import httpx
import psutil
import psycopg
from psycopg import sql

from sms_core import urls
from sms_core.embedded import wait_until
from tests.conftest import PROJECT_ROOT, Services

SMS_ASSETS = str(PROJECT_ROOT / ".venv" / "bin" / "sms-assets")
# Generous: how fast a command stops is not what the tests check, only that it does.
STOP_TIMEOUT_S = 180


def project_env(slice_: Services) -> dict[str, str]:
    """This machine's environment without its SMS_* settings or DAGSTER_HOME, pointed at the slice:
    the commands use the Dagster instance they create under the slice's state folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMS_") and k != "DAGSTER_HOME"}
    return {**env, **slice_.env()}


@contextmanager
def instance_of(slice_: Services) -> Iterator[dg.DagsterInstance]:
    """The Dagster instance the commands create under the slice's state folder, once they have."""
    home = slice_.state_dir / "dagster_home"
    wait_until(lambda: (home / "dagster.yaml").read_text(), timeout_s=300)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def wait_for_step(
    instance: dg.DagsterInstance,
    step: str,
    run_id: str | None = None,
    event: dg.DagsterEventType = dg.DagsterEventType.STEP_START,
) -> str:
    """Until a run (this one, or any) has logged `event` for `step`; returns the run's id."""
    found: list[str] = []

    def logged() -> None:
        for run in instance.get_runs(filters=dg.RunsFilter(run_ids=[run_id] if run_id else None)):
            if any(e.step_key == step for e in instance.all_logs(run.run_id, of_type=event)):
                found.append(run.run_id)
                return
        raise AssertionError(f"no run has logged {event.value} for {step}")

    wait_until(logged, timeout_s=300, interval_s=1)
    return found[0]


def materialized_assets(events: Sequence[dg.DagsterEvent]) -> set[str]:
    """The assets a run's events say were materialized."""
    return {
        event.asset_key.to_user_string()
        for event in events
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION and event.asset_key
    }


def tree(pid: int) -> list[psutil.Process]:
    """The process and every process it started that is still running under it."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline())[:160]}"
    except psutil.Error:
        return f"{process.pid} (gone while being described)"


def running(processes: Sequence[psutil.Process]) -> list[psutil.Process]:
    """Those still running (`is_running` compares creation times, so a reused pid does not count)."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            continue
    return alive


def left_after(processes: Sequence[psutil.Process], timeout_s: float) -> list[str]:
    """Waits up to `timeout_s` for every process to end; describes those still running then."""
    deadline = time.monotonic() + timeout_s
    while running(processes) and time.monotonic() < deadline:
        time.sleep(0.5)
    return [describe(process) for process in running(processes)]


def stopped(process: subprocess.Popen[bytes], signum: int, port: int, log: Path) -> list[str]:
    """Sends `signum` to the command alone, then waits for it and for everything it had started;
    returns what is still running, after checking that its port is free."""
    processes = tree(process.pid)
    process.send_signal(signum)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        output = log.read_text()[-3000:]
        raise AssertionError(f"still running {STOP_TIMEOUT_S} s after {signum!r}:\n{output}") from exc
    left = left_after(processes, STOP_TIMEOUT_S)
    assert port_is_free(port), f"port {port} is still bound after {signum!r}"
    return left


def kill_all(processes: Sequence[psutil.Process]) -> None:
    """Clean-up after a failed test: the processes it started must not outlive it."""
    for process in running(processes):
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextmanager
def started(args: Sequence[str], env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`sms-assets <args>` from the project folder, its output in `log`; whatever is still running of
    it at the end is killed (a passing test has stopped it already)."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [SMS_ASSETS, *args], cwd=PROJECT_ROOT, env=dict(env), stdout=output, stderr=subprocess.STDOUT
        )
    seen = tree(process.pid)
    try:
        yield process
    finally:
        if process.poll() is None:
            seen += tree(process.pid)
        kill_all(seen)
        process.wait()


def wait_for_http(process: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float = 300) -> None:
    """Until `url` answers 200; fails naming the command's output if the command exits first."""

    def answers_or_exited() -> None:
        if process.poll() is None:
            httpx.get(url, timeout=5).raise_for_status()

    try:
        wait_until(answers_or_exited, timeout_s=timeout_s, interval_s=1)
    except httpx.HTTPError as exc:
        raise AssertionError(
            f"{url} did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}"
        ) from exc
    assert process.poll() is None, f"exited with {process.returncode}:\n{log.read_text()[-3000:]}"


@contextmanager
def table_locked(postgres_url: str, table: str) -> Iterator[None]:
    """`table` (created if missing) locked against every other session until the block ends: a run
    that touches it waits inside its step, in flight for as long as the test needs."""
    with psycopg.connect(urls.libpq_conninfo(postgres_url)) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (message_id bigint)").format(sql.Identifier(table))
        )
        conn.commit()
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table)))
        try:
            yield
        finally:
            conn.rollback()
