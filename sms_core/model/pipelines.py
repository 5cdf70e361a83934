"""The spam models: a split that keeps duplicate texts together, the two model kinds, bounded training.

A model is one scikit-learn `Pipeline` from the features its feature service serves to a spam
probability; training, the gate, the prediction API and the checks all call that same object, on the
input `model_input` builds. Two kinds, chosen by the service a model is trained on:

- `sms_service` (the text statistics): StandardScaler + LogisticRegression;
- `sms_service_v2` (the text): hashed word 1-2-grams and character 1-4-grams (`hashing.MessageHasher`)
  + a linear model trained by stochastic gradient descent, chunk by chunk (`partial_fit`), so memory
  does not grow with the data.

This module is loaded by the prediction API too (it unpickles the pipelines' pieces): no dagster import
here. Models saved before `MessageHasher` hold a `HashingVectorizer` over `MessageTerms` after
`only_column`; both names stay importable here, and those models score as they did.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.extmath import safe_sparse_dot

from sms_core.features.schema import FEATURES
from sms_core.model.hashing import HASHED_FEATURES, MessageHasher, MessageTerms, linear_decisions

__all__ = ["HASHED_FEATURES", "MessageHasher", "MessageTerms"]  # MessageTerms: in models saved before

CLASSES = np.array([False, True])
# Stochastic gradient descent needs about this many updates: a small training set is passed over
# several times, a large one once, streamed chunk by chunk. Up to KEEP_ROWS rows, the transformed
# chunks are kept in memory between passes instead of being read and transformed again.
MIN_UPDATES = 250_000
MAX_EPOCHS = 50
KEEP_ROWS = 50_000


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    test: pd.DataFrame


def split_by_text(frame: pd.DataFrame, group: str, test_fraction: float, seed: int) -> Split:
    """A train/test split in which rows sharing `group` (a text's hash) land on one side.

    Duplicate texts on both sides would let the model be scored on messages it was trained on. Each
    group's side is decided by a hash of the seed and the group alone, not by its place among the
    others: an edited, added or removed message moves no other message across the split, and the
    split of a chunk is the split of the whole, so the data can be read in chunks.
    """
    test = held_out(frame[group], test_fraction, seed)
    return Split(frame[~test], frame[test])


def held_out(groups: pd.Series, test_fraction: float, seed: int) -> np.ndarray:
    """Per row, whether its group is held out for testing."""
    return (groups.map(lambda g: _unit_hash(f"{seed}:{g}")) < test_fraction).to_numpy()


def _unit_hash(text: str) -> float:
    """A number in [0, 1) that depends on `text` only."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def model_input(features: Sequence[str], columns: Mapping[str, Any] | pd.DataFrame) -> np.ndarray:
    """The (rows, features) matrix a model takes: its features' columns in its training order.

    `columns` maps each name to its values (a DataFrame, or a Feast response's dict). Numbers give a
    float64 matrix; a text feature makes it an object matrix.
    """
    numeric = all(FEATURES[name].numeric for name in features)
    dtype = np.float64 if numeric else object
    return np.column_stack([np.asarray(columns[name], dtype=dtype) for name in features])


def only_column(matrix: np.ndarray) -> np.ndarray:
    """The one column of a single-feature input matrix (the text, for the vectorizer)."""
    return matrix[:, 0]


def statistics_pipeline(hyperparameters: Mapping[str, Any]) -> Pipeline:
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(
            C=hyperparameters["regularization_c"], max_iter=1000, random_state=hyperparameters["seed"]
        ),
    )


def text_pipeline(hyperparameters: Mapping[str, Any]) -> Pipeline:
    return Pipeline(
        [
            ("terms", MessageHasher()),
            (
                "classifier",
                # modified_huber gives probabilities; averaging steadies what one pass learns. A
                # blocked ham costs `ham_weight` times a missed spam: a lost message is the worse error.
                SGDClassifier(
                    loss="modified_huber",
                    alpha=hyperparameters["sgd_alpha"],
                    average=True,
                    class_weight={False: hyperparameters["ham_weight"], True: 1.0},
                    random_state=hyperparameters["seed"],
                ),
            ),
        ]
    )


# The model kind each feature service's features call for.
PIPELINES: dict[str, Callable[[Mapping[str, Any]], Pipeline]] = {
    "sms_service": statistics_pipeline,
    "sms_service_v2": text_pipeline,
}


def epochs_for(rows: int) -> int:
    return max(1, min(MAX_EPOCHS, math.ceil(MIN_UPDATES / max(rows, 1))))


