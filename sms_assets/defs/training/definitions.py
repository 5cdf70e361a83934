import dagster as dg

from sms_assets.defs.training.assets import spam_model, training_set
from sms_assets.defs.training.checks import model_beats_floor_and_served, no_future_features
from sms_assets.defs.training.schedules import nightly_retrain, retrain_job

defs = dg.Definitions(
    assets=[training_set, spam_model],
    asset_checks=[no_future_features, model_beats_floor_and_served],
    jobs=[retrain_job],
    schedules=[nightly_retrain],
)
