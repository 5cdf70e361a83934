"""The text model's features: MessageHasher gives scikit-learn's HashingVectorizer matrix exactly, and the
lean scoring gives the pipeline's own predict_proba exactly."""

import pickle
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from sms_assets.defs.ingestion.dataset import parse_messages
from sms_core.model import pipelines as training
from sms_core.model.hashing import HASHED_FEATURES, MessageHasher, MessageTerms

# Every character Python counts as whitespace (the analyzers split on them), and texts built to catch
# an n-gram rule out: one-letter words, words at the 1-4 boundaries, a word repeated, case that
# lower-cases to more characters, digits and punctuation only, tabs and runs of spaces.
WHITESPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
HOSTILE = [
    "a",
    "ab",
    "abc",
    "abcd",
    "a b c d e",
    "win win win WIN Win",
    "İstanbul ΣΊΣΥΦΟΣ straße ﬁne",
    "!!! ??? 12 3456 £900",
    "\tcall\n\nnow  \r\n  free\x1c\x1dtext\x85x\u2028y\u3000z",
    f"one{WHITESPACE}two{WHITESPACE}",
    "emoji 😀😀 and \U0001d518\U0001d52b\U0001d526 and café",
    unicodedata.normalize("NFD", "café crème brûlée"),
    "x" * 2_000,
    " ".join(f"w{i}" for i in range(600)),
]


def vectorizer() -> HashingVectorizer:
    """The vectorizer of the text models saved before MessageHasher."""
    return HashingVectorizer(
        analyzer=MessageTerms(),  # type: ignore[arg-type]  # any callable, per its docs
        n_features=HASHED_FEATURES,
        alternate_sign=False,
        binary=True,
        norm="l2",
    )


def texts_of(dataset_path: Path) -> list[str]:
    return [message.text for message in parse_messages(dataset_path)] + HOSTILE


def test_the_hashed_rows_are_the_vectorizers_to_the_bit(dataset_path: Path) -> None:
    texts = texts_of(dataset_path)
    expected: Any = vectorizer().transform(texts)
    got: Any = MessageHasher().transform(training.model_input(["message_text"], {"message_text": texts}))
    assert type(got) is type(expected) and got.shape == expected.shape
    for part in ("indptr", "indices", "data"):
        assert getattr(got, part).dtype == getattr(expected, part).dtype, part
        assert np.array_equal(getattr(got, part), getattr(expected, part)), part


def test_a_word_seen_before_gives_the_same_columns() -> None:
    hasher = MessageHasher()
    inputs = training.model_input(["message_text"], {"message_text": HOSTILE})
    first: Any = hasher.transform(inputs)
    again: Any = hasher.transform(inputs)
    assert (first != again).nnz == 0


def test_the_lean_scores_are_the_pipelines_own(dataset_path: Path) -> None:
    texts = texts_of(dataset_path)
    inputs = training.model_input(["message_text"], {"message_text": texts})
    labels = np.array(["free" in text.lower() or "call" in text.lower() for text in texts])
    hyperparameters = {"sgd_alpha": 1e-4, "ham_weight": 1.5, "seed": 0}
    for pipeline in (
        training.text_pipeline(hyperparameters),
        # A model saved before MessageHasher: the vectorizer after the column picker.
        Pipeline(
            [
                ("text", FunctionTransformer(training.only_column)),
                ("terms", vectorizer()),
                ("classifier", training.text_pipeline(hyperparameters).steps[-1][1]),
            ]
        ),
    ):
        # One pass over the data is enough to learn weights to score with.
        model = training.fit(pipeline, lambda: iter([(inputs, labels)]), training.MIN_UPDATES)
        assert np.array_equal(training.spam_scores(model, inputs), model.predict_proba(inputs)[:, 1])


@pytest.mark.parametrize("kind", ["text", "statistics"])
def test_every_model_kind_scores_as_its_predict_proba(kind: str) -> None:
    rng = np.random.default_rng(0)
    if kind == "text":
        inputs = training.model_input(["message_text"], {"message_text": HOSTILE * 3})
        model = training.text_pipeline({"sgd_alpha": 1e-4, "ham_weight": 1.5, "seed": 0})
    else:
        inputs = rng.normal(size=(42, 2))
        model = training.statistics_pipeline({"regularization_c": 1.0, "seed": 0})
    labels = rng.random(len(inputs)) < 0.4
    model = training.fit(model, lambda: iter([(inputs, labels)]), len(inputs))
    assert np.array_equal(training.spam_scores(model, inputs), model.predict_proba(inputs)[:, 1])


def test_the_hasher_pickles_as_its_class_alone() -> None:
    assert pickle.loads(pickle.dumps(MessageHasher())).get_params() == {}
    assert b"MessageHasher" in pickle.dumps(MessageHasher()) and len(pickle.dumps(MessageHasher())) < 100
