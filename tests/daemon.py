"""What dagster-daemon does for this code location, one tick at a time, inside the test process.

The sensors and the automation condition evaluation are the real ones, run against a real instance;
the runs they request execute in process, so a test can stop a server between two ticks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from sms_assets.defs.feature_store.sensors import OUTAGE
from sms_core.urls import ServiceUnavailable


@dataclass
class Tick:
    """What one tick started, the sensor errors it met (a failed tick in the UI), and the outages the
    catch-up sensor named in its one-line skip."""

    runs: list[tuple[str, dg.ExecuteInProcessResult]] = field(default_factory=list)
    sensor_errors: list[str] = field(default_factory=list)
    outages: list[str] = field(default_factory=list)

    def failed_runs(self) -> list[str]:
        return [source for source, result in self.runs if not result.success]


class InProcessDaemon:
    """The daemon's ticks for `defs`, whose resources are the ones its sensors and runs get."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance):
        self.defs = defs
        self.instance = instance
        self.cursors: dict[str, str | None] = {}
        # The automation sensor's first evaluation only records where things stand.
        self.cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor

    def sensor(self, name: str) -> dg.RunRequest | dg.SkipReason:
        """One evaluation of a sensor, its cursor carried over from the previous one."""
        with dg.build_sensor_context(
            instance=self.instance, resources=self.defs.resources, cursor=self.cursors.get(name)
        ) as context:
            result = self.defs.resolve_sensor_def(name)(context)
            self.cursors[name] = context.cursor
        assert isinstance(result, dg.RunRequest | dg.SkipReason), result
        return result

    def execute(self, request: dg.RunRequest, job_name: str | None = None) -> dg.ExecuteInProcessResult:
        """Run what a sensor or the automation requested; a failing run is returned, not raised."""
        if job_name:
            return self.defs.resolve_job_def(job_name).execute_in_process(
                run_config=request.run_config,
                instance=self.instance,
                tags=request.tags,
                asset_selection=request.asset_selection,
                raise_on_error=False,
            )
        return self.defs.resolve_implicit_global_asset_job_def().execute_in_process(
            run_config=request.run_config,
            instance=self.instance,
            asset_selection=request.asset_selection,
            raise_on_error=False,
        )

    def automation(self) -> set[dg.AssetKey]:
        """One evaluation of the automation conditions; returns the keys it requests."""
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return {r.key for r in result.results if r.true_subset.size}  # type: ignore[misc]

    def tick(self) -> Tick:
        """The arrivals sensor, then the automation, then the catch-up sensor, each run executed."""
        tick = Tick()
        request = self.sensor("arrivals_sensor")
        if isinstance(request, dg.RunRequest):
            tick.runs.append(("arrivals_sensor", self.execute(request, "arrivals_job")))
        keys = self.automation()
        if keys:
            tick.runs.append(("sms_automation", self.execute(dg.RunRequest(asset_selection=sorted(keys)))))
        try:
            request = self.sensor("feature_store_catch_up")
        except ServiceUnavailable as exc:
            tick.sensor_errors.append(str(exc))
        else:
            if isinstance(request, dg.RunRequest):
                tick.runs.append(("feature_store_catch_up", self.execute(request)))
            elif (request.skip_message or "").startswith(OUTAGE):
                tick.outages.append(request.skip_message or "")
        return tick
