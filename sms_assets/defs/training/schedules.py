"""The model is retrained every night, with the labels that came in during the day, and served once it
passes the gate."""

import dagster as dg

from sms_assets.defs.serving.assets import served_model
from sms_assets.defs.shared import TIMEZONE
from sms_assets.defs.training.assets import spam_model, training_set

RETRAIN_CRON = "0 2 * * *"

retrain_job = dg.define_asset_job(
    "retrain_job",
    # served_model too: a candidate that passes the gate is served the same night, not at the next
    # whole-graph run.
    selection=[training_set, spam_model, served_model],
    # Any change since the candidate was trained is trained on (see retraining).
    config={"ops": {spam_model.op.name: {"config": {"retrain_share": 0.0}}}},
    description="Rebuild the training set from every labelled message, retrain the model, and serve "
    "it if it passes the gate.",
)
nightly_retrain = dg.ScheduleDefinition(
    name="nightly_retrain",
    job=retrain_job,
    cron_schedule=RETRAIN_CRON,
    execution_timezone=TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The training set and the model, rebuilt with the labels that came in during the day; "
    "the new model served if it passes the gate.",
)
