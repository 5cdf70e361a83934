"""How well each served model version did on the answers whose true label has come in since.

The figures are scikit-learn's precision, recall and F1 of the spam class, on the served labels, beside
the same figures on the version's held-out messages (its manifest). A version fails when its live F1 is
more than MARGIN below its held-out F1, judged once it has MIN_LABELLED labelled answers, MIN_EACH of
them spam and MIN_EACH ham. The margin is about two and a half standard errors of F1 at that size
(bootstrap on the held-out messages: 0.019 at 1,394 messages, so about 0.05 at some 300 with 40 spam):
noise alone rarely crosses it, while a model that misses one spam in five more than it did does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

MARGIN = 0.05
MIN_LABELLED = 100
MIN_EACH = 10


@dataclass(frozen=True)
class VersionQuality:
    version: str
    labelled: int
    spam: int
    precision: float
    recall: float
    f1: float
    held_out_f1: float | None  # None: the version's manifest is gone
    judged: bool  # enough labels of each kind to judge

    @property
    def dropped(self) -> bool:
        return self.judged and self.held_out_f1 is not None and self.f1 < self.held_out_f1 - MARGIN

    def as_row(self) -> dict[str, Any]:
        return {
            "model version": self.version,
            "labelled answers": self.labelled,
            "spam": self.spam,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "F1": round(self.f1, 4),
            "held-out F1": round(self.held_out_f1, 4) if self.held_out_f1 is not None else None,
            "verdict": "dropped" if self.dropped else "ok" if self.judged else "too few labels",
        }


def by_version(
    labelled: pd.DataFrame, held_out: Callable[[str], Mapping[str, Any] | None]
) -> list[VersionQuality]:
    """Per model version, its live figures: `labelled` has model_version, served_label and true_label
    ("spam" or "ham"); `held_out(version)` is the manifest's metrics, or None."""
    # Imported here: the Dagster definitions name this module's thresholds, and load without sklearn.
    from sklearn.metrics import f1_score, precision_score, recall_score

    found = []
    for version, rows in labelled.groupby("model_version", sort=True):
        truth = (rows["true_label"] == "spam").to_numpy()
        served = (rows["served_label"] == "spam").to_numpy()
        metrics = held_out(str(version))
        spam = int(truth.sum())
        # No spam served (or none true) makes a figure 0, not a warning: scikit-learn's stubs type
        # zero_division as a string, its code takes the number.
        zero: Any = 0
        found.append(
            VersionQuality(
                version=str(version),
                labelled=len(rows),
                spam=spam,
                precision=float(precision_score(truth, served, zero_division=zero)),
                recall=float(recall_score(truth, served, zero_division=zero)),
                f1=float(f1_score(truth, served, zero_division=zero)),
                held_out_f1=float(metrics["f1"]) if metrics and "f1" in metrics else None,
                judged=len(rows) >= MIN_LABELLED and min(spam, len(rows) - spam) >= MIN_EACH,
            )
        )
    return found
