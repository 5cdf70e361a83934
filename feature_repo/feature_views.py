from datetime import timedelta

from feast import FeatureView, Field, types

from feature_repo.data_sources import sms_features_source
from feature_repo.entities import message
from sms_core.features.schema import FEATURES

sms_base_features = FeatureView(
    name="sms_base_features",
    entities=[message],
    # A message's features are its text's: they change only when sms_features recomputes them, never
    # with age, so no time-to-live.
    ttl=timedelta(0),
    # The one feature schema, in its declared order.
    schema=[Field(name=name, dtype=getattr(types, kind.feast)) for name, kind in FEATURES.items()],
    source=sms_features_source,
    online=True,
    description="Text statistics computed by sms_core.features.compute.",
)
