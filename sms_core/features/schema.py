"""The one declaration of the SMS features: each feature's name and type, in serving order.

The feature table's columns, Feast's `Field`s and the checks' comparisons are derived from `FEATURES`;
`compute.features_of` computes each one. Adding a feature is a line here and its line there. The
feature services take them by type (feature_repo/feature_services.py): `sms_service` the numbers,
`sms_service_v2` the text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FeatureType:
    """How a feature's values are held in pandas, in Postgres and in Feast, and how they compare."""

    dtype: str
    postgres: str
    # The name of its type in `feast.types` (resolved by feature_repo/, so this module needs no Feast).
    feast: str
    # Integers and texts must match exactly between two paths; ratios may differ by float32 rounding.
    exact: bool

    @property
    def numeric(self) -> bool:
        return self.dtype != "object"


INTEGER = FeatureType("int64", "bigint", "Int64", exact=True)
RATIO = FeatureType("float64", "double precision", "Float64", exact=False)
TEXT = FeatureType("object", "text", "String", exact=True)

FEATURES: dict[str, FeatureType] = {
    "text_length": INTEGER,
    "word_count": INTEGER,
    "avg_word_length": RATIO,
    "digit_count": INTEGER,
    "exclamation_count": INTEGER,
    "uppercase_ratio": RATIO,
    # The message itself, for a model that learns its own text features (words and characters).
    "message_text": TEXT,
}
FEATURE_NAMES: tuple[str, ...] = tuple(FEATURES)
NUMERIC_NAMES: tuple[str, ...] = tuple(name for name, kind in FEATURES.items() if kind.numeric)
TEXT_NAMES: tuple[str, ...] = tuple(name for name, kind in FEATURES.items() if not kind.numeric)

# The longest text a message may have, in characters: the API refuses a longer one (422) and ingestion
# (the dataset and landed batches) refuses it, so nothing the API could not score is stored, served or
# trained on. Longer than any SMS thread worth scoring; it bounds the work one message can ask for.
MAX_TEXT_CHARS = 2_000


def postgres_columns() -> list[tuple[str, str]]:
    """The feature columns of the offline table, as (name, SQL type) pairs."""
    return [(name, f"{kind.postgres} NOT NULL") for name, kind in FEATURES.items()]
