"""The one definition of every SMS feature.

`compute_features` builds the batch feature table and scores a new message at request time, so training
and serving cannot drift apart. Each feature is a pure function of the message text.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURE_COLUMNS: tuple[str, ...] = (
    "text_length",
    "word_count",
    "avg_word_length",
    "digit_count",
    "exclamation_count",
    "uppercase_ratio",
)


def compute_features(text: pd.Series) -> pd.DataFrame:
    """The six features for each text, indexed like `text`.

    - text_length: characters in the text;
    - word_count: whitespace-separated tokens;
    - avg_word_length: characters of the tokens over their number (0 for a text with no token);
    - digit_count: characters that are decimal digits;
    - exclamation_count: `!` characters;
    - uppercase_ratio: uppercase letters over all letters (0 for a text with no letter).
    """
    counts = np.array([_counts(str(t)) for t in text], dtype=np.int64).reshape(-1, 7)
    length, words, word_chars, digits, exclamations, letters, upper = counts.T
    return pd.DataFrame(
        {
            "text_length": length,
            "word_count": words,
            "avg_word_length": _ratio(word_chars, words),
            "digit_count": digits,
            "exclamation_count": exclamations,
            "uppercase_ratio": _ratio(upper, letters),
        },
        index=text.index,
    )


def _counts(text: str) -> tuple[int, int, int, int, int, int, int]:
    """Length, words, characters in words, digits, `!`, letters, uppercase letters of one text."""
    words = text.split()
    digits = letters = upper = 0
    for char in text:
        if char.isdecimal():
            digits += 1
        elif char.isalpha():
            letters += 1
            upper += char.isupper()
    return len(text), len(words), sum(map(len, words)), digits, text.count("!"), letters, upper


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0."""
    out = np.zeros(len(numerator), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out
