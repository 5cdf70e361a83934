"""What the OpenAPI document promises beyond the request and response models: the body of every error
the handlers (sms_api.errors, sms_api.auth) answer, the statuses each route can answer, and an example of
each request form. tests/integration/test_api_contract.py holds the running service to it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi.openapi.models import Example
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from sms_api.errors import EXCERPT_CHARS, MAX_ERRORS_LISTED
from sms_api.schemas import MAX_BODY_BYTES, Readiness

SPAM_EXAMPLE = "WINNER!! Claim your prize now"


# Every error but invalid input: a stable code to act on, and what went wrong in words.
Detail = Annotated[
    str, Field(description="What went wrong, naming the limit, or the service (password masked).")
]


class MalformedBodyError(BaseModel):
    error: Literal["malformed_body"]
    detail: Detail


class UnauthorizedError(BaseModel):
    error: Literal["unauthorized"]
    detail: Detail


class UnknownIdError(BaseModel):
    error: Literal["unknown_message_id"]
    detail: Detail
    message_ids: list[int] = Field(description="The ids that have no features online.")


class BodyTooLargeError(BaseModel):
    error: Literal["body_too_large"]
    detail: Detail


class UnsupportedMediaTypeError(BaseModel):
    error: Literal["unsupported_media_type"]
    detail: Detail


class UnavailableError(BaseModel):
    error: Literal["service_unavailable", "no_model", "feature_mismatch"]
    detail: Detail


class OnlineStoreIncompleteError(BaseModel):
    error: Literal["online_store_incomplete"]
    detail: Detail
    message_ids: list[int] = Field(
        description="The ids that exist in the offline store but whose features Redis does not hold."
    )
    unknown_message_ids: list[int] = Field(
        description="The ids of the request that are unknown too (a batch can hold both)."
    )


class OnlineStoreError(BaseModel):
    error: Literal["online_store_error"]
    detail: Detail


class DeadlineError(BaseModel):
    error: Literal["deadline_exceeded"]
    detail: Detail


class InputError(BaseModel):
    type: str = Field(description="Pydantic's error type: `int_type`, `missing`, `json_invalid`, ...")
    loc: list[str | int] = Field(description='Where the error is: `["body", "texts", 1]`.')
    msg: str
    # Left out, not null, where nothing was sent to quote: malformed JSON, an empty body.
    input: str | SkipJsonSchema[None] = Field(
        default=None, description=f"What was sent there, as an excerpt of at most {EXCERPT_CHARS} characters."
    )


class InvalidInputError(BaseModel):
    error: Literal["invalid_input"]
    detail: list[InputError] = Field(
        max_length=MAX_ERRORS_LISTED, description=f"The first {MAX_ERRORS_LISTED} errors."
    )
    error_count: int = Field(description="How many errors there were in all.")


def prediction_responses(token_required: bool) -> dict[int | str, dict[str, Any]]:
    """Every status a prediction route answers besides 200, with the body each one has."""
    responses: dict[int | str, dict[str, Any]] = {
        400: {
            "model": MalformedBodyError,
            "description": "A body Python's JSON parser refuses: not UTF-8, nested too deeply, a number "
            "too long.",
        },
    }
    if token_required:
        responses[401] = {
            "model": UnauthorizedError,
            "description": "The request lacks `Authorization: Bearer <token>` with the service's token.",
            "headers": {
                "WWW-Authenticate": {
                    "description": '`Bearer`, or `Bearer error="invalid_token"` for a wrong token.',
                    "schema": {"type": "string"},
                }
            },
        }
    responses |= {
        404: {
            "model": UnknownIdError,
            "description": "An unknown `message_id`, named: the offline store does not hold it either.",
        },
        413: {
            "model": BodyTooLargeError,
            "description": f"A body over {MAX_BODY_BYTES:,} bytes, refused without reading the rest.",
        },
        415: {
            "model": UnsupportedMediaTypeError,
            "description": "A body sent with another content type than `application/json`.",
        },
        422: {
            "model": InvalidInputError,
            "description": "Bad input, naming the field; malformed JSON, with its line and column.",
        },
        503: {
            "model": UnavailableError | OnlineStoreIncompleteError,
            "description": "Redis or Postgres refuses the connection (`service_unavailable`), no model is "
            "served yet (`no_model`), the served model's feature service is not in the registry "
            "(`feature_mismatch`), or a message exists but Redis lost its features "
            "(`online_store_incomplete`: a sync is due, and the catch-up sensor starts one).",
        },
        504: {
            "model": DeadlineError,
            "description": "Redis or Postgres did not answer within the request's deadline, named.",
        },
        500: {
            "model": OnlineStoreError,
            "description": "Redis answered a read with an error (`WRONGTYPE`: a key of the online store "
            "holds a value Feast did not write); asking again gives the same answer.",
        },
    }
    return responses


READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"model": Readiness, "description": "A check is not ok: `checks` says which, and why."},
}

PREDICT_EXAMPLES: dict[str, Example] = {
    "by_id": {
        "summary": "A known message, by id",
        "description": "Its features are read from Redis.",
        "value": {"message_id": 42},
    },
    "by_text": {
        "summary": "A new message, by text",
        "description": "Its features are computed from the text at request time.",
        "value": {"text": SPAM_EXAMPLE},
    },
}

BATCH_EXAMPLES: dict[str, Example] = {
    "by_ids": {
        "summary": "Known messages, by id",
        "description": "Their features are read from Redis.",
        "value": {"message_ids": [1, 2, 3]},
    },
    "by_texts": {
        "summary": "New messages, by text",
        "description": "Their features are computed from the texts at request time.",
        "value": {"texts": ["see you at 5", SPAM_EXAMPLE]},
    },
}
