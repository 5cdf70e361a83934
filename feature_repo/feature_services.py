from typing import cast

from feast import FeatureService, FeatureView, OnDemandFeatureView

from feature_repo.feature_views import sms_base_features
from feature_repo.on_demand_feature_views import sms_text_features
from sms_core.contracts import CONTRACTS

# Each contract (sms_core/contracts.py) comes in two forms with the same feature names: by message id
# (training reads it from Postgres, serving from Redis) and by text (computed at request time for a
# message that has no id yet). A model's manifest names the id form it was trained on; serving reads
# through that service and its twin.
# `view[names]` is Feast's projection of a view onto some of its features (typed loosely by Feast).
BY_ID = {
    contract.name: FeatureService(
        name=contract.name,
        features=[cast(FeatureView, sms_base_features[list(contract.features)])],
        description=contract.description,
    )
    for contract in CONTRACTS
}
BY_TEXT = {
    contract.text_twin: FeatureService(
        name=contract.text_twin,
        features=[cast(OnDemandFeatureView, sms_text_features[list(contract.features)])],
        description=f"{contract.name}'s features computed from request text, for scoring new messages.",
    )
    for contract in CONTRACTS
}
