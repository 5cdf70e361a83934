"""How far served traffic is from the training data of the model that served it: one statistic per
feature type, with warn and error thresholds.

- A number (a numeric feature, the spam probability): the Jensen-Shannon distance (scipy, base 2: 0
  for the same distribution, 1 for disjoint ones) between the shares of reference and served values in
  shared bins. A feature's bins are the reference's deciles, the outer two open-ended; the score's are
  five equal bins over [0, 1]. Both sides are binned on the same edges (Feast's own histograms are not:
  each window has its own min and max).
- A text: the same distance on its length in characters (known for every answer, stored or not), and,
  where texts are stored, the share of its word 1-2-grams never seen in the reference, above the share a
  held-out message of the training data shows.

The thresholds come from replays scored against the v2 model of this project's data (docs/served-log.md).
The dataset's 500 held-back messages, which no model trained on: score 0.105, length 0.057, no unseen
n-grams above the held-out share; over 200 random draws of 200 of them the 99th percentiles are 0.145
and 0.138. Only spam: score 0.82, length 0.56. Only ham: 0.29 and 0.13. Texts of another kind (Python's
docstrings): score 0.30, length 0.22, unseen n-grams +0.33. The six text statistics of the v1 model:
the held-back replay 0.06 at most, the 99th percentiles of its 200-draws 0.15 at most, only spam 0.31 to
0.68. Finer score bins make the held-back replay
look drifted: a few scores in the middle, where the reference holds a little, weigh heavily.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

WARN_DISTANCE = 0.20
ERROR_DISTANCE = 0.35
WARN_UNSEEN = 0.10  # the share of unseen n-grams above the held-out share
ERROR_UNSEEN = 0.20
MIN_ANSWERS = 200  # fewer, and the distances are mostly sampling noise
DECILES = np.linspace(0.0, 1.0, 11)
SCORE_EDGES = np.linspace(0.0, 1.0, 6)


@dataclass(frozen=True)
class Statistic:
    """One drift statistic of one served feature (or of the score)."""

    name: str  # the feature, "spam_probability", "<text feature> length" or "<text feature> unseen n-grams"
    statistic: str  # "jensen_shannon" or "unseen_share_increase"
    value: float
    edges: tuple[float, ...] = ()  # the shared bins (jensen_shannon only), for the picture
    reference: tuple[float, ...] = ()  # each bin's share of reference values
    served: tuple[float, ...] = ()  # each bin's share of served values

    @property
    def severity(self) -> str:
        warn, error = (
            (WARN_DISTANCE, ERROR_DISTANCE)
            if self.statistic == "jensen_shannon"
            else (WARN_UNSEEN, ERROR_UNSEEN)
        )
        return "error" if self.value > error else "warn" if self.value > warn else "ok"


def quantile_edges(reference: np.ndarray) -> np.ndarray:
    """The reference's deciles as bin edges, duplicates merged, the outer bins open-ended."""
    inner = np.unique(np.quantile(reference, DECILES[1:-1]))
    return np.concatenate([[-np.inf], inner, [np.inf]])


def shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each bin's share of the values, the outer bins open-ended; a value on an inner edge falls in the
    bin above it."""
    counts = np.bincount(np.searchsorted(edges[1:-1], values, side="right"), minlength=len(edges) - 1)
    return counts / max(int(counts.sum()), 1)


def distance(
    name: str, reference: np.ndarray, served: np.ndarray, edges: np.ndarray | None = None
) -> Statistic:
    """The Jensen-Shannon distance between reference and served values on shared bins (by default the
    reference's deciles)."""
    # Imported here: the Dagster definitions name this module's thresholds, and load without scipy.
    from scipy.spatial.distance import jensenshannon

    reference, served = _finite(reference), _finite(served)
    if not len(reference) or not len(served):
        raise ValueError(f"{name}: no values to compare ({len(reference)} reference, {len(served)} served)")
    # Only the inner edges bin (shares): a value beyond the outer ones still counts, in an outer bin.
    edges = quantile_edges(reference) if edges is None else np.asarray(edges, dtype=np.float64)
    p, q = shares(reference, edges), shares(served, edges)
    value = float(jensenshannon(p, q, base=2))
    shown = tuple(float(e) for e in edges)
    return Statistic(name, "jensen_shannon", value, shown, tuple(p.tolist()), tuple(q.tolist()))


def score_distance(reference: np.ndarray, served: np.ndarray) -> Statistic:
    return distance("spam_probability", reference, served, SCORE_EDGES)


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]


def word_ngrams(texts: Sequence[str]) -> list[list[str]]:
    """Each text's word 1-2-grams, lower-cased, as scikit-learn's vectorizers cut them."""
    from sklearn.feature_extraction.text import CountVectorizer

    analyze = CountVectorizer(ngram_range=(1, 2)).build_analyzer()
    return [analyze(text) for text in texts]


def unseen_share(vocabulary: set[str], grams: Sequence[list[str]]) -> float:
    """The share of the n-grams that the vocabulary lacks (0 when there are none)."""
    total = sum(len(g) for g in grams)
    unseen = sum(1 for g in grams for gram in g if gram not in vocabulary)
    return unseen / total if total else 0.0


def unseen_increase(
    name: str, training: Sequence[str], held_out: Sequence[str], served: Sequence[str]
) -> Statistic:
    """How much more of the served texts' n-grams the training texts never showed, than of the held-out
    texts': new traffic always brings some new words, so the held-out share is the baseline."""
    vocabulary = {gram for grams in word_ngrams(training) for gram in grams}
    baseline = unseen_share(vocabulary, word_ngrams(held_out))
    value = unseen_share(vocabulary, word_ngrams(served)) - baseline
    return Statistic(f"{name} unseen n-grams", "unseen_share_increase", max(value, 0.0))


def worst(statistics: Sequence[Statistic]) -> str:
    """The worst severity among the statistics: "error", "warn" or "ok"."""
    found = {s.severity for s in statistics}
    return "error" if "error" in found else "warn" if "warn" in found else "ok"
