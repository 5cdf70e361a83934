"""The text model's features: a message's word and character n-grams, hashed into HASHED_FEATURES columns.

`MessageHasher` gives the matrix scikit-learn's `HashingVectorizer(analyzer=MessageTerms(),
n_features=HASHED_FEATURES, alternate_sign=False, binary=True, norm="l2")` gives, column for column and
value for value (tests/unit/test_hashing.py compares them on every message of the dataset), for about a
tenth of its cost per message. That vectorizer hashes every term of a text one by one, repeats included
(a short message has some 600 terms, a third of them repeats), builds a sparse matrix, sorts it, sums
its duplicates and checks it again to normalize it. Here, instead:

- the columns of a word's character n-grams are worked out once per distinct word and kept
  (`_word_columns`, a bounded memo): they depend on the word alone, so nothing kept can go stale; so
  are a text's columns (`columns`, a bounded memo of the texts used last): a message scored again costs
  a look-up, while its text still comes from Feast at every request;
- each term is hashed as `FeatureHasher` hashes it (`_column`), by scikit-learn's own MurmurHash3;
- a row holds each distinct column once, at 1 / sqrt(count): binary and of unit length, as the
  vectorizer's `binary=True, norm="l2"` makes it.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.utils import murmurhash3_32

HASHED_FEATURES = 2**19
# Distinct words whose character n-gram columns are kept: the SMS Spam Collection has about 9,000
# (lower-cased). A word is a few hundred bytes kept; the bound holds memory under 20 MB whatever is sent.
WORD_MEMO = 2**16
# Distinct texts whose columns are kept, for a message scored again (a known id asked for twice, a text
# sent to many): about 1 KB each, so at most some 16 MB.
TEXT_MEMO = 2**14


class MessageTerms:
    """A text's word 1-2-grams and character 1-4-grams within words, lower-cased, by scikit-learn's
    own analyzers.

    One analyzer for both keeps a single vectorizer (one sparse matrix, one pass) in the pipeline.
    Measured over eleven splits, these beat character n-grams across word boundaries (1-4 and 1-5,
    with word 1-3-grams): fewer ham blocked at the same share of spam caught, and faster.
    """

    def __init__(self) -> None:
        self._words = HashingVectorizer(ngram_range=(1, 2)).build_analyzer()
        self._chars = HashingVectorizer(analyzer="char_wb", ngram_range=(1, 4)).build_analyzer()

    # Pickled as its class alone and rebuilt on load: scikit-learn's analyzers pickle differently from
    # one process to the next, and a model's version is the hash of its bytes.
    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def __call__(self, text: str) -> list[str]:
        return [*self._words(text), *self._chars(text)]


_WORD_TERMS = HashingVectorizer(ngram_range=(1, 2)).build_analyzer()
# The character analyzer without its lower-casing: it is given words of the lower-cased text, split
# where the analyzer splits it (on whitespace), so each word's n-grams are the ones it has in the text.
_WORD_CHARS = HashingVectorizer(analyzer="char_wb", ngram_range=(1, 4), lowercase=False).build_analyzer()


def _column(term: str) -> int:
    """The column FeatureHasher gives a term: its signed 32-bit MurmurHash3 (seed 0) made positive,
    modulo the width. (FeatureHasher maps -2**31 to (2**31 - HASHED_FEATURES) % HASHED_FEATURES,
    which for a power of two is 0, as abs(-2**31) % HASHED_FEATURES is here.)"""
    return abs(murmurhash3_32(term, seed=0)) % HASHED_FEATURES


@functools.lru_cache(maxsize=WORD_MEMO)
def _word_columns(word: str) -> np.ndarray:
    """The columns of one lower-cased word's character 1-4-grams (padded with a space each side)."""
    kept = np.fromiter(map(_column, _WORD_CHARS(word)), dtype=np.int32)
    kept.flags.writeable = False  # shared by every text with the word
    return kept


@functools.lru_cache(maxsize=TEXT_MEMO)
def columns(text: str) -> np.ndarray:
    """The distinct columns of a text's terms, sorted: the non-zero columns of its row. Kept for the
    TEXT_MEMO texts used last: they depend on the text alone, so nothing kept can go stale."""
    word_terms = _WORD_TERMS(text)
    parts = [np.fromiter(map(_column, word_terms), dtype=np.int32, count=len(word_terms))]
    parts += map(_word_columns, set(text.lower().split()))
    # np.unique, with its general bookkeeping, costs four times this sort for a message's columns.
    merged = np.sort(np.concatenate(parts))
    first = np.ones(len(merged), dtype=bool)
    np.not_equal(merged[1:], merged[:-1], out=first[1:])
    kept = merged[first]
    kept.flags.writeable = False  # shared by every later request for the text
    return kept


def hashed_rows(texts: Any) -> sp.csr_matrix:
    """One row per text: 1 / sqrt(n) in each of its n distinct columns."""
    rows = [columns(text) for text in texts]
    counts = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    indptr = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(counts, out=indptr[1:])
    indices = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int32)
    data = np.repeat(1.0 / np.sqrt(np.maximum(counts, 1)), counts)
    return sp.csr_matrix((data, indices, indptr), shape=(len(rows), HASHED_FEATURES))


def linear_decisions(texts: Any, weights: np.ndarray, intercept: float) -> np.ndarray:
    """Each text's `x . weights + intercept` on its `hashed_rows` row, without building the rows.

    Summed term by term in column order from zero, as scipy's sparse product sums a row, of the same
    products (weight times 1 / sqrt(n)): the numbers the matrix product gives, bit for bit."""
    decisions = np.zeros(len(texts))
    for row, text in enumerate(texts):
        kept = columns(text)
        if len(kept):
            decisions[row] = np.add.accumulate(weights[kept] * (1.0 / np.sqrt(len(kept))))[-1]
    return decisions + intercept


# auto_wrap_output_keys=None: no `set_output` wrapper around transform (a sparse matrix has no other
# container to be put in), which would cost more per call than hashing a message.
class MessageHasher(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """The texts of a one-column input (the text feature, as `model_input` gives it) as hashed term rows
    (`hashed_rows`). Stateless: nothing is learnt, and it pickles as its class alone."""

    def fit(self, inputs: Any, y: Any = None) -> MessageHasher:
        return self

    def transform(self, inputs: np.ndarray) -> sp.csr_matrix:
        return hashed_rows(inputs[:, 0])

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.string = True
        return tags
