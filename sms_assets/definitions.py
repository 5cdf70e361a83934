"""The one Dagster entry point: `dagster dev`, workspace.yaml and `-m sms_assets` all load this."""

import dagster as dg

from sms_assets import automation
from sms_assets.assets import ALL_ASSETS
from sms_assets.checks import ALL_CHECKS
from sms_assets.resources import (
    DatasetResource,
    FeastResource,
    LandingResource,
    ModelStoreResource,
    PostgresResource,
    RedisResource,
)

postgres = PostgresResource()
redis = RedisResource()

defs = dg.Definitions(
    assets=automation.with_automation(ALL_ASSETS),
    asset_checks=ALL_CHECKS,
    jobs=automation.JOBS,
    schedules=automation.SCHEDULES,
    sensors=automation.SENSORS,
    # The steps are a chain of sub-second queries; a process per step would spend ~10 s each
    # importing Feast and Dagster, so the whole graph runs in one process.
    executor=dg.in_process_executor,
    resources={
        "postgres": postgres,
        "feast": FeastResource(postgres=postgres, redis=redis),
        "dataset": DatasetResource(),
        "model_store": ModelStoreResource(),
        "landing": LandingResource(),
    },
)
