"""Online inference through Feast: known messages from Redis, new messages from their text.

Both paths end in the same feature names (sms_text_features carries sms_base_features' fields), so
one model scores both, on exactly the features it was trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from feast import FeatureService, FeatureStore

from sms_assets.lib.feast_config import FEATURE_SERVICE, TEXT_FEATURE_SERVICE
from sms_assets.lib.model_store import ModelVersion

log = logging.getLogger(__name__)

SPAM_THRESHOLD = 0.5


class UnknownMessageError(LookupError):
    """A message_id the online store holds no features for."""

    def __init__(self, message_ids: Sequence[int]):
        self.message_ids = list(message_ids)
        ids = ", ".join(map(str, self.message_ids))
        super().__init__(f"no online features for message_id {ids}: unknown id, or not materialized")


class FeatureMismatchError(RuntimeError):
    """The model was trained on other features than the feature service now serves."""


@dataclass(frozen=True)
class Prediction:
    message_id: int | None  # None for a message scored from its text
    spam_probability: float
    label: str
    model_version: str
    features: dict[str, Any]


def feature_service(store: FeatureStore, name: str) -> FeatureService:
    """A feature service from the store's cached registry: a request never waits for Postgres."""
    return store.get_feature_service(name, allow_cache=True)


def online_features(
    store: FeatureStore, message_ids: Sequence[int], service: FeatureService | None = None
) -> dict[str, list]:
    """`get_online_features(sms_service)` for the ids; raises UnknownMessageError for missing ids."""
    response = store.get_online_features(
        features=service or feature_service(store, FEATURE_SERVICE),
        entity_rows=[{"message_id": int(i)} for i in message_ids],
    ).to_dict()
    names = [name for name in response if name != "message_id"]
    missing = [
        message_id
        for row, message_id in enumerate(message_ids)
        if all(response[name][row] is None for name in names)
    ]
    if missing:
        raise UnknownMessageError(missing)
    return response


def all_online(store: FeatureStore, message_ids: Sequence[int]) -> bool:
    """Whether Redis holds features for every one of the ids, read through sms_service."""
    try:
        online_features(store, message_ids)
    except UnknownMessageError:
        return False
    return True


def text_features(
    store: FeatureStore, texts: Sequence[str], service: FeatureService | None = None
) -> dict[str, list]:
    """`get_online_features(sms_text_service)`: the features of each text, computed at request time.

    The entity rows hold only request data (the `text` field of sms_text_request); Feast runs the
    on-demand view's transformation, `compute_features`, on them.
    """
    response = store.get_online_features(
        features=service or feature_service(store, TEXT_FEATURE_SERVICE),
        entity_rows=[{"text": text} for text in texts],
    ).to_dict()
    response.pop("text", None)
    return response


def feature_matrix(model: ModelVersion, response: dict[str, list]) -> np.ndarray:
    """The response's values as a (rows, features) matrix, columns in the model's training order."""
    features: list[str] = model.manifest["features"]
    missing = [name for name in features if name not in response]
    if missing:
        served = sorted(name for name in response if name not in ("message_id", "text"))
        raise FeatureMismatchError(
            f"model {model.version} was trained on {features}, but the feature service serves "
            f"{served}: retrain spam_model"
        )
    return np.array([response[name] for name in features], dtype=np.float64).T


def spam_probabilities(model: ModelVersion, response: dict[str, list]) -> np.ndarray:
    return model.model.predict_proba(feature_matrix(model, response))[:, 1]


def _predictions(
    model: ModelVersion, response: dict[str, list], message_ids: Sequence[int | None]
) -> list[Prediction]:
    features: list[str] = model.manifest["features"]
    probabilities = spam_probabilities(model, response)
    return [
        Prediction(
            message_id=message_id,
            spam_probability=float(p),
            label="spam" if p > SPAM_THRESHOLD else "ham",  # as LogisticRegression.predict
            model_version=model.version,
            features={name: response[name][row] for name in features},
        )
        for row, (message_id, p) in enumerate(zip(message_ids, probabilities, strict=True))
    ]


def predict_ids(
    store: FeatureStore,
    model: ModelVersion,
    message_ids: Sequence[int],
    service: FeatureService | None = None,
) -> list[Prediction]:
    """Score known messages with the model, on their features in Redis."""
    response = online_features(store, message_ids, service)
    return _predictions(model, response, [int(i) for i in message_ids])


def predict_texts(
    store: FeatureStore, model: ModelVersion, texts: Sequence[str], service: FeatureService | None = None
) -> list[Prediction]:
    """Score new messages with the model, on features computed from their text through Feast."""
    return _predictions(model, text_features(store, texts, service), [None] * len(texts))
