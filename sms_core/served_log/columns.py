"""The log table's columns: Feast's logging schema of the feature service, then the answer itself.

Feast's schema (`FeatureServiceLoggingSource.get_schema`) holds the request (join keys, or the request
fields of an on-demand view), each feature as `<view>__<feature>` beside its `__timestamp` and
`__status`, and `__log_timestamp`, `__log_date`, `__request_id`. It has no place for what the model made
of the features, so the answer's columns follow. Feast's monitoring reads the log by its own schema and
never sees them.
"""

from __future__ import annotations

import pyarrow as pa

BATCH_ID = "batch_id"  # shared by the answers of one request (a batch request gives many)
MODEL_VERSION = "model_version"
SPAM_PROBABILITY = "spam_probability"
LABEL = "label"
REQUEST_FORM = "request_form"  # "id": a known message_id; "text": a new message's text
TEXT_SHA256 = "text_sha256"  # of the message text, stored or not
TEXT_CHARS = "text_chars"

FORMS = ("id", "text")

ANSWER_FIELDS = pa.schema(
    [
        pa.field(BATCH_ID, pa.string()),
        pa.field(MODEL_VERSION, pa.string()),
        pa.field(SPAM_PROBABILITY, pa.float64()),
        pa.field(LABEL, pa.string()),
        pa.field(REQUEST_FORM, pa.string()),
        pa.field(TEXT_SHA256, pa.string()),
        pa.field(TEXT_CHARS, pa.int32()),
    ]
)
STATUS_SUFFIX = "__status"
TIMESTAMP_SUFFIX = "__timestamp"


def log_schema(feast_schema: pa.Schema) -> pa.Schema:
    """The log table's schema: Feast's logging schema, then the answer's columns."""
    clash = set(feast_schema.names) & set(ANSWER_FIELDS.names)
    if clash:
        raise ValueError(f"the feature service's logging schema already has columns {sorted(clash)}")
    return pa.schema([*feast_schema, *ANSWER_FIELDS])


def feature_columns(feast_schema: pa.Schema) -> list[str]:
    """The `<view>__<feature>` value columns of Feast's logging schema."""
    names = set(feast_schema.names)
    return [
        name
        for name in feast_schema.names
        if f"{name}{STATUS_SUFFIX}" in names and f"{name}{TIMESTAMP_SUFFIX}" in names
    ]
