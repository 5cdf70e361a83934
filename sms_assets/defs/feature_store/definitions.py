import dagster as dg

from sms_assets.defs.feature_store.assets import feast_registry, online_store
from sms_assets.defs.feature_store.checks import online_matches_offline, request_features_match_batch
from sms_assets.defs.feature_store.sensors import (
    feature_store_catch_up,
    online_store_reconciliation,
    reconcile_online_store_job,
)

defs = dg.Definitions(
    assets=[feast_registry, online_store],
    asset_checks=[online_matches_offline, request_features_match_batch],
    jobs=[reconcile_online_store_job],
    schedules=[online_store_reconciliation],
    sensors=[feature_store_catch_up],
)
