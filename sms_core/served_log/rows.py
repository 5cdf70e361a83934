"""A request's answers as rows of its feature service's log: Feast's logging schema, then the answer.

Feast's Python serving never logs (only its retired Go server did), so the rows are built here from
what the prediction service already holds: the request, Feast's response (values, and each value's event
time and status) and the predictions. Texts, the request's and any text feature's, are written only when
`log_texts` says so; their sha256 and length always are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa
from feast.feature_logging import LOG_DATE_FIELD, LOG_TIMESTAMP_FIELD, REQUEST_ID_FIELD

from sms_core.prediction import Answered
from sms_core.served_log import columns as c

if TYPE_CHECKING:
    from feast import FeatureService

TIMESTAMPS = pa.timestamp("s", tz="UTC")


@dataclass(frozen=True)
class Served:
    """One request's answers, as the request path hands them to the writer."""

    service: FeatureService  # as the request resolved it: its logging config, its projections
    form: str  # "id" or "text"
    request: Sequence[int] | Sequence[str]  # the message ids, or the texts
    answered: Answered
    model_version: str
    served_at: datetime
    batch_id: str


def text_sha256(text: str) -> str:
    """The sha256 of a text's UTF-8 bytes, as Postgres' sha256(convert_to(text, 'UTF8')) gives it; a
    lone surrogate, which a JSON request may carry, is hashed as is."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def storable(text: str) -> str:
    """The text as Postgres can hold it: a NUL or a lone surrogate replaced by U+FFFD. Its sha256
    (`text_sha256`) is of the text as sent, so a replaced text is known to differ from it."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def log_table(schema: pa.Schema, served: Sequence[Served], log_texts: bool) -> pa.Table:
    """The rows of `served` (all of one feature service) in `schema` (columns.log_schema)."""
    features = set(c.feature_columns(schema))
    derived = {f"{name}{suffix}" for name in features for suffix in (c.TIMESTAMP_SUFFIX, c.STATUS_SUFFIX)}
    system = {LOG_TIMESTAMP_FIELD, LOG_DATE_FIELD, REQUEST_ID_FIELD, *c.ANSWER_FIELDS.names}
    arrays: dict[str, pa.Array] = {}
    for field in schema:
        name, kind = field.name, field.type
        if name in features:
            short = _short(name)
            values = [v for s in served for v in s.answered.values[short]]
            arrays[name] = _texts(values, log_texts) if pa.types.is_string(kind) else pa.array(values, kind)
        elif name in derived:
            arrays[name] = _response_column(served, name)
        elif name not in system:  # the request: a join key, or an on-demand view's request field
            values = [v for s in served for v in s.request]
            arrays[name] = _texts(values, log_texts) if pa.types.is_string(kind) else pa.array(values, kind)
    arrays.update(_answer_columns(served, schema))
    return pa.table([arrays[name].cast(schema.field(name).type) for name in schema.names], schema=schema)


def _short(column: str) -> str:
    """`<view>__<feature>` -> the feature's name, as a response without full names gives it."""
    return column.split("__", 1)[1]


def _texts(values: list, log_texts: bool) -> pa.Array:
    if not log_texts:
        return pa.nulls(len(values), pa.string())
    return pa.array([storable(v) if v is not None else None for v in values], pa.string())


def _response_column(served: Sequence[Served], column: str) -> pa.Array:
    """A feature's event times (`__timestamp`) or statuses (`__status`), read from Feast's response."""
    base, _, what = column.rpartition("__")
    feature = _short(base)
    seconds: list[int] = []
    for s in served:
        proto = s.answered.response.proto
        result = proto.results[list(proto.metadata.feature_names.val).index(feature)]
        if what == "status":
            seconds.extend(result.statuses)
        else:
            seconds.extend(t.seconds for t in result.event_timestamps)
    if what == "status":
        return pa.array(seconds, pa.int32())
    return pa.array(seconds, pa.int64()).cast(TIMESTAMPS)


def _answer_columns(served: Sequence[Served], schema: pa.Schema) -> dict[str, pa.Array]:
    """The system columns and the answer's own."""
    texts_by_feature = [
        _short(n) for n in c.feature_columns(schema) if pa.types.is_string(schema.field(n).type)
    ]
    columns: dict[str, list] = {
        name: [] for name in (LOG_TIMESTAMP_FIELD, REQUEST_ID_FIELD, *c.ANSWER_FIELDS.names)
    }
    for s in served:
        if s.form == "text":
            texts: Sequence[str | None] = list(s.request)  # type: ignore[arg-type]
        elif texts_by_feature:
            texts = s.answered.values[texts_by_feature[0]]
        else:
            texts = [None] * len(s.answered.predictions)
        for row, (prediction, text) in enumerate(zip(s.answered.predictions, texts, strict=True)):
            columns[LOG_TIMESTAMP_FIELD].append(s.served_at)
            columns[REQUEST_ID_FIELD].append(f"{s.batch_id}-{row}")
            columns[c.BATCH_ID].append(s.batch_id)
            columns[c.MODEL_VERSION].append(s.model_version)
            columns[c.SPAM_PROBABILITY].append(prediction.spam_probability)
            columns[c.LABEL].append(prediction.label)
            columns[c.REQUEST_FORM].append(s.form)
            columns[c.TEXT_SHA256].append(text_sha256(text) if text is not None else None)
            columns[c.TEXT_CHARS].append(len(text) if text is not None else None)
    arrays = {name: pa.array(values) for name, values in columns.items()}
    arrays[LOG_TIMESTAMP_FIELD] = pa.array(
        columns[LOG_TIMESTAMP_FIELD], schema.field(LOG_TIMESTAMP_FIELD).type
    )
    arrays[LOG_DATE_FIELD] = arrays[LOG_TIMESTAMP_FIELD].cast(pa.date32())
    return arrays
