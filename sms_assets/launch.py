"""`sms-assets run`: the whole graph through Dagster's own `dg launch --assets '*'`, shown as it goes
(`sms_assets.queued` puts it in `sms-assets dev`'s run queue instead, when one runs).

The run's own output (Dagster's event log on the console, each step process's library warnings) goes to
a log file under the state folder. The terminal gets one line per step as it finishes, read from the
run's record in the Dagster instance, then a table of the steps and one of the checks. The run is the
same as a user's own `dg launch`: same definitions, executor, instance and history in the UI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sms_assets import processes

if TYPE_CHECKING:
    import dagster as dg
    from dagster_shared.error import SerializableErrorInfo

ASSET_JOB = "__ASSET_JOB"  # the job `dg launch --assets` runs
LAUNCH = ["dg", "launch", "--assets", "*"]
# Dagster's console logger says only what went wrong; the run's record keeps every event.
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
POLL_S = 0.5
# What a step raises when its run is stopped from outside (Ctrl-C or SIGTERM to `sms-assets run`).
INTERRUPTED = "DagsterExecutionInterruptedError"


@dataclass
class Step:
    key: str
    started: float | None = None
    seconds: float | None = None
    status: str = "running"


@dataclass
class Outcome:
    """What the run did: its id and status, each step, each check's verdict, the failures' causes."""

    run_id: str | None = None
    status: str = "not started"
    steps: dict[str, Step] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False


class Follower:
    """Reads the run's new events from the instance on each call and says each finished step."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        since: datetime,
        say: Callable[[str], None],
        run_id: str | None = None,
    ):
        self.instance, self.since, self.say = instance, since, say
        self.outcome = Outcome(run_id=run_id)
        self._cursor: str | None = None

    def __call__(self) -> None:
        import dagster as dg

        if self.outcome.run_id is None:
            runs = self.instance.get_runs(
                filters=dg.RunsFilter(job_name=ASSET_JOB, created_after=self.since), limit=1
            )
            if not runs:
                return
            self.outcome.run_id = runs[0].run_id
        while True:
            page = self.instance.get_records_for_run(self.outcome.run_id, self._cursor, limit=500)
            self._cursor = page.cursor
            for record in page.records:
                self._take(record.event_log_entry)
            if not page.has_more:
                break
        run = self.instance.get_run_by_id(self.outcome.run_id)
        self.outcome.status = run.status.value if run else "unknown"

    def _take(self, entry: dg.EventLogEntry) -> None:
        import dagster as dg

        event = entry.dagster_event
        if event is None or (
            event.step_key is None and event.event_type != dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ):
            return
        kind = event.event_type
        if kind == dg.DagsterEventType.STEP_START and event.step_key:
            self.outcome.steps[event.step_key] = Step(event.step_key, started=entry.timestamp)
        elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE) and event.step_key:
            step = self.outcome.steps.setdefault(event.step_key, Step(event.step_key))
            step.seconds = entry.timestamp - step.started if step.started else None
            step.status = "ok" if kind == dg.DagsterEventType.STEP_SUCCESS else "FAILED"
            error = _innermost(event) if step.status == "FAILED" else None
            if error is not None and error.cls_name == INTERRUPTED:
                self.outcome.interrupted, step.status = True, "stopped"
            elif step.status == "FAILED":
                self.outcome.errors.append(f"step {step.key} failed: {_cause(error)}")
            self.say(f"  {step.status:<6} {_seconds(step.seconds):>8}  {step.key}")
        elif kind == dg.DagsterEventType.STEP_SKIPPED and event.step_key:
            self.outcome.steps[event.step_key] = Step(event.step_key, status="skipped")
            self.say(f"  {'skipped':<6} {'':>8}  {event.step_key}")
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            key = getattr(evaluation, "asset_check_key", None)
            if key is not None:
                name = f"{key.asset_key.to_user_string()}:{key.name}"
                self.outcome.checks[name] = bool(getattr(evaluation, "passed", False))


def _innermost(event: dg.DagsterEvent) -> SerializableErrorInfo | None:
    """The step's own error: Dagster wraps it, the innermost cause is what the step raised."""
    error = event.step_failure_data.error if event.step_failure_data else None
    while error is not None and error.cause is not None:
        error = error.cause
    return error


def _cause(error: SerializableErrorInfo | None) -> str:
    return error.message.strip().splitlines()[0] if error and error.message.strip() else "no error recorded"


def _seconds(seconds: float | None) -> str:
    return f"{seconds:.1f} s" if seconds is not None else ""


def launch(
    env: Mapping[str, str],
    home: Path,
    log: Path,
    dg_bin: str,
    say: Callable[[str], None],
    started: Callable[[], None] = lambda: None,
) -> Outcome:
    """Run `dg launch --assets '*'` on the instance at `home`, its output into `log`; says each step.
    `started` is called once the run's record exists."""
    import dagster as dg

    log.parent.mkdir(parents=True, exist_ok=True)
    command = [dg_bin, *LAUNCH[1:], "--config-json", json.dumps(QUIET)]
    since = datetime.now(UTC)
    with dg.DagsterInstance.from_config(str(home)) as instance, log.open("w") as output:
        follow = Follower(instance, since, say)

        def following() -> None:
            follow()
            if follow.outcome.run_id is not None:
                started()

        run = processes.run_in_own_group
        code = run(command, env, output=output, while_running=following, every_s=POLL_S)
        follow()
        started()
    outcome = follow.outcome
    if code != 0 and outcome.status in ("SUCCESS", "not started"):
        outcome.status = "FAILURE" if outcome.run_id else outcome.status
    return outcome


def summary(outcome: Outcome) -> str:
    """The steps (slowest first) and the checks, as two tables."""
    from tabulate import tabulate

    steps = [
        [step.key, _seconds(step.seconds), step.status]
        for step in sorted(outcome.steps.values(), key=lambda s: -(s.seconds or 0))
    ]
    checks = [[name, "passed" if passed else "FAILED"] for name, passed in sorted(outcome.checks.items())]
    return "\n\n".join(
        [
            f"run {outcome.run_id}: {outcome.status.lower()}",
            tabulate(steps, headers=["step", "time", "status"], colalign=("left", "right", "left")),
            tabulate(checks, headers=["check", "verdict"]),
        ]
    )


def stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S")
