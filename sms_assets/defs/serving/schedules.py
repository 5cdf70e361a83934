"""The served log is taken in, judged and profiled every quarter of an hour."""

import dagster as dg

from sms_assets.defs.serving.served_log import INTAKE_CRON, served_feature_metrics, served_log
from sms_assets.defs.shared import TIMEZONE

served_log_job = dg.define_asset_job(
    "served_log_job",
    selection=[served_log, served_feature_metrics],
    description="Take in the answers logged since the last run, judge them (the served log's checks) and "
    "have Feast profile the logs.",
)
served_log_intake = dg.ScheduleDefinition(
    name="served_log_intake",
    job=served_log_job,
    cron_schedule=INTAKE_CRON,
    execution_timezone=TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The served log taken in and judged every 15 minutes: a skew in serving is named within one.",
)
