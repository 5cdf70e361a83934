"""Every night, the checks that verify the changes and a sample on each run verify every row."""

import dagster as dg

from sms_assets.defs.check_passes import SampleConfig
from sms_assets.defs.feature_store.checks import online_matches_offline, request_features_match_batch
from sms_assets.defs.serving.checks import served_predictions_match_offline
from sms_assets.defs.shared import TIMEZONE
from sms_assets.defs.training.checks import no_future_features

FULL_CHECKS_CRON = "15 3 * * *"
INCREMENTAL_CHECKS = (
    online_matches_offline,
    request_features_match_batch,
    served_predictions_match_offline,
    no_future_features,
)

full_checks_job = dg.define_asset_job(
    "full_checks_job",
    selection=dg.AssetSelection.checks(*INCREMENTAL_CHECKS),
    config=dg.RunConfig(ops={check.node_def.name: SampleConfig(full=True) for check in INCREMENTAL_CHECKS}),
    description="Every row verified by the checks whose runs verify the changes and a sample.",
)
full_checks = dg.ScheduleDefinition(
    name="full_checks",
    job=full_checks_job,
    cron_schedule=FULL_CHECKS_CRON,
    execution_timezone=TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The nightly full pass of the checks that otherwise verify the changes and a sample.",
)
