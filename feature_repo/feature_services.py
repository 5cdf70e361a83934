from feast import FeatureService

from feature_repo.feature_views import sms_base_features

# The one contract: training reads it from Postgres, serving reads it from Redis.
sms_service = FeatureService(
    name="sms_service",
    features=[sms_base_features],
    description="Every feature the spam model is trained on and served with.",
)
