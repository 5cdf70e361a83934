"""Online inference: features from Redis through the `sms_service` feature service, then the model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from feast import FeatureStore

from sms_assets.feast_store import FEATURE_SERVICE
from sms_assets.model_store import ModelVersion


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
    message_id: int
    spam_probability: float
    label: str
    model_version: str
    features: dict[str, float]


def online_features(store: FeatureStore, message_ids: Sequence[int]) -> dict[str, list]:
    """`get_online_features(sms_service)` for the ids; raises UnknownMessageError for missing ids."""
    response = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE),
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


def predict_ids(store: FeatureStore, model: ModelVersion, message_ids: Sequence[int]) -> list[Prediction]:
    """Score known messages with the model, on the features it was trained on."""
    response = online_features(store, message_ids)
    features: list[str] = model.manifest["features"]
    served = [name for name in response if name != "message_id"]
    if sorted(served) != sorted(features):
        raise FeatureMismatchError(
            f"model {model.version} was trained on {features}, "
            f"but {FEATURE_SERVICE} serves {served}: retrain spam_model"
        )
    matrix = np.array([response[name] for name in features], dtype=np.float64).T
    probabilities = model.model.predict_proba(matrix)[:, 1]
    return [
        Prediction(
            message_id=int(message_id),
            spam_probability=float(p),
            label="spam" if p >= 0.5 else "ham",
            model_version=model.version,
            features={name: response[name][row] for name in features},
        )
        for row, (message_id, p) in enumerate(zip(message_ids, probabilities, strict=True))
    ]
