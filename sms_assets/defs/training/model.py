"""The spam model: a split that keeps duplicate texts together, a scaled logistic regression, metrics."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    test: pd.DataFrame


def split_by_text(frame: pd.DataFrame, group: str, test_fraction: float, seed: int) -> Split:
    """A train/test split in which rows sharing `group` (a text's hash) land on one side.

    Duplicate texts on both sides would let the model be scored on messages it was trained on. Each
    group's side is decided by a hash of the seed and the group alone, not by its place among the
    others: an edited, added or removed message moves no other message across the split, so a
    candidate is judged on nearly the same held-out messages as the model it would replace.
    """
    draw = frame[group].map(lambda g: _unit_hash(f"{seed}:{g}"))
    test = (draw < test_fraction).to_numpy()
    return Split(frame[~test], frame[test])


def _unit_hash(text: str) -> float:
    """A number in [0, 1) that depends on `text` only."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def train(features: pd.DataFrame, is_spam: pd.Series, c: float, seed: int) -> Pipeline:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000, random_state=seed))
    model.fit(features.to_numpy(dtype=np.float64), is_spam.to_numpy())
    return model


def evaluate(model: Pipeline, features: pd.DataFrame, is_spam: pd.Series) -> dict[str, Any]:
    """Precision, recall, F1 and ROC AUC for spam, and the confusion matrix, on held-out rows."""
    x = features.to_numpy(dtype=np.float64)
    y = is_spam.to_numpy()
    predicted = model.predict(x)
    scores = model.predict_proba(x)[:, 1]
    (tn, fp), (fn, tp) = confusion_matrix(y, predicted, labels=[False, True])
    return {
        "precision": float(precision_score(y, predicted)),
        "recall": float(recall_score(y, predicted)),
        "f1": float(f1_score(y, predicted)),
        "roc_auc": float(roc_auc_score(y, scores)),
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }
