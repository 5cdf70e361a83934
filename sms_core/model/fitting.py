"""A model trained and judged on the training table, read in chunks so memory does not grow with it.

The table holds every feature service's features (training_set), so the candidate and the served model
are scored on the very same held-out rows: the gate compares like with like.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from sklearn.pipeline import Pipeline

from sms_core.model import metrics
from sms_core.model import pipelines as training
from sms_core.model.store import ModelVersion
from sms_core.postgres import count_rows, query_chunks, table_columns

CHUNK_ROWS = 50_000
Connect = Callable[[], AbstractContextManager[psycopg.Connection]]


@dataclass(frozen=True)
class Trained:
    model: Pipeline
    metrics: dict[str, Any]
    rows: int
    test_message_ids: list[int]
    # The served model's metrics on the same held-out rows, or why there are none.
    reference: dict[str, Any]

    @property
    def test_rows(self) -> int:
        return len(self.test_message_ids)


def train_and_evaluate(
    connect: Connect,
    table: str,
    service: str,
    features: Sequence[str],
    hyperparameters: Mapping[str, Any],
    served: ModelVersion | None,
) -> Trained:
    """Train the model `service` calls for on the table's training rows, score it and `served` on
    the held-out rows (`test_fraction`, `seed` of the hyper-parameters)."""
    if service not in training.PIPELINES:
        known = sorted(training.PIPELINES)
        raise ValueError(f"no model kind for feature service {service!r}; known: {known}")
    fraction, seed = hyperparameters["test_fraction"], hyperparameters["seed"]
    with connect() as conn:
        rows = count_rows(conn, table)
        columns = set(table_columns(conn, table))
    served_features: list[str] = list(served.manifest["features"]) if served else []
    reference: dict[str, Any] = {"version": served.version if served else None}
    if served and not set(served_features) <= columns:
        reference["note"] = f"the training set lacks {sorted(set(served_features) - columns)}"
        served = None
    read: list[str] = list(dict.fromkeys([*features, *(served_features if served else [])]))

    def chunks(held_out: bool) -> Iterator[pd.DataFrame]:
        query = f"SELECT message_id, label, text_group, {', '.join(read)} FROM {table} ORDER BY message_id"
        with connect() as conn:
            for chunk in query_chunks(conn, query, CHUNK_ROWS):
                _refuse_missing(table, chunk, read)
                mask = training.held_out(chunk["text_group"], fraction, seed)
                yield chunk[mask if held_out else ~mask]

    def training_chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for chunk in chunks(held_out=False):
            yield training.model_input(features, chunk), (chunk["label"] == "spam").to_numpy()

    model = training.fit(training.PIPELINES[service](hyperparameters), training_chunks, rows)
    ids, labels, scores, served_scores = [], [], [], []
    for chunk in chunks(held_out=True):
        ids.append(chunk["message_id"].to_numpy())
        labels.append((chunk["label"] == "spam").to_numpy())
        scores.append(training.spam_scores(model, training.model_input(features, chunk)))
        if served:
            served_input = training.model_input(served_features, chunk)
            served_scores.append(training.spam_scores(served.model, served_input))
    is_spam = np.concatenate(labels) if labels else np.array([], dtype=bool)
    if not is_spam.any() or is_spam.all():
        raise ValueError(
            f"{table}: the held-out rows need both spam and ham to judge a model ({len(is_spam)} rows)"
        )
    if served:
        reference["metrics"] = _summary(metrics.evaluate(is_spam, np.concatenate(served_scores)))
    return Trained(
        model=model,
        metrics=metrics.evaluate(is_spam, np.concatenate(scores)),
        rows=rows,
        test_message_ids=sorted(int(i) for i in np.concatenate(ids)),
        reference=reference,
    )


def _summary(values: dict[str, Any]) -> dict[str, Any]:
    return {name: values[name] for name in (*metrics.SUMMARY, "confusion_matrix")}


def _refuse_missing(table: str, chunk: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = chunk[list(columns)].isna().any(axis=1)
    if missing.any():
        raise ValueError(
            f"{table} has rows without features (first message_id "
            f"{int(chunk.loc[missing, 'message_id'].iloc[0])}): re-materialize sms_features and training_set"
        )
