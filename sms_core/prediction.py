"""Online inference through Feast: known messages from Redis, new messages from their text.

A model is served through the feature service its manifest names (by id) and that service's text
twin (by text). Both end in the same feature names (sms_text_features carries sms_base_features'
fields), so one model scores both, on exactly the features it was trained on, through the input and
scoring functions training uses (sms_core.model.pipelines).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from feast import FeatureService, FeatureStore
from feast.online_response import OnlineResponse

from sms_core.contracts import TEXT_TWINS, V1_SERVICE, VIEW_FEATURES
from sms_core.features.schema import FEATURES
from sms_core.model.metrics import SPAM_THRESHOLD
from sms_core.model.pipelines import model_input, spam_scores
from sms_core.model.store import ModelVersion

log = logging.getLogger(__name__)

Features = FeatureService | list[str]


class UnknownMessageError(LookupError):
    """A message_id the online store holds no features for (and, once asked, the offline one neither)."""

    def __init__(self, message_ids: Sequence[int], offline_checked: bool = False):
        self.message_ids = list(message_ids)
        ids = ", ".join(map(str, self.message_ids))
        if offline_checked:
            super().__init__(f"unknown message_id {ids}: neither the online nor the offline store holds it")
        else:
            super().__init__(f"no online features for message_id {ids}: unknown id, or not materialized")


class OnlineStoreIncomplete(LookupError):
    """Messages that exist in the offline table but whose features the online store does not hold:
    Redis lost them (or a sync is on its way), which a sync repairs; not an unknown id."""

    def __init__(self, message_ids: Sequence[int], unknown_ids: Sequence[int] = ()):
        self.message_ids = list(message_ids)
        self.unknown_ids = list(unknown_ids)
        ids = ", ".join(map(str, self.message_ids))
        one = len(self.message_ids) == 1
        messages, exist, their = ("message", "exists", "its") if one else ("messages", "exist", "their")
        unknown = f"; unknown ids: {', '.join(map(str, self.unknown_ids))}" if self.unknown_ids else ""
        super().__init__(
            f"{messages} {ids} {exist} but {their} features are not in the online store; a sync is due"
            + unknown
        )


class FeatureMismatchError(RuntimeError):
    """The model was trained on other features than the feature service now serves."""


@dataclass(frozen=True)
class Prediction:
    message_id: int | None  # None for a message scored from its text
    spam_probability: float
    label: str
    model_version: str
    features: dict[str, Any]


@dataclass(frozen=True)
class Read:
    """Feast's response for some entity rows, as lists by feature name: the values (and the request's
    own fields), each feature's event times in seconds and its statuses (FieldStatus numbers)."""

    values: dict[str, list]
    event_seconds: dict[str, list[int]]
    statuses: dict[str, list[int]]

    @classmethod
    def of(cls, response: OnlineResponse) -> Read:
        values = response.to_dict()
        proto = response.proto
        names = list(proto.metadata.feature_names.val)
        event_seconds, statuses = {}, {}
        for name, result in zip(names, proto.results, strict=True):
            if name in values and name in FEATURES:
                event_seconds[name] = [t.seconds for t in result.event_timestamps]
                statuses[name] = list(result.statuses)
        return cls(values, event_seconds, statuses)

    def rows(self, start: int, stop: int) -> Read:
        """The rows [start, stop) of a read made for several requests' rows together."""
        return Read(
            {name: column[start:stop] for name, column in self.values.items()},
            {name: column[start:stop] for name, column in self.event_seconds.items()},
            {name: column[start:stop] for name, column in self.statuses.items()},
        )


@dataclass(frozen=True)
class Answered:
    """A request's predictions, with Feast's response they were scored on (every feature the service
    serves, its event times and statuses): what the served log records."""

    predictions: list[Prediction]
    read: Read

    @property
    def values(self) -> dict[str, list]:
        return self.read.values


def served_through(model: ModelVersion) -> tuple[str, str]:
    """The feature services a model is served through: the one its manifest names, and its text twin."""
    by_id = model.manifest.get("feature_service", V1_SERVICE)
    return by_id, TEXT_TWINS[by_id]


def feature_service(store: FeatureStore, name: str) -> FeatureService:
    """A feature service from the store's cached registry: a request never waits for Postgres."""
    return store.get_feature_service(name, allow_cache=True)


def _known(response: dict[str, list], message_ids: Sequence[int]) -> dict[str, list]:
    """The response; raises UnknownMessageError naming the ids Redis holds no feature for."""
    names = [name for name in response if name != "message_id"]
    missing = [
        message_id
        for row, message_id in enumerate(message_ids)
        if all(response[name][row] is None for name in names)
    ]
    if missing:
        raise UnknownMessageError(missing)
    return response


def _id_rows(message_ids: Sequence[int]) -> list[dict[str, Any]]:
    return [{"message_id": int(i)} for i in message_ids]


