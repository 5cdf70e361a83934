from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float64, Int64

from feature_repo.data_sources import sms_features_source
from feature_repo.entities import message

sms_base_features = FeatureView(
    name="sms_base_features",
    entities=[message],
    # A message's text never changes, so its features never go stale: no time-to-live.
    ttl=timedelta(0),
    schema=[
        Field(name="text_length", dtype=Int64),
        Field(name="word_count", dtype=Int64),
        Field(name="avg_word_length", dtype=Float64),
        Field(name="digit_count", dtype=Int64),
        Field(name="exclamation_count", dtype=Int64),
        Field(name="uppercase_ratio", dtype=Float64),
    ],
    source=sms_features_source,
    online=True,
    description="Text statistics computed by sms_assets.features.compute_features.",
)
