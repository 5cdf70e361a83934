import dagster as dg

from sms_assets.defs.serving.assets import served_model
from sms_assets.defs.serving.checks import served_predictions_match_offline

defs = dg.Definitions(assets=[served_model], asset_checks=[served_predictions_match_offline])
