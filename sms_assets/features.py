"""The one definition of every SMS feature.

`compute_features` builds the batch feature table and scores a new message at request time, so training
and serving cannot drift apart. Each feature is a pure function of the message text.
"""

from __future__ import annotations

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
    text = text.astype("string")
    words = text.str.split()
    word_count = words.str.len().astype("int64")
    word_chars = words.map(lambda tokens: sum(map(len, tokens))).astype("int64")
    counts = pd.DataFrame(
        [_char_counts(t) for t in text], columns=["digits", "letters", "upper"], index=text.index
    )
    return pd.DataFrame(
        {
            "text_length": text.str.len().astype("int64"),
            "word_count": word_count,
            "avg_word_length": (word_chars / word_count.where(word_count > 0)).fillna(0.0),
            "digit_count": counts["digits"],
            "exclamation_count": text.str.count("!").astype("int64"),
            "uppercase_ratio": (counts["upper"] / counts["letters"].where(counts["letters"] > 0)).fillna(0.0),
        },
        index=text.index,
    )


def _char_counts(text: str) -> tuple[int, int, int]:
    """Decimal digits, letters and uppercase letters in one pass over the text."""
    digits = letters = upper = 0
    for char in text:
        if char.isdecimal():
            digits += 1
        elif char.isalpha():
            letters += 1
            upper += char.isupper()
    return digits, letters, upper
