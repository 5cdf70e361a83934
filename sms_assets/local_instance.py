"""The Dagster instance `sms-assets run` and `sms-assets dev` share: its folder, its dagster.yaml (the
concurrency pools, as in the compose stack's), the runs that hold its pools, and one `dev` at a time."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sms_core import locks, settings

if TYPE_CHECKING:
    import dagster as dg

DAGSTER_YAML = """\
# The Dagster instance of `sms-assets run` and `sms-assets dev`: history in SQLite in this folder.
# Written by sms-assets when the folder has none; the compose stack's instance is the project's dagster.yaml.

# The same section as dagster.yaml's. Every asset and check names a pool (sms_assets/defs/shared.py); the
# run queue starts no run while a run holding one of its pools is in progress, so no two runs interleave
# their writes to the tables, the registry, Redis or the models.
concurrency:
  pools:
    granularity: run
    default_limit: 1

# The same as dagster.yaml's: the daemon visits the run queue every second (Dagster's default is 5 s),
# so a landed batch's run starts sooner.
run_coordinator:
  module: dagster
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
"""
DEV_LOCK = "sms-assets-dev.lock"
INIT_LOCK = "sms-assets-init.lock"
WAIT_S = 0.2  # how often a dev looks whether the starting run has let the lock go


class InstanceBusy(Exception):
    """Another process holds what this command needs on the instance: the daemon, or a pool."""


def home(env: Mapping[str, str]) -> Path:
    """DAGSTER_HOME, else `<state>/dagster_home`; given the project's dagster.yaml when it has none."""
    # Runs launched by `sms-assets run` then show up in `sms-assets dev` (the Dagster UI) too.
    folder = Path(env.get("DAGSTER_HOME") or Path(env[settings.STATE_ENV]) / "dagster_home")
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "dagster.yaml"
    if _current(config):
        return folder
    # One process at a time, and the storage of a new instance made before its dagster.yaml appears:
    # Dagster's SQLite storage is created by the first process that opens the instance, and two
    # opening a new one at once both create its tables, and one fails.
    with locks.held(folder / INIT_LOCK):
        if not _current(config):
            staged = folder / f".{config.name}.new"
            staged.write_text(DAGSTER_YAML)
            if not config.exists():
                import dagster as dg

                dg.DagsterInstance.from_config(str(folder), staged.name).dispose()
            staged.replace(config)
    return folder


def _current(config: Path) -> bool:
    """Whether `config` needs no writing: it is this version's, or the user's own (another first line).
    One an earlier sms-assets wrote is brought up to date."""
    written = config.read_text() if config.exists() else None
    ours = DAGSTER_YAML.split("\n", 1)[0]
    return written is not None and (written == DAGSTER_YAML or not written.startswith(ours))


@contextmanager
def _instance(folder: Path) -> Iterator[dg.DagsterInstance]:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(folder)) as instance:
        yield instance


def set_pool_limits(folder: Path) -> None:
    """Each pool's limit in place before any run: the run queue gives a pool it has not seen before the
    default limit but lets that round's runs pass, and a run it did not start (`dagster asset
    materialize`, in process) sets no limit."""
    from sms_assets.defs.shared import POOLS

    with _instance(folder) as instance:
        for pool in POOLS:
            instance.event_log_storage.initialize_concurrency_limit_to_default(pool)


def refuse_if_pools_held(folder: Path) -> None:
    """A run started outside the queue (the whole graph, in process) waits for no one: refuse it while a
    run that holds a pool is queued or in progress. Once it runs, the queue holds back the others."""
    import dagster as dg

    from sms_assets.defs.shared import IN_FLIGHT

    set_pool_limits(folder)
    with _instance(folder) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT))
    for run in runs:
        held = run.run_op_concurrency.all_pools if run.run_op_concurrency else None
        if held:
            raise InstanceBusy(
                f"run {run.run_id} ({run.job_name}, {run.status.value.lower()}) holds the pool(s) "
                f"{', '.join(sorted(held))} on the Dagster instance at {folder}, which the whole graph "
                "needs: run this again once it has finished (the Runs page of `sms-assets dev` shows it)"
            )


class Held(InstanceBusy):
    """The instance's lock is held: by `sms-assets dev` (its daemon runs the queue) or by a run starting."""

    def __init__(self, message: str, role: str, pid: str):
        super().__init__(message)
        self.role, self.pid = role, pid


@contextmanager
def holding(folder: Path, role: str) -> Iterator[int]:
    """Holds the instance's lock (an flock, released by the OS when its holders exit, however they exit)
    as `role`: "dev" for as long as `sms-assets dev` and its daemon live, "run" while `sms-assets run`
    checks the pools and starts its run, until the run's record holds them. Yields the lock's file
    descriptor, for the child that must keep holding it.

    A dev waits for a run that is starting (seconds); anything else finding it held raises `Held`."""
    held, waiting = ExitStack(), False
    while True:
        try:
            fd = held.enter_context(locks.sole(folder / DEV_LOCK, role))
            break
        except locks.Busy as busy:
            holder, pid = _holder(busy.holder)
            if not (role == "dev" and holder == "run"):
                raise Held(_busy(folder, role, holder, pid), holder, pid) from None
            if not waiting:
                print(f"waiting for sms-assets run (pid {pid}) to start its run on {folder}", flush=True)
            waiting = True
            time.sleep(WAIT_S)
    with held:
        yield fd


def dev_alive(folder: Path) -> bool:
    """Whether `sms-assets dev` (and so its daemon) still holds the instance's lock."""
    holder = locks.holder(folder / DEV_LOCK)
    return holder is not None and _holder(holder)[0] == "dev"


def _holder(written: str) -> tuple[str, str]:
    """Role and pid of the lock's holder, as it wrote them (a lone pid: a dev of an earlier version)."""
    words = written.split()
    return ("dev", words[0]) if len(words) == 1 else (words[0], words[-1])


def _busy(folder: Path, role: str, holder: str, pid: str) -> str:
    if holder == "run":
        return (
            f"sms-assets run (pid {pid}) is starting a run on the Dagster instance at {folder}; run this "
            "again once that run has started (the Runs page of `sms-assets dev` shows it)"
        )
    if role == "dev":
        return (
            f"sms-assets dev is already running on the Dagster instance at {folder} (pid {pid}); "
            "a second one would run a second daemon on it. Stop that one first, or set DAGSTER_HOME "
            "to another folder"
        )
    return f"sms-assets dev (pid {pid}) runs the Dagster instance at {folder}"
