"""The split keeps duplicate texts on one side; the model and its metrics on a separable toy set."""

import numpy as np
import pandas as pd
import pytest

from sms_assets.defs.training import model as training


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


def test_train_and_evaluate() -> None:
    frame = toy_frame()
    split = training.split_by_text(frame, "text_group", 0.25, seed=3)
    features = ["signal", "noise"]
    model = training.train(split.train[features], split.train["label"] == "spam", c=1.0, seed=3)
    metrics = training.evaluate(model, split.test[features], split.test["label"] == "spam")
    assert metrics["roc_auc"] > 0.95
    assert metrics["f1"] > 0.8
    matrix = metrics["confusion_matrix"]
    assert sum(matrix.values()) == len(split.test)
    assert matrix["tp"] + matrix["fn"] == int((split.test["label"] == "spam").sum())
    assert metrics["precision"] == pytest.approx(matrix["tp"] / (matrix["tp"] + matrix["fp"]))
