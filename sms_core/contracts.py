"""The feature contracts: what Feast serves the features by, each declared once.

A contract is a feature service by message id (training reads it from Postgres, serving from Redis)
and its text twin, which computes the same features from a request's text through the on-demand view.
`feature_repo/feature_services.py` builds both Feast objects from each `Contract`; a model's manifest
names the by-id service it was trained on, and serving reads through that service and its twin.

A module of its own, importing neither Feast nor scikit-learn, so that a check can name the features
without importing the serving path, and so that naming them leaves the feature code (and its version)
as is.
"""

from __future__ import annotations

from dataclasses import dataclass

from sms_core.features.schema import FEATURE_NAMES, NUMERIC_NAMES, TEXT_NAMES

FEATURE_VIEW = "sms_base_features"  # the batch view: Postgres offline, Redis online
FEATURE_TABLE = "sms_features"  # its offline source: the table the sms_features asset writes
TEXT_FEATURE_VIEW = "sms_text_features"  # its request-time twin (an on-demand view on the text)

VIEW_FEATURES = [f"{FEATURE_VIEW}:{name}" for name in FEATURE_NAMES]
TEXT_VIEW_FEATURES = [f"{TEXT_FEATURE_VIEW}:{name}" for name in FEATURE_NAMES]
# The ids or texts a check reads through Feast in one call: a size one request could carry (the API's
# batch limit). In one call, the 250,000 held-out messages of a million peaked at 2.4 GiB of Feast protos.
REQUEST_CHUNK = 1_000


@dataclass(frozen=True)
class Contract:
    """One feature contract: a service by id, its text twin, and the features both serve."""

    name: str  # the service by message id; a model's manifest names it
    features: tuple[str, ...]
    description: str
    # The share of answers the prediction service logs, through either form: every one by default, so
    # that the checks on served traffic see all of it.
    log_sample_rate: float = 1.0

    @property
    def text_twin(self) -> str:
        return self.name.replace("sms_service", "sms_text_service", 1)


def log_table(service: str) -> str:
    """The Postgres table a feature service's answers are logged to (its logging destination)."""
    return f"{service}_log"


CONTRACTS = (
    # Version 1: the text statistics, for the scaled logistic regression.
    Contract("sms_service", NUMERIC_NAMES, "The text statistics, for a model trained on them (version 1)."),
    # Version 2: the message text, for a model whose pipeline turns it into word and character n-grams.
    Contract(
        "sms_service_v2",
        TEXT_NAMES,
        "The message text, for a model that learns word and character n-grams (version 2).",
    ),
)
BY_NAME = {contract.name: contract for contract in CONTRACTS}
# Each feature service by message id, and its twin that computes the same features from request text.
TEXT_TWINS = {contract.name: contract.text_twin for contract in CONTRACTS}
V1_SERVICE = CONTRACTS[0].name  # what a manifest that names no service was trained on
TRAINING_SERVICE = CONTRACTS[-1].name  # new models are trained on the latest contract
