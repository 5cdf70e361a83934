from typing import Any, cast

from feast import FeatureService, FeatureView, OnDemandFeatureView
from feast.feature_logging import LoggingConfig

from feature_repo.feature_views import sms_base_features
from feature_repo.on_demand_feature_views import sms_text_features
from sms_core.contracts import CONTRACTS, log_table
from sms_core.served_log.destination import PostgreSQLLoggingDestination


def logged_to(service: str, sample_rate: float) -> dict[str, Any]:
    """The service's log: a Postgres table of its own, written by the prediction service.

    Feast 0.67 compares feature services without their logging config (FeatureService.__eq__), so a
    change of table or rate alone would never reach the registry; the tag makes `feast apply` (and the
    feast_registry asset) see it.
    """
    table = log_table(service)
    return {
        "logging_config": LoggingConfig(
            destination=PostgreSQLLoggingDestination(table_name=table), sample_rate=sample_rate
        ),
        "tags": {"logging": f"{table}@{sample_rate:g}"},
    }


# Each contract (sms_core/contracts.py) comes in two forms with the same feature names: by message id
# (training reads it from Postgres, serving from Redis) and by text (computed at request time for a
# message that has no id yet). A model's manifest names the id form it was trained on; serving reads
# through that service and its twin, and logs each answer to the service's table.
# `view[names]` is Feast's projection of a view onto some of its features (typed loosely by Feast).
BY_ID = {
    contract.name: FeatureService(
        name=contract.name,
        features=[cast(FeatureView, sms_base_features[list(contract.features)])],
        description=contract.description,
        **logged_to(contract.name, contract.log_sample_rate),
    )
    for contract in CONTRACTS
}
BY_TEXT = {
    contract.text_twin: FeatureService(
        name=contract.text_twin,
        features=[cast(OnDemandFeatureView, sms_text_features[list(contract.features)])],
        description=f"{contract.name}'s features computed from request text, for scoring new messages.",
        **logged_to(contract.text_twin, contract.log_sample_rate),
    )
    for contract in CONTRACTS
}
