"""Arrivals start their own ingestion: a batch that lands is picked up by the next sensor tick."""

from __future__ import annotations

import dagster as dg

from sms_assets.defs.ingestion.assets import SMS_ARRIVAL_LABELS, SMS_ARRIVALS, ArrivalsConfig, ingest_arrivals
from sms_assets.defs.resources import LandingResource
from sms_assets.defs.shared import runs_in_flight

ARRIVALS_INTERVAL_S = 5
# One ingestion at a time: a second would find the first one's batches half moved.
INGESTING = [SMS_ARRIVALS.key, SMS_ARRIVAL_LABELS.key]

arrivals_job = dg.define_asset_job(
    "arrivals_job",
    selection=INGESTING,
    description="Ingest the batches waiting in the landing folder.",
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
    return dg.RunRequest(
        run_config=dg.RunConfig(ops={ingest_arrivals.op.name: ArrivalsConfig(batches=names, only_news=True)}),
        tags={"sms_assets/batches": str(len(names)), "sms_assets/first_batch": names[0]},
    )
