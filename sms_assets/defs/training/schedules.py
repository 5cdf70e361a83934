"""The model is retrained every night, with the labels that came in during the day."""

import dagster as dg

from sms_assets.defs.shared import TIMEZONE, live_quality
from sms_assets.defs.training.assets import spam_model, training_set

RETRAIN_CRON = "0 2 * * *"
LIVE_QUALITY_TAG = "sms/live_quality"

retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=[training_set, spam_model],
    description="Rebuild the training set from every labelled message, then retrain the model.",
)


@dg.schedule(
    job=retrain_job,
    cron_schedule=RETRAIN_CRON,
    execution_timezone=TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The training set and the model, rebuilt with the labels that came in during the day; "
    "the run is tagged with the latest verdict on the served model's live quality.",
)
def nightly_retrain(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    # In the run's tags, the retrain shows at a glance whether it answers a drop in live quality.
    return dg.RunRequest(tags={LIVE_QUALITY_TAG: live_quality(context.instance)})
