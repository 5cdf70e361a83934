"""`sms-assets run`'s two doors: in process, or through the run queue of `sms-assets dev`'s daemon.

`dg launch` runs the graph in process, and the run queue does not wait for it. So with no daemon on the
instance, `sms-assets run` holds the instance's lock from its check of the pools until its run's record
holds them (no `sms-assets dev`, and so no daemon, can start in between). With `sms-assets dev` running,
`dagster job launch` puts the run in its daemon's queue instead, which starts it once no run holds its
pools, as it does its sensors' runs. The terminal follows either the same way.
"""

from __future__ import annotations

import json
import shlex
import signal
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from sms_assets import launch, local_instance, processes
from sms_core import settings

if TYPE_CHECKING:
    import dagster as dg

SUBMIT = ["dagster", "job", "launch", "-j", launch.ASSET_JOB]
ENDED = {"SUCCESS", "FAILURE", "CANCELED"}
CANCEL_WAIT_S = 120  # a cancelled run's steps are stopped, then it is recorded as cancelled


def whole_graph(
    env: Mapping[str, str], home: Path, log: Path, bin_of: Callable[[str], str], say: Callable[[str], None]
) -> launch.Outcome:
    """The whole graph on the instance at `home`, through the door the instance's state leaves open."""
    with ExitStack() as starting:
        try:
            starting.enter_context(local_instance.holding(home, "run"))
        except local_instance.Held as held:
            if held.role != "dev":
                raise
            say(f"$ {shlex.join(SUBMIT)}   (into the run queue of sms-assets dev, pid {held.pid})")
            workspace = settings.PROJECT_ROOT / "workspace.yaml"
            alive = partial(local_instance.dev_alive, home)
            return submit(env, home, workspace, log, bin_of("dagster"), say, alive)
        local_instance.refuse_if_pools_held(home)
        say(f"$ {shlex.join(launch.LAUNCH)}   (its output: {log})")
        return launch.launch(env, home, log, bin_of("dg"), say, started=starting.close)


def submit(
    env: Mapping[str, str],
    home: Path,
    workspace: Path,
    log: Path,
    dagster_bin: str,
    say: Callable[[str], None],
    daemon_alive: Callable[[], bool],
) -> launch.Outcome:
    """Put the whole graph in the run queue of the daemon on `home` with `dagster job launch`, then
    follow the run to its end. A signal (or the daemon's end while it still waits) cancels it: a queued
    run never starts, a started one has its steps stopped."""
    import dagster as dg

    log.parent.mkdir(parents=True, exist_ok=True)
    run_id = str(uuid.uuid4())
    command = [dagster_bin, *SUBMIT[1:], "-w", str(workspace), "--run-id", run_id]
    command += ["--config-json", json.dumps(launch.QUIET)]
    with (
        dg.DagsterInstance.from_config(str(home)) as instance,
        log.open("w") as output,
        _signals_interrupt(),
    ):
        follow = launch.Follower(instance, datetime.now(UTC), say, run_id)
        try:
            code = processes.run_in_own_group(command, env, output=output)
            follow()
            if code < 0:
                raise KeyboardInterrupt
            if follow.outcome.status == "unknown":
                follow.outcome.errors.append(f"`dagster job launch` queued no run (exit {code}); see {log}")
                return follow.outcome
            say(f"  queued: run {run_id} starts once no run holds its pools (see sms-assets dev's Runs page)")
            while follow.outcome.status not in ENDED:
                if follow.outcome.status == "QUEUED" and not daemon_alive():
                    follow.outcome.errors.append("sms-assets dev stopped before the run left the queue")
                    raise KeyboardInterrupt
                time.sleep(launch.POLL_S)
                follow()
        except KeyboardInterrupt:
            if not follow.outcome.errors:
                follow.outcome.interrupted = True
            _cancel(instance, follow)
    return follow.outcome


def _cancel(instance: dg.DagsterInstance, follow: launch.Follower) -> None:
    if follow.outcome.run_id is None or instance.get_run_by_id(follow.outcome.run_id) is None:
        return
    instance.run_coordinator.cancel_run(follow.outcome.run_id)
    deadline = time.monotonic() + CANCEL_WAIT_S
    while time.monotonic() < deadline:
        follow()
        if follow.outcome.status in ENDED:
            return
        time.sleep(launch.POLL_S)


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP interrupt this process as Ctrl-C does, so each cancels the run it queued."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
