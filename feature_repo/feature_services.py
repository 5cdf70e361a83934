from typing import cast

from feast import FeatureService, FeatureView, OnDemandFeatureView

from feature_repo.feature_views import sms_base_features
from feature_repo.on_demand_feature_views import sms_text_features
from sms_assets.defs.features.schema import NUMERIC_NAMES, TEXT_NAMES

# Each contract comes in two forms with the same feature names: by message id (training reads it from
# Postgres, serving from Redis) and by text (computed at request time for a message that has no id yet).
# A model's manifest names the id form it was trained on; serving reads through that service.

# `view[names]` is Feast's projection of a view onto some of its features (typed loosely by Feast).

# Version 1: the text statistics, for the scaled logistic regression.
sms_service = FeatureService(
    name="sms_service",
    features=[cast(FeatureView, sms_base_features[list(NUMERIC_NAMES)])],
    description="The text statistics, for a model trained on them (version 1).",
)
sms_text_service = FeatureService(
    name="sms_text_service",
    features=[cast(OnDemandFeatureView, sms_text_features[list(NUMERIC_NAMES)])],
    description="sms_service's features computed from request text, for scoring new messages.",
)

# Version 2: the message text, for a model whose pipeline turns it into word and character n-grams.
sms_service_v2 = FeatureService(
    name="sms_service_v2",
    features=[cast(FeatureView, sms_base_features[list(TEXT_NAMES)])],
    description="The message text, for a model that learns word and character n-grams (version 2).",
)
sms_text_service_v2 = FeatureService(
    name="sms_text_service_v2",
    features=[cast(OnDemandFeatureView, sms_text_features[list(TEXT_NAMES)])],
    description="sms_service_v2's features from request text, for scoring new messages.",
)
