from feast import FeatureService

from feature_repo.feature_views import sms_base_features
from feature_repo.on_demand_feature_views import sms_text_features

# The one contract: training reads it from Postgres, serving reads it from Redis.
sms_service = FeatureService(
    name="sms_service",
    features=[sms_base_features],
    description="Every feature the spam model is trained on and served with.",
)

# The same features for a message that has no id yet, computed from its text at request time.
sms_text_service = FeatureService(
    name="sms_text_service",
    features=[sms_text_features],
    description="sms_service's features computed from request text, for scoring new messages.",
)
