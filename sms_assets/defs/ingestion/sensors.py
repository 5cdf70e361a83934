"""Arrivals start their own run: a batch that lands is picked up by the next sensor tick, and that one
run carries it into Redis.

The run ingests the batch, computes its features and writes them to Redis, in one process: every run
starts a process that loads the code location, and a second run (the automation's) would pay that
again, with the seconds Feast takes to import. Once the initial load has put a registry and Redis in
place, that is; before it, the run only ingests.

Under a stream, batches land while a run is in progress. The sensor then queues one follow-up run that
takes every batch waiting when it starts, so the run queue starts it the moment the one in progress
releases the landing pool, instead of a sensor tick later; while that follow-up waits, later batches
simply join it. Nothing is lost if a run fails: its batches stay in the landing folder, and once no run
is in flight the sensor names every waiting batch again.

Under `sms-assets dev`, the arrivals worker (sms_assets/arrivals_worker.py) runs the same request in a
process that has all of that loaded already, within seconds of a landing; while it holds the landing
folder's lock, the sensor leaves the batches to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from sms_assets.defs.feature_store.assets import online_store
from sms_assets.defs.features.assets import sms_features
from sms_assets.defs.ingestion.arrivals import ArrivalsConfig, ingest_arrivals
from sms_assets.defs.ingestion.assets import SMS_ARRIVAL_LABELS, SMS_ARRIVALS
from sms_assets.defs.resources import LandingResource
from sms_assets.defs.shared import runs_in_flight

# Dagster's sensor daemon visits its sensors at most every 5 s, whatever shorter interval one asks for.
ARRIVALS_INTERVAL_S = 5
# One ingestion at a time: a second would find the first one's batches half moved.
INGESTING = [SMS_ARRIVALS, SMS_ARRIVAL_LABELS]
# Runs that have not yet read the landing folder.
NOT_STARTED = {dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING}
# What an arrivals run carries the batch through, after ingesting it: its features, then Redis.
TO_REDIS = [sms_features.key, online_store.key]

arrivals_job = dg.define_asset_job(
    "arrivals_job",
    selection=[*INGESTING, *TO_REDIS],
    # The steps are sub-second for a batch; a process per step would import Feast and Dagster again.
    executor_def=dg.in_process_executor,
    description="Ingest the batches waiting in the landing folder, compute their features and write "
    "them to Redis.",
)


@dg.sensor(
    job=arrivals_job,
    minimum_interval_seconds=ARRIVALS_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts a run of arrivals_job for the batches waiting in the landing folder.",
)
def arrivals_sensor(
    context: dg.SensorEvaluationContext, landing: LandingResource
) -> dg.RunRequest | dg.SkipReason:
    folder = landing.folder()
    waiting = folder.pending()
    if not waiting:
        return dg.SkipReason(f"no batch waiting in {folder.root}")
    worker = folder.watcher()
    if worker:
        return dg.SkipReason(
            f"{len(waiting)} batch(es) wait in {folder.root} for the arrivals worker (pid {worker}), "
            "which takes them as they land"
        )
    in_flight = runs_in_flight(context.instance, INGESTING)
    not_started = [run for run in in_flight if run.status in NOT_STARTED]
    if not_started:
        return dg.SkipReason(
            f"{len(waiting)} batch(es) wait for run {not_started[0].run_id}, which has yet to start"
        )
    claimed = {name for run in in_flight for name in _batches_named(run)}
    names = [path.name for path in waiting if path.name not in claimed]
    if not names:
        return dg.SkipReason(f"the {len(waiting)} waiting batch(es) are in run {in_flight[0].run_id}")
    # Named when no run is in flight; else every batch waiting when this run starts, after the runs in
    # flight (an unnamed batch may be one a run in progress is taking: it finds it gone).
    return arrivals_request(context.instance, names, named=not in_flight)


def arrivals_request(instance: dg.DagsterInstance, names: list[str], named: bool) -> dg.RunRequest:
    """A run of arrivals_job for the batches `names` (named: only those; else every batch waiting when
    it starts), carried into Redis once the initial load has put a registry and Redis state in place."""
    loaded = instance.get_latest_materialization_event(online_store.key) is not None
    return dg.RunRequest(
        run_config=dg.RunConfig(
            ops={ingest_arrivals.op.name: ArrivalsConfig(batches=names if named else [], only_news=True)}
        ),
        asset_selection=[*INGESTING, *TO_REDIS] if loaded else INGESTING,
        tags={"sms_assets/batches": str(len(names)), "sms_assets/first_batch": names[0]},
    )


def _batches_named(run: dg.DagsterRun) -> list[str]:
    """The batches a run's config names; none when it takes every waiting batch."""
    config: Mapping[str, Any] = run.run_config or {}
    ops: Mapping[str, Any] = config.get("ops", {})
    return list(ops.get(ingest_arrivals.op.name, {}).get("config", {}).get("batches", []))
