"""Arrivals start their own run: a batch that lands is picked up by the next sensor tick, and that one
run carries it into Redis.

The run ingests the batch, computes its features and writes them to Redis, in one process: every run
starts a process that loads the code location, and a second run (the automation's) would pay that
again, with the seconds Feast takes to import. Once the initial load has put a registry and Redis in
place, that is; before it, the run only ingests.
"""

from __future__ import annotations

import dagster as dg

from sms_assets.defs.feature_store.assets import online_store
from sms_assets.defs.features.assets import sms_features
from sms_assets.defs.ingestion.assets import SMS_ARRIVAL_LABELS, SMS_ARRIVALS, ArrivalsConfig, ingest_arrivals
from sms_assets.defs.resources import LandingResource
from sms_assets.defs.shared import runs_in_flight

# Dagster's sensor daemon visits its sensors at most every 5 s, whatever shorter interval one asks for.
ARRIVALS_INTERVAL_S = 5
# One ingestion at a time: a second would find the first one's batches half moved.
INGESTING = [SMS_ARRIVALS.key, SMS_ARRIVAL_LABELS.key]
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
    busy = runs_in_flight(context.instance, INGESTING)
    if busy:
        return dg.SkipReason(f"{len(waiting)} batch(es) wait for run {busy[0].run_id} to finish")
    names = [path.name for path in waiting]
    # Before the initial load there is no registry or Redis state to carry a batch into.
    loaded = context.instance.get_latest_materialization_event(online_store.key) is not None
    return dg.RunRequest(
        run_config=dg.RunConfig(ops={ingest_arrivals.op.name: ArrivalsConfig(batches=names, only_news=True)}),
        asset_selection=[*INGESTING, *TO_REDIS] if loaded else INGESTING,
        tags={"sms_assets/batches": str(len(names)), "sms_assets/first_batch": names[0]},
    )
