"""The spam model: a split that keeps duplicate texts together, a scaled logistic regression, metrics."""

from __future__ import annotations

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
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    test: pd.DataFrame


def split_by_text(frame: pd.DataFrame, group: str, test_fraction: float, seed: int) -> Split:
    """A stratified train/test split in which rows sharing `group` (a text) land on one side.

    Duplicate texts on both sides would let the model be scored on messages it was trained on.
    """
    folds = max(2, round(1 / test_fraction))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    train_idx, test_idx = next(splitter.split(frame, frame["label"], groups=frame[group]))
    return Split(frame.iloc[train_idx], frame.iloc[test_idx])


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
