"""The feature definitions on hand-made texts."""

import pandas as pd
import pytest

from sms_core.features.compute import compute_features, features_of
from sms_core.features.schema import FEATURE_NAMES, FEATURES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Hello WORLD!! 123",
            {
                "text_length": 17,
                "word_count": 3,
                "avg_word_length": 5.0,
                "digit_count": 3,
                "exclamation_count": 2,
                "uppercase_ratio": 6 / 10,
            },
        ),
        (
            "ok",
            {
                "text_length": 2,
                "word_count": 1,
                "avg_word_length": 2.0,
                "digit_count": 0,
                "exclamation_count": 0,
                "uppercase_ratio": 0.0,
            },
        ),
        # No letter and no word: the ratios are 0, not NaN.
        (
            "   ",
            {
                "text_length": 3,
                "word_count": 0,
                "avg_word_length": 0.0,
                "digit_count": 0,
                "exclamation_count": 0,
                "uppercase_ratio": 0.0,
            },
        ),
        (
            "0800 123 456",
            {
                "text_length": 12,
                "word_count": 3,
                "avg_word_length": 10 / 3,
                "digit_count": 10,
                "exclamation_count": 0,
                "uppercase_ratio": 0.0,
            },
        ),
        # Tabs and newlines separate words; non-ASCII letters count as letters.
        (
            "ÀB\tc\n!",
            {
                "text_length": 6,
                "word_count": 3,
                "avg_word_length": 4 / 3,
                "digit_count": 0,
                "exclamation_count": 1,
                "uppercase_ratio": 2 / 3,
            },
        ),
        # A vulgar fraction is numeric but neither a decimal digit nor a letter.
        (
            "½ OK",
            {
                "text_length": 4,
                "word_count": 2,
                "avg_word_length": 1.5,
                "digit_count": 0,
                "exclamation_count": 0,
                "uppercase_ratio": 1.0,
            },
        ),
    ],
)
def test_features_of_one_text(text: str, expected: dict[str, float | str]) -> None:
    expected = {**expected, "message_text": text}  # the text itself is a feature too
    row = compute_features(pd.Series([text])).iloc[0].to_dict()
    assert row == pytest.approx(expected)
    # The request-time path computes the same values, named in the declared order.
    one = features_of(text)
    assert tuple(one) == FEATURE_NAMES
    assert one == pytest.approx(expected)


def test_columns_order_and_types() -> None:
    frame = compute_features(pd.Series(["a b", "C!"], index=[10, 20]))
    assert tuple(frame.columns) == FEATURE_NAMES
    assert list(frame.index) == [10, 20]
    integer_columns = ["text_length", "word_count", "digit_count", "exclamation_count"]
    assert all(frame[c].dtype == "int64" for c in integer_columns)
    assert all(frame[c].dtype == "float64" for c in ["avg_word_length", "uppercase_ratio"])
    # The declaration's dtypes are the ones computed.
    assert {c: str(frame[c].dtype) for c in frame.columns} == {n: t.dtype for n, t in FEATURES.items()}


def test_rows_do_not_depend_on_their_batch() -> None:
    texts = pd.Series(["Win £1000 NOW!!!", "see you at 5", "", "ok"])
    batch = compute_features(texts)
    one_by_one = pd.concat([compute_features(texts.iloc[[i]]) for i in range(len(texts))])
    pd.testing.assert_frame_equal(batch, one_by_one)


def test_no_text_gives_an_empty_typed_table() -> None:
    features = compute_features(pd.Series([], dtype="string"))
    assert list(features.columns) == list(FEATURE_NAMES)
    assert features.empty
    assert [str(t) for t in features.dtypes] == [
        *["int64", "int64", "float64", "int64", "int64", "float64"],
        "object",
    ]
