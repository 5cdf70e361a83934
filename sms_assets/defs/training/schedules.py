"""The model is retrained every night, with the labels that came in during the day."""

import dagster as dg

from sms_assets.defs.shared import TIMEZONE
from sms_assets.defs.training.assets import spam_model, training_set

RETRAIN_CRON = "0 2 * * *"

retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=[training_set, spam_model],
    description="Rebuild the training set from every labelled message, then retrain the model.",
)
nightly_retrain = dg.ScheduleDefinition(
    name="nightly_retrain",
    job=retrain_job,
    cron_schedule=RETRAIN_CRON,
    execution_timezone=TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The training set and the model, rebuilt with the labels that came in during the day.",
)
