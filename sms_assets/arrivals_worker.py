"""`sms-assets arrivals`: the arrivals worker, which carries each batch from the landing folder to Redis
within seconds of its landing.

arrivals_sensor's way costs some 20 s a batch, most of it starting up: a tick at most every 5 s, a
queued run, and a new process that imports Dagster, the code location and Feast before its first step.
The worker starts up once: it imports what the steps import (the executor's preload list, Feast among
them), then watches the folder and runs arrivals_job in this process, with the config, the selection
and the checks of the sensor's runs, on the same Dagster instance. Each batch is a run in the UI, with
its materializations and its checks; Feast's `write_to_online_store` in its steps is still the only
writer to Redis.

The run queue keeps runs that share a pool apart; the worker's runs do not go through it, so the worker
keeps to it by hand: it starts no run while a run that holds one of arrivals_job's pools is queued or in
progress, and its run, once started, holds the queue back in turn, as any run in progress does. What
is left open is a run both queued and started in the moment between the worker's look and its run's
start (well under a second, against a queue visited every second), as with `sms-assets run`.

While it holds the landing folder's worker lock, arrivals_sensor leaves the batches to it; when it stops
(or dies), the lock goes with it and the sensor takes the batches again.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from sms_core import locks

if TYPE_CHECKING:
    import dagster as dg

    from sms_assets.defs.ingestion.landing import LandingFolder

# How often the folder is looked at: a listing of one folder, far cheaper than a run.
POLL_S = 0.2
# A failed run's batches wait in the folder (a bad one is quarantined): the next try waits this long, as
# long as the sensor's next tick would, so an outage is not hammered.
RETRY_AFTER_S = 5.0
WORKER_TAG = "sms_assets/arrivals_worker"
# The console shows the worker's line per run; every event still goes to the instance's event log.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def add_command(
    command: Callable[[str, str], argparse.ArgumentParser], service_env: Callable[[], dict[str, str]]
) -> None:
    """Register `arrivals` through the CLI's `command(name, summary)`."""
    worker = command(
        "arrivals",
        "Carry each batch from the landing folder to Redis as it lands: a run of arrivals_job per batch, "
        "in this process, which keeps the code and Feast loaded (sms-assets dev starts one).",
    )

    def handler(args: argparse.Namespace) -> int:
        # The definitions read the settings from this process's environment, as a run worker's do.
        os.environ.update(service_env())
        # Flushed per line: dev's output is often a file or a pipe.
        return serve(say=functools.partial(print, flush=True))

    worker.set_defaults(handler=handler)


def serve(say: Callable[[str], None] = print) -> int:
    """Load everything once, then take the batches as they land until SIGINT or SIGTERM."""
    started = time.perf_counter()
    import dagster as dg

    from sms_assets.definitions import defs
    from sms_assets.defs.executor import PRELOADED_MODULES
    from sms_assets.defs.resources import LandingResource

    # Until the worker is ready, a signal stops it at once (set, not inherited: a shell starts a
    # background command with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        for name in PRELOADED_MODULES:
            importlib.import_module(name)
        folder = LandingResource().folder()
        with dg.DagsterInstance.get() as instance, folder.watched():
            worker = ArrivalsWorker(defs, instance, folder)
            say(
                f"arrivals worker (pid {os.getpid()}) ready in {time.perf_counter() - started:.1f} s: "
                f"taking the batches that land in {folder.root}",
            )
            stop_asked = _stop_signals()
            while not stop_asked():
                result = worker.once()
                if result is None:
                    time.sleep(POLL_S)
                else:
                    say(worker.describe(result))
        return 0
    except locks.Busy as busy:
        print(
            f"error: another arrivals worker (pid {busy.holder}) takes the batches of this landing folder",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 0


def _stop_signals() -> Callable[[], bool]:
    """From here on, SIGINT and SIGTERM stop the worker once no run is in progress: the returned function
    says whether one has come. A signal never interrupts a run half-created, which would leave it
    "not started" in the instance, holding back every later one; during a run's steps Dagster's own
    handler takes it over and fails the step it interrupts, so each is also noted through the wakeup
    fd, which sees every signal that reaches a Python handler."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    stopping = (signal.SIGINT, signal.SIGTERM)
    for signum in stopping:
        signal.signal(signum, _noted)

    def asked() -> bool:
        try:
            return any(signum in stopping for signum in os.read(read_end, 64))
        except BlockingIOError:
            return False

    return asked


def _noted(signum: int, frame: FrameType | None) -> None:
    """A signal's only trace is its byte in the wakeup fd."""


class ArrivalsWorker:
    """One look at the landing folder per `once`: a run of arrivals_job for what waits there, if
    anything does and no run holding one of its pools is queued or in progress."""

    def __init__(
        self,
        defs: dg.Definitions,
        instance: dg.DagsterInstance,
        folder: LandingFolder,
        retry_after_s: float = RETRY_AFTER_S,
    ):
        from sms_assets.defs.ingestion.sensors import arrivals_job

        self.job = defs.resolve_job_def(arrivals_job.name)
        # The pools its steps take (the landing folder's, the stores'): a run holding another pool, the
        # served log's intake, writes nothing an arrivals run reads or writes.
        self.pools = frozenset(op.pool for op in self.job.graph.iterate_op_defs() if op.pool)
        self.instance = instance
        self.folder = folder
        self.retry_after_s = retry_after_s
        self._retry_at = 0.0
        self._started = 0.0

    def held_back_by(self) -> dg.DagsterRun | None:
        """A queued or running run holding a pool that arrivals_job's steps take; the worker waits for it."""
        import dagster as dg

        from sms_assets.defs.shared import IN_FLIGHT

        for run in self.instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT)):
            held = run.run_op_concurrency.all_pools if run.run_op_concurrency else None
            if held and self.pools & set(held):
                return run
        return None

    def once(self) -> dg.ExecuteInProcessResult | None:
        """Run arrivals_job for every batch waiting now; None when it ran nothing."""
        from sms_assets.defs.ingestion.sensors import arrivals_request

        if time.monotonic() < self._retry_at:
            return None
        waiting = self.folder.pending()
        if not waiting or self.held_back_by() is not None:
            return None
        request = arrivals_request(self.instance, [path.name for path in waiting], named=True)
        self._started = time.perf_counter()
        result = self.job.execute_in_process(
            run_config={**request.run_config, **QUIET_CONSOLE},
            instance=self.instance,
            tags={**request.tags, WORKER_TAG: str(os.getpid())},
            asset_selection=request.asset_selection,
            raise_on_error=False,
        )
        if not result.success:
            self._retry_at = time.monotonic() + self.retry_after_s
        return result

    def describe(self, result: dg.ExecuteInProcessResult) -> str:
        """One line on a run: its batches, its outcome and how long it took."""
        run = result.dagster_run
        seconds = time.perf_counter() - self._started
        outcome = "succeeded" if result.success else f"failed (next try in {self.retry_after_s:g} s)"
        return (
            f"run {run.run_id} of arrivals_job, {run.tags.get('sms_assets/batches')} batch(es) from "
            f"{run.tags.get('sms_assets/first_batch')}: {outcome} in {seconds:.1f} s"
        )
