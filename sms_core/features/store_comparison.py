"""Feast's answers beside the offline feature table, chunk by chunk: what Redis serves for stored rows,
and what the request path computes for texts. Dagster-free, so a check can hand its chunks to worker
processes (sms_core.pool) that import this and Feast alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sms_core.contracts import REQUEST_CHUNK, TEXT_VIEW_FEATURES, VIEW_FEATURES
from sms_core.features.comparison import FIRST_IDS, first_ids, mismatches
from sms_core.features.schema import FEATURE_NAMES

if TYPE_CHECKING:
    from feast import FeatureStore


@dataclass
class Compared:
    """Offline rows beside what Feast reads from Redis for them, added up over the chunks of a pass."""

    rows: int = 0
    absent: list[int] = field(default_factory=list)
    mismatched: list[int] = field(default_factory=list)
    max_difference: dict[str, float] = field(default_factory=dict)

    def merge(self, other: Compared) -> None:
        self.rows += other.rows
        self.absent += other.absent
        self.mismatched += other.mismatched
        larger(self.max_difference, other.max_difference)


def compare_rows(store: FeatureStore, offline: pd.DataFrame) -> Compared:
    """Offline rows beside what Feast reads from Redis for them."""
    if offline.empty:
        return Compared()
    offline = offline.set_index("message_id")
    ids = [int(i) for i in offline.index]
    online = read_online(store, ids)
    absent = online.index[online[list(FEATURE_NAMES)].isna().all(axis=1)]
    present = online.drop(index=absent)
    differs, difference = mismatches(present, offline.loc[present.index])
    mismatched = [int(i) for i in present.index[differs.to_numpy()]]
    return Compared(len(ids), [int(i) for i in absent], mismatched, dict(difference))


@dataclass
class PairsCompared:
    """Distinct pairs of text and batch row beside Feast's request-time features for the text, added up
    over the chunks of a pass."""

    distinct: int = 0
    messages: int = 0
    mismatched: int = 0
    first_mismatched: list[int] = field(default_factory=list)  # the first message of each pair
    max_difference: dict[str, float] = field(default_factory=dict)

    def merge(self, other: PairsCompared) -> None:
        self.distinct += other.distinct
        self.messages += other.messages
        self.mismatched += other.mismatched
        self.first_mismatched = sorted(self.first_mismatched + other.first_mismatched)[:FIRST_IDS]
        larger(self.max_difference, other.max_difference)


def compare_pairs(store: FeatureStore, batch: pd.DataFrame) -> PairsCompared:
    """A chunk of distinct pairs through the serving path itself, in calls of a size one request could
    carry."""
    from sms_core import prediction

    texts = batch["text"].tolist()
    request = pd.concat(
        [
            pd.DataFrame(
                prediction.text_features(store, texts[start : start + REQUEST_CHUNK], TEXT_VIEW_FEATURES)
            )
            for start in range(0, len(texts), REQUEST_CHUNK)
        ],
        ignore_index=True,
    )
    differs, difference = mismatches(request, batch)
    wrong = batch[differs.to_numpy()]
    return PairsCompared(
        len(batch),
        int(batch["messages"].sum()),
        int(wrong["messages"].sum()),
        first_ids(wrong["first_id"]),
        dict(difference),
    )


def larger(into: dict[str, float], other: dict[str, float]) -> None:
    """Each column's larger difference of the two."""
    for column, value in other.items():
        into[column] = max(into.get(column, 0.0), value)


def read_online(store: FeatureStore, ids: list[int]) -> pd.DataFrame:
    """What Feast reads from Redis for `ids`, in calls of a size one request could carry."""
    rows = [{"message_id": i} for i in ids]
    read = store.get_online_features
    chunks = [
        read(features=VIEW_FEATURES, entity_rows=rows[start : start + REQUEST_CHUNK]).to_df()
        for start in range(0, len(rows), REQUEST_CHUNK)
    ]
    return pd.concat(chunks).set_index("message_id").loc[ids]


def still_online(store: FeatureStore, removed: np.ndarray) -> list[int]:
    """The removed messages Redis still holds features for."""
    if len(removed) == 0:
        return []
    online = read_online(store, [int(i) for i in removed])
    return [int(i) for i in online.index[online[list(FEATURE_NAMES)].notna().any(axis=1)]]
