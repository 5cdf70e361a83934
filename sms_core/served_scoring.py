"""The served model's answers beside offline scoring of the same rows, chunk by chunk.

For each message: the spam probability the API gives it (its features read from Redis through the
feature service the model names, then the model's scoring) and the one scoring its training-set row
gives. Dagster-free, so a check can hand its chunks to worker processes (sms_core.pool).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sms_core import feast_config, prediction
from sms_core.contracts import REQUEST_CHUNK
from sms_core.model.store import ModelStore, ModelVersion

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore


@dataclass(frozen=True)
class Scorer:
    store: FeatureStore
    model: ModelVersion
    service: FeatureService


def scorer(store: FeatureStore, model: ModelVersion) -> Scorer:
    return Scorer(store, model, store.get_feature_service(prediction.served_through(model)[0]))


def scorer_for(postgres_url: str, redis_url: str, project: str, models: str, version: str) -> Scorer:
    """A worker's own Scorer: a feature store on the servers, the model version from its folder."""
    store = feast_config.feature_store(postgres_url, redis_url, project)
    return scorer(store, ModelStore(Path(models)).load(version))


def both_scores(scorer: Scorer, offline: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the rows (message_id and the model's features): their ids, the served probabilities and
    the offline ones."""
    from sms_core.model.pipelines import model_input, spam_scores

    features: list[str] = scorer.model.manifest["features"]
    ids = offline["message_id"].astype(np.int64).to_numpy()
    expected = spam_scores(scorer.model.model, model_input(features, offline))
    return ids, served_probabilities(scorer, ids.tolist()), expected


def served_probabilities(scorer: Scorer, message_ids: list[int]) -> np.ndarray:
    """The spam probability the API gives each message."""
    if not message_ids:
        return np.array([])
    responses = [
        prediction.online_features(scorer.store, message_ids[start : start + REQUEST_CHUNK], scorer.service)
        for start in range(0, len(message_ids), REQUEST_CHUNK)
    ]
    merged = {name: [v for response in responses for v in response[name]] for name in responses[0]}
    return prediction.spam_probabilities(scorer.model, merged)
