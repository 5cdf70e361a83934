import dagster as dg

from sms_assets.defs.features.assets import sms_features

defs = dg.Definitions(assets=[sms_features])