def _text_rows(texts: Sequence[str]) -> list[dict[str, Any]]:
    # Only request data (the `text` field of sms_text_request): Feast runs the on-demand view's
    # transformation, `compute_features`, on it.
    return [{"text": text} for text in texts]


def online_features(store: FeatureStore, message_ids: Sequence[int], features: Features) -> dict[str, list]:
    """`get_online_features` for the ids; raises UnknownMessageError for missing ids."""
    response = store.get_online_features(features=features, entity_rows=_id_rows(message_ids))
    return _known(response.to_dict(), message_ids)


def all_online(store: FeatureStore, message_ids: Sequence[int]) -> bool:
    """Whether Redis holds features for every one of the ids."""
    try:
        online_features(store, message_ids, VIEW_FEATURES)
    except UnknownMessageError:
        return False
    return True


def text_features(store: FeatureStore, texts: Sequence[str], features: Features) -> dict[str, list]:
    """`get_online_features` of a text service: the features of each text, computed at request time."""
    response = store.get_online_features(features=features, entity_rows=_text_rows(texts)).to_dict()
    response.pop("text", None)
    return response


async def text_features_async(
    store: FeatureStore, texts: Sequence[str], features: Features
) -> dict[str, list]:
    """text_features through Feast's asyncio read (a text service's on-demand view reads no Redis)."""
    return (await read_texts_async(store, texts, features)).values


async def read_texts_async(store: FeatureStore, texts: Sequence[str], service: Features) -> Read:
    """One Feast read of the texts' request-time features, without the request's own `text` field."""
    read = Read.of(await store.get_online_features_async(features=service, entity_rows=_text_rows(texts)))
    read.values.pop("text", None)
    return read


def feature_matrix(model: ModelVersion, response: dict[str, list]) -> np.ndarray:
    """The response's values as the model's input: its features' columns in its training order."""
    features: list[str] = model.manifest["features"]
    missing = [name for name in features if name not in response]
    if missing:
        served = sorted(name for name in response if name not in ("message_id", "text"))
        raise FeatureMismatchError(
            f"model {model.version} was trained on {features}, but the feature service serves "
            f"{served}: retrain spam_model"
        )
    return model_input(features, response)


def spam_probabilities(model: ModelVersion, response: dict[str, list]) -> np.ndarray:
    return spam_scores(model.model, feature_matrix(model, response))


def _predictions(
    model: ModelVersion, response: dict[str, list], message_ids: Sequence[int | None]
) -> list[Prediction]:
    features: list[str] = model.manifest["features"]
    probabilities = spam_probabilities(model, response)
    return [
        Prediction(
            message_id=message_id,
            spam_probability=float(p),
            label="spam" if p > SPAM_THRESHOLD else "ham",  # as the classifier's own predict
            model_version=model.version,
            features={name: response[name][row] for name in features},
        )
        for row, (message_id, p) in enumerate(zip(message_ids, probabilities, strict=True))
    ]


def predict_ids(
    store: FeatureStore, model: ModelVersion, message_ids: Sequence[int], service: Features
) -> list[Prediction]:
    """Score known messages with the model, on their features in Redis."""
    response = online_features(store, message_ids, service)
    return _predictions(model, response, [int(i) for i in message_ids])


def predict_texts(
    store: FeatureStore, model: ModelVersion, texts: Sequence[str], service: Features
) -> list[Prediction]:
    """Score new messages with the model, on features computed from their text through Feast."""
    return _predictions(model, text_features(store, texts, service), [None] * len(texts))


async def read_ids_async(store: FeatureStore, message_ids: Sequence[int], service: Features) -> Read:
    """One Feast read of the ids' features, through its asyncio client (redis-py's): the caller's event
    loop stays free while Redis answers, and a deadline can cancel the wait."""
    return Read.of(await store.get_online_features_async(features=service, entity_rows=_id_rows(message_ids)))


def answer_ids(model: ModelVersion, message_ids: Sequence[int], read: Read) -> Answered:
    """The ids scored on their read; raises UnknownMessageError naming the ids Redis holds nothing for."""
    _known(read.values, message_ids)
    return Answered(_predictions(model, read.values, [int(i) for i in message_ids]), read)


async def answer_ids_async(
    store: FeatureStore, model: ModelVersion, message_ids: Sequence[int], service: Features
) -> Answered:
    """predict_ids through Feast's asyncio read, with the read the predictions were scored on."""
    return answer_ids(model, message_ids, await read_ids_async(store, message_ids, service))


async def answer_texts_async(
    store: FeatureStore, model: ModelVersion, texts: Sequence[str], service: Features
) -> Answered:
    """predict_texts through Feast's asyncio read, with the read the predictions were scored on."""
    read = await read_texts_async(store, texts, service)
    return Answered(_predictions(model, read.values, [None] * len(texts)), read)
