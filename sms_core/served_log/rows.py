"""A request's answers as rows of its feature service's log: Feast's logging schema, then the answer.

Feast's Python serving never logs (only its retired Go server did), so the rows are built here from
what the prediction service already holds: the request, Feast's response (values, and each value's event
time and status) and the predictions. Texts, the request's and any text feature's, are written only when
`log_texts` says so; their sha256 and length always are.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa
from feast.feature_logging import LOG_DATE_FIELD, LOG_TIMESTAMP_FIELD, REQUEST_ID_FIELD

from sms_core.features.schema import TEXT_NAMES
from sms_core.prediction import Answered, Read
from sms_core.served_log import columns as c

if TYPE_CHECKING:
    from feast import FeatureService

TIMESTAMPS = pa.timestamp("s", tz="UTC")


@dataclass(frozen=True)
class Served:
    """One request's answers, as the request path hands them to the writer: already in columns (lists
    by column, or by feature name), so that the writer's thread only joins them and has no per-answer
    work to do while it holds the interpreter."""

    service: FeatureService  # as the request resolved it: its logging config, its projections
    form: str  # "id" or "text"
    request: Sequence[int] | Sequence[str]  # the message ids, or the texts
    read: Read  # Feast's response: each feature's values, event times and statuses
    answers: dict[str, list]  # the answer's own columns (ANSWER_FIELDS but the batch's constants)
    model_version: str
    served_at: datetime
    batch_id: str

    @property
    def n(self) -> int:
        return len(self.request)


def served(
    service: FeatureService,
    form: str,
    request: Sequence[int] | Sequence[str],
    answered: Answered,
    model_version: str,
    served_at: datetime,
    batch_id: str,
) -> Served:
    """A request's answers as the log's columns: what the request path already holds."""
    values = answered.values
    if form == "text":
        texts: Sequence[str | None] = request  # type: ignore[assignment]
    else:
        text_feature = next((name for name in values if name in TEXT_NAMES), None)
        texts = values[text_feature] if text_feature else [None] * len(request)
    predictions = answered.predictions
    if not len(predictions) == len(texts) == len(request):
        raise ValueError(
            f"batch {batch_id}: {len(predictions)} answers for {len(request)} requested, {len(texts)} texts"
        )
    answers = {
        REQUEST_ID_FIELD: [f"{batch_id}-{row}" for row in range(len(request))],
        c.SPAM_PROBABILITY: [p.spam_probability for p in predictions],
        c.LABEL: [p.label for p in predictions],
        c.TEXT_SHA256: [text_sha256(t) if t is not None else None for t in texts],
        c.TEXT_CHARS: [len(t) if t is not None else None for t in texts],
    }
    return Served(service, form, request, answered.read, answers, model_version, served_at, batch_id)


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
            values = _joined(s.read.values[_short(name)] for s in served)
            arrays[name] = _texts(values, log_texts) if pa.types.is_string(kind) else pa.array(values, kind)
        elif name in derived:
            arrays[name] = _response_column(served, name)
        elif name not in system:  # the request: a join key, or an on-demand view's request field
            values = _joined(s.request for s in served)
            arrays[name] = _texts(values, log_texts) if pa.types.is_string(kind) else pa.array(values, kind)
    arrays.update(_answer_columns(served, schema))
    return pa.table([arrays[name].cast(schema.field(name).type) for name in schema.names], schema=schema)


def _joined(parts: Iterable[Sequence]) -> list:
    return list(itertools.chain.from_iterable(parts))


def _short(column: str) -> str:
    """`<view>__<feature>` -> the feature's name, as a response without full names gives it."""
    return column.split("__", 1)[1]


def _texts(values: list, log_texts: bool) -> pa.Array:
    if not log_texts:
        return pa.nulls(len(values), pa.string())
    return pa.array([storable(v) if v is not None else None for v in values], pa.string())


def _response_column(served: Sequence[Served], column: str) -> pa.Array:
    """A feature's event times (`__timestamp`) or statuses (`__status`), from Feast's response."""
    base, _, what = column.rpartition("__")
    feature = _short(base)
    if what == "status":
        return pa.array(_joined(s.read.statuses[feature] for s in served), pa.int32())
    return pa.array(_joined(s.read.event_seconds[feature] for s in served), pa.int64()).cast(TIMESTAMPS)


def _answer_columns(served: Sequence[Served], schema: pa.Schema) -> dict[str, pa.Array]:
    """The system columns and the answer's own."""
    arrays = {name: pa.array(_joined(s.answers[name] for s in served)) for name in served[0].answers}
    arrays[c.BATCH_ID] = pa.array(_each_row(served, lambda s: s.batch_id), pa.string())
    arrays[c.MODEL_VERSION] = pa.array(_each_row(served, lambda s: s.model_version), pa.string())
    arrays[c.REQUEST_FORM] = pa.array(_each_row(served, lambda s: s.form), pa.string())
    arrays[LOG_TIMESTAMP_FIELD] = pa.array(
        _each_row(served, lambda s: s.served_at), schema.field(LOG_TIMESTAMP_FIELD).type
    )
    arrays[LOG_DATE_FIELD] = arrays[LOG_TIMESTAMP_FIELD].cast(pa.date32())
    return arrays


def _each_row(served: Sequence[Served], value: Callable[[Served], object]) -> list:
    """A request's value once for each of its answers."""
    return _joined([value(s)] * s.n for s in served)
