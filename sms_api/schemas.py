"""The API's requests and responses: every input rule, in one place."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    model_validator,
)
from pydantic.config import JsonDict

from sms_core.features.schema import MAX_TEXT_CHARS

MAX_BATCH = 1_000
INT64_MAX = 2**63 - 1
# The largest body a valid request can need, so that anything above it is refused (413) unread: MAX_BATCH
# texts of MAX_TEXT_CHARS characters, each character at its longest JSON spelling, a character outside
# the Basic Multilingual Plane escaped as a surrogate pair (`\ud83d\ude00`: 12 bytes, what
# `json.dumps` writes by default), plus the quotes and separator around each text and room for the
# envelope and whitespace. About 24 MB.
MAX_JSON_BYTES_PER_CHAR = 12
MAX_BODY_BYTES = MAX_BATCH * (MAX_TEXT_CHARS * MAX_JSON_BYTES_PER_CHAR + len('"", ')) + 4_096


# A character that is not whitespace, as Python's str.isspace() has it, spelled out: `\S` means one thing
# to Python and another to the ECMA-262 regexes that read the OpenAPI document's patterns (\x1c-\x1f,
# \x85, \ufeff), while this class reads the same in both.
NOT_BLANK = r"[^\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_NOT_BLANK = re.compile(NOT_BLANK)


def _not_blank(text: str) -> str:
    if not _NOT_BLANK.search(text):
        raise ValueError("text must contain a non-whitespace character")
    return text


def _integral(value: object) -> object:
    """An integral float as the integer it is: JSON has one number type, and JSON Schema's `integer`,
    which the OpenAPI document declares, admits 42.0. Strings, booleans and fractions stay refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# The document gives the range as OpenAPI's `int64` format rather than as `maximum`, which FastAPI writes
# as a float (fastapi#3355): INT64_MAX would read 9.223372036854776e+18, that is 9223372036854776000.
MessageId = Annotated[
    StrictInt,
    Field(ge=0, le=INT64_MAX),
    BeforeValidator(_integral),
    WithJsonSchema({"type": "integer", "format": "int64", "minimum": 0, "examples": [42]}),
]
Text = Annotated[
    StrictStr,
    Field(
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        examples=["WINNER!! Claim your prize now"],
        json_schema_extra={"pattern": NOT_BLANK},  # documents _not_blank, whose message is clearer
    ),
    AfterValidator(_not_blank),
]


def _exactly_one_in_schema(schema: JsonDict, model: type[BaseModel]) -> None:
    """`_exactly_one`, said in the JSON schema too: one field given a value, the other absent or null
    (a client's serializer may write an unset field as null)."""
    schema["oneOf"] = [
        {"title": f"by {name}", "required": [name], "properties": {name: {"not": {"type": "null"}}}}
        for name in model.model_fields
    ]


class _ByIdOrText(BaseModel):
    """A request that names known messages by id or sends new ones as text: exactly one of the two."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_exactly_one_in_schema)

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        by_id, by_text = type(self).model_fields
        if (getattr(self, by_id) is None) == (getattr(self, by_text) is None):
            raise ValueError(f"send exactly one of {by_id} or {by_text}")
        return self


class PredictRequest(_ByIdOrText):
    """One message: a known `message_id`, or the `text` of a new one."""

    message_id: MessageId | None = None
    text: Text | None = None


class PredictBatchRequest(_ByIdOrText):
    """Many messages: known `message_ids`, or the `texts` of new ones."""

    message_ids: Annotated[list[MessageId], Field(min_length=1, max_length=MAX_BATCH)] | None = None
    texts: Annotated[list[Text], Field(min_length=1, max_length=MAX_BATCH)] | None = None


class PredictionOut(BaseModel):
    message_id: int | None = Field(description="The message's id; null for a message sent as text.")
    label: Literal["ham", "spam"]
    spam_probability: float
    # Numbers for a model of text statistics, the message text itself for one that reads it.
    features: dict[str, int | float | str] = Field(description="The features the model scored, by name.")


class PredictResponse(PredictionOut):
    model_version: str


class PredictBatchResponse(BaseModel):
    model_version: str
    predictions: list[PredictionOut]


class Health(BaseModel):
    status: Literal["ok"]
    model_version: str | None = Field(description="The served model's version; null before one is served.")


class Readiness(BaseModel):
    ready: bool = Field(description="Whether every check is ok: true with status 200, false with 503.")
    model_version: str | None = Field(description="The served model's version; null before one is served.")
    checks: dict[str, str] = Field(
        description='Each check (model, redis, postgres, then feature_store and online_store) and "ok" or '
        "why not; online_store is not ok while Redis holds fewer messages than it must (keys were lost).",
        examples=[
            {"model": "ok", "redis": "ok", "postgres": "ok", "feature_store": "ok", "online_store": "ok"}
        ],
    )
    served_log: str = Field(
        description="How many answers were logged and dropped since the process started; dropping them "
        "never makes the service unready.",
        examples=["ok: 1,204 answers logged, none dropped, 0 waiting"],
    )