def fit(
    pipeline: Pipeline, chunks: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]], rows: int
) -> Pipeline:
    """Train `pipeline` on the (input, is_spam) chunks `chunks()` yields, about `rows` in all.

    A final step with `partial_fit` learns chunk by chunk: every step before it is stateless, so each
    chunk is transformed on its own and memory is bounded by a chunk (or by KEEP_ROWS rows, kept
    between the passes over a small set). Any other pipeline is fitted on all rows at once.
    """
    classifier = pipeline.steps[-1][1]
    if not hasattr(classifier, "partial_fit"):
        inputs, labels = zip(*chunks(), strict=True)
        return pipeline.fit(np.concatenate(inputs), np.concatenate(labels))
    transform = pipeline[:-1]
    epochs = epochs_for(rows)
    keep = epochs > 1 and rows <= KEEP_ROWS
    kept: list[tuple[Any, np.ndarray]] = []
    for epoch in range(epochs):
        source: Iterable[tuple[Any, np.ndarray]] = (
            kept if kept else ((_transform(transform, x), y) for x, y in chunks())
        )
        for x, y in source:
            classifier.partial_fit(x, y, classes=CLASSES)
            if keep and not epoch:
                kept.append((x, y))
    return pipeline


def _transform(transform: Pipeline, inputs: np.ndarray) -> Any:
    """`transform.transform(inputs)`, each distinct text transformed once."""
    distinct, inverse = _distinct_texts(inputs)
    return (
        transform.transform(distinct)[inverse] if len(distinct) < len(inputs) else transform.transform(inputs)
    )


def _distinct_texts(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a one-text input, and each row's index among them; other inputs as they
    are. Texts repeat (a campaign sends one text to many), and turning a text into n-grams is most of
    the cost of training and scoring."""
    if inputs.dtype != object or inputs.shape[1] != 1 or len(inputs) < 2:
        return inputs, np.arange(len(inputs))
    codes, distinct = pd.factorize(inputs[:, 0])
    return np.asarray(distinct, dtype=object)[:, None], codes


def spam_scores(model: Pipeline, inputs: np.ndarray) -> np.ndarray:
    """Each row's spam probability: the one scoring call of training, the gate, the API and checks.

    The steps run one after the other, as `Pipeline.predict_proba` runs them, without the pipeline's
    own per-call checks. The inputs come from Feast (texts, and finite numbers the feature code
    computed): scikit-learn's checks of parameters and of non-finite values are skipped too. The text
    model (`MessageHasher`, then a linear classifier scored as below) is scored on each text's columns
    directly (`hashing.linear_decisions`), without a sparse matrix between the two.
    """
    distinct, inverse = _distinct_texts(inputs)
    linear = _hashed_linear(model)
    if linear is not None:
        scores = _probability(linear_decisions(distinct[:, 0], *linear))
    else:
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            features = distinct
            for _, step in model.steps[:-1]:
                features = step.transform(features)
            scores = _spam_probability(model.steps[-1][1], features)
    return scores if len(distinct) == len(inputs) else scores[inverse]


def _binary_modified_huber(classifier: Any) -> bool:
    fitted: Any = classifier  # its fitted attributes (classes_) are not in scikit-learn's types
    return (
        isinstance(classifier, SGDClassifier)
        and classifier.loss == "modified_huber"
        and len(fitted.classes_) == 2
    )


def _hashed_linear(model: Pipeline) -> tuple[np.ndarray, float] | None:
    """The weights and intercept of a `MessageHasher` + binary modified-Huber pipeline; None for any
    other."""
    steps = [step for _, step in model.steps]
    if len(steps) != 2 or not isinstance(steps[0], MessageHasher) or not _binary_modified_huber(steps[1]):
        return None
    fitted: Any = steps[1]
    return fitted.coef_[0], float(fitted.intercept_[0])


def _probability(decision: np.ndarray) -> np.ndarray:
    """The modified-Huber probability of spam, as its `predict_proba` gives it: (clip(d, -1, 1) + 1) / 2."""
    return (np.clip(decision, -1.0, 1.0) + 1.0) / 2.0


def _spam_probability(classifier: Any, features: Any) -> np.ndarray:
    """The classifier's probability of spam (class True).

    The text model's classifier (binary, modified Huber loss) is scored the way its `predict_proba`
    scores it on its decision function's product: the same numbers, without checking its input first,
    which for one message costs forty times the product (the input is the pipeline's own transform).
    Any other classifier answers through `predict_proba`.
    """
    if _binary_modified_huber(classifier):
        fitted: Any = classifier
        decision = safe_sparse_dot(features, fitted.coef_.T, dense_output=True).ravel() + fitted.intercept_
        return _probability(decision)
    return classifier.predict_proba(features)[:, 1]
