"""The split keeps duplicate texts on one side; the model and its metrics on a separable toy set."""

import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pytest

from sms_core.model import metrics
from sms_core.model import pipelines as training


def toy_frame(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    is_spam = rng.random(rows) < 0.25
    frame = pd.DataFrame(
        {
            "signal": np.where(is_spam, 3.0, 0.0) + rng.normal(0, 0.5, rows),
            "noise": rng.normal(0, 1, rows),
            "label": np.where(is_spam, "spam", "ham"),
        }
    )
    # Every text appears 1 to 4 times, as duplicates do in the real dataset.
    frame["text_group"] = (np.arange(rows) // rng.integers(1, 5)).astype(str)
    return frame


def test_duplicates_stay_on_one_side() -> None:
    frame = toy_frame()
    split = training.split_by_text(frame, "text_group", test_fraction=0.25, seed=1)
    assert set(split.train["text_group"]).isdisjoint(split.test["text_group"])
    assert len(split.train) + len(split.test) == len(frame)
    assert 0.15 < len(split.test) / len(frame) < 0.35
    # Both sides hold spam.
    assert (split.test["label"] == "spam").any()
    assert (split.train["label"] == "spam").any()


def test_split_is_deterministic() -> None:
    frame = toy_frame()
    first = training.split_by_text(frame, "text_group", 0.25, seed=7)
    again = training.split_by_text(frame, "text_group", 0.25, seed=7)
    assert first.test.index.equals(again.test.index)


def test_an_edited_text_moves_no_other_message_across_the_split() -> None:
    frame = toy_frame()
    before = training.split_by_text(frame, "text_group", 0.25, seed=7)
    edited = frame.copy()
    edited.loc[0, "text_group"] = "an edited text"
    after = training.split_by_text(edited, "text_group", 0.25, seed=7)
    others = frame.index.drop([0])
    assert set(before.test.index).intersection(others) == set(after.test.index).intersection(others)


def test_statistics_model_and_its_metrics() -> None:
    frame = toy_frame()
    split = training.split_by_text(frame, "text_group", 0.25, seed=3)
    features = ["signal", "noise"]
    pipeline = training.statistics_pipeline({"regularization_c": 1.0, "seed": 3})

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        yield split.train[features].to_numpy(), (split.train["label"] == "spam").to_numpy()

    model = training.fit(pipeline, chunks, len(split.train))
    is_spam = (split.test["label"] == "spam").to_numpy()
    values = metrics.evaluate(is_spam, training.spam_scores(model, split.test[features].to_numpy()))
    assert values["roc_auc"] > 0.95
    assert values["f1"] > 0.8
    matrix = values["confusion_matrix"]
    assert sum(matrix.values()) == len(split.test)
    assert matrix["tp"] + matrix["fn"] == int(is_spam.sum())
    assert values["precision"] == pytest.approx(matrix["tp"] / (matrix["tp"] + matrix["fp"]))
    assert values["spam_caught"] == pytest.approx(matrix["tp"] / (matrix["tp"] + matrix["fn"]))
    assert values["ham_blocked"] == pytest.approx(matrix["fp"] / (matrix["fp"] + matrix["tn"]))
    curve = values["pr_curve"]
    assert len(curve["recall"]) == len(curve["precision"]) <= metrics.CURVE_POINTS
    assert metrics.pr_curve_markdown(values, "toy").startswith(
        "![precision-recall curve](data:image/svg+xml;base64,"
    )


SPAM_WORDS = ["WIN cash now", "free prize call 0800", "claim your reward txt", "URGENT! you won"]
HAM_WORDS = ["see you at lunch", "ok call me later", "running late sorry", "what time is dinner"]


def text_chunks(rows: int, chunk: int, seed: int) -> Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    is_spam = rng.random(rows) < 0.3
    texts = [f"{rng.choice(SPAM_WORDS if s else HAM_WORDS)} {i}" for i, s in enumerate(is_spam)]
    inputs = training.model_input(["message_text"], {"message_text": texts})

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, rows, chunk):
            yield inputs[start : start + chunk], is_spam[start : start + chunk]

    return chunks


def test_text_model_learns_chunk_by_chunk() -> None:
    pipeline = training.text_pipeline({"sgd_alpha": 1e-4, "ham_weight": 1.5, "seed": 0})
    model = training.fit(pipeline, text_chunks(600, 100, seed=0), 600)
    inputs = training.model_input(
        ["message_text"], {"message_text": ["WIN cash now 9", "see you at lunch 9"]}
    )
    spam, ham = training.spam_scores(model, inputs)
    assert spam > 0.5 > ham


def test_small_training_sets_are_passed_over_several_times_large_ones_once() -> None:
    assert training.epochs_for(1_000) == training.MAX_EPOCHS
    assert training.epochs_for(50_000) == 5
    assert training.epochs_for(training.MIN_UPDATES) == 1
    assert training.epochs_for(10_000_000) == 1
    calls = []

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        calls.append(1)
        yield from text_chunks(300, 100, seed=1)()

    training.fit(training.text_pipeline({"sgd_alpha": 1e-4, "ham_weight": 1.5, "seed": 0}), chunks, 300)
    # The small set is read once and its transformed chunks are kept for the later passes.
    assert len(calls) == 1


def test_the_same_data_gives_the_same_model_bytes() -> None:
    def trained() -> bytes:
        model = training.fit(
            training.text_pipeline({"sgd_alpha": 1e-4, "ham_weight": 1.5, "seed": 0}),
            text_chunks(300, 100, 2),
            300,
        )
        return pickle.dumps(model)

    assert trained() == trained()


def test_model_input_is_numbers_or_text_by_the_features_types() -> None:
    numbers = training.model_input(
        ["text_length", "word_count"], {"text_length": [3, 4], "word_count": [1, 2]}
    )
    assert numbers.dtype == np.float64 and numbers.shape == (2, 2)
    texts = training.model_input(["message_text"], {"message_text": ["a", "b"]})
    assert texts.dtype == object and texts.shape == (2, 1)


def test_the_same_training_gives_the_same_bytes_in_another_process() -> None:
    # A model's version is the hash of its bytes: a retrain on the same data, in the next run's
    # process, must give the same version.
    code = (
        "import hashlib, pickle, numpy as np; from sms_core.model import pipelines as m; "
        "x = m.model_input(['message_text'], {'message_text': ['win cash now', 'see you soon'] * 20}); "
        "y = np.array([True, False] * 20); "
        "p = m.fit(m.text_pipeline({'sgd_alpha': 1e-4, 'ham_weight': 1.5, 'seed': 0}), "
        "lambda: iter([(x, y)]), 40); print(hashlib.sha256(pickle.dumps(p)).hexdigest())"
    )
    digests = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert len(digests) == 1 and len(digests.pop().strip()) == 64
