"""Every failure as a JSON error: what went wrong and, for a service, which one (password masked).

An error quotes what the client sent only as a short excerpt (EXCERPT_CHARS characters at most,
escaped so that any input, a lone surrogate or NaN included, can be written as JSON), and lists at
most MAX_ERRORS_LISTED validation errors, so no answer grows with the body it refuses.
"""

from __future__ import annotations

import json
import logging
import reprlib
from typing import Any

import psycopg
import redis
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from sms_api.schemas import MAX_BODY_BYTES
from sms_api.service import DeadlineExceeded, ServiceConfig
from sms_core import urls
from sms_core.model.store import NoModelError
from sms_core.prediction import FeatureMismatchError, OnlineStoreIncomplete, UnknownMessageError

log = logging.getLogger(__name__)

EXCERPT_CHARS = 80
MAX_ERRORS_LISTED = 20

# Python's bounded repr: it never renders more of a long string, list or number than its limits, and
# escapes what is not printable (a lone surrogate becomes `\ud800`).
_excerpts = reprlib.Repr()
_excerpts.maxstring = _excerpts.maxother = _excerpts.maxlong = EXCERPT_CHARS
_excerpts.maxlist = _excerpts.maxtuple = _excerpts.maxdict = 5
_excerpts.maxlevel = 3

_STATUS_ERRORS = {
    400: "malformed_body",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def excerpt(value: Any) -> str:
    """At most EXCERPT_CHARS characters showing `value`, safe to write as JSON."""
    text = _excerpts.repr(value)
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 3] + "..."


def _name(part: Any) -> str | int:
    """A location part (a field name, an index) safe to write as JSON: a key a client sent is input."""
    if isinstance(part, int):
        return part
    text = str(part).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 3] + "..."


def _error(status: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "detail": detail, **extra})


def body_too_large() -> JSONResponse:
    response = _error(
        413,
        "body_too_large",
        f"the request body is over the limit of {MAX_BODY_BYTES:,} bytes; the rest of it was not read",
    )
    response.headers["connection"] = "close"  # rather than read the rest of the body to drop it
    return response


class DeclaredLengthLimit:
    """ASGI middleware, outermost: a request whose Content-Length is over MAX_BODY_BYTES gets the
    API's JSON 413 before anything reads its body.

    Starlette's body limit (FastAPI's `max_body_size`) counts every body, chunked ones included, and
    its 413 for those goes through the app's handlers; but a declared length over the limit it
    answers itself, in plain text, replacing whatever response the app sends.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = Headers(scope=scope).get("content-length", "")
            # uvicorn refuses a length that is not a number; 13 digits or more is over 24 MB anyway.
            if length.isascii() and length.isdigit() and (len(length) > 12 or int(length) > MAX_BODY_BYTES):
                await body_too_large()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """FastAPI's errors (type, loc, msg), each quoting its input as a short excerpt; the first few."""
    listed = []
    for error in exc.errors()[:MAX_ERRORS_LISTED]:
        loc, kind, msg = tuple(error.get("loc", ())), error.get("type", ""), str(error.get("msg", ""))
        item: dict[str, Any] = {"type": kind, "loc": [_name(part) for part in loc], "msg": msg}
        if kind == "json_invalid" and isinstance(exc.__cause__, json.JSONDecodeError):
            item["msg"] = f"malformed JSON: {exc.__cause__}"  # the reason, line, column and offset
        elif kind == "missing" and loc == ("body",):
            item["msg"] = 'the body is empty: send a JSON object such as {"message_id": 42}'
        else:
            item["input"] = excerpt(error.get("input"))
        listed.append(item)
    return listed


def _unparsed(exc: HTTPException) -> str:
    """Why FastAPI could not parse a body that was not malformed JSON syntax (its 400)."""
    cause = exc.__cause__
    if isinstance(cause, RecursionError):
        return "the JSON nests arrays or objects too deeply to parse"
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not UTF-8 JSON: {cause.reason} at byte {cause.start}"
    if isinstance(cause, ValueError):  # e.g. an integer with more digits than Python converts
        return f"the body could not be parsed as JSON: {urls.first_line(cause).split(';')[0]}"
    return str(exc.detail)


def install_error_handlers(app: FastAPI, config: ServiceConfig) -> None:
    postgres, redis_url = urls.redact(config.postgres_url), urls.redact(config.redis_url)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if isinstance(exc.body, bytes | bytearray):
            # FastAPI reads a body as JSON only when its content type says so.
            content_type = excerpt(request.headers.get("content-type", "none"))
            return _error(
                415,
                "unsupported_media_type",
                f"the body must be sent as Content-Type: application/json, not {content_type}",
            )
        errors = exc.errors()
        return JSONResponse(
            status_code=422,
            content={"error": "invalid_input", "detail": validation_errors(exc), "error_count": len(errors)},
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 413:
            return body_too_large()
        detail = _unparsed(exc) if exc.status_code == 400 and exc.__cause__ is not None else str(exc.detail)
        response = _error(exc.status_code, _STATUS_ERRORS.get(exc.status_code, "http_error"), detail)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(UnknownMessageError)
    async def unknown_message(request: Request, exc: UnknownMessageError) -> JSONResponse:
        return _error(404, "unknown_message_id", str(exc), message_ids=exc.message_ids)

    @app.exception_handler(OnlineStoreIncomplete)
    async def online_store_incomplete(request: Request, exc: OnlineStoreIncomplete) -> JSONResponse:
        return _error(
            503,
            "online_store_incomplete",
            str(exc),
            message_ids=exc.message_ids,
            unknown_message_ids=exc.unknown_ids,
        )

    @app.exception_handler(NoModelError)
    async def no_model(request: Request, exc: NoModelError) -> JSONResponse:
        return _error(503, "no_model", str(exc))

    @app.exception_handler(FeatureMismatchError)
    async def feature_mismatch(request: Request, exc: FeatureMismatchError) -> JSONResponse:
        return _error(503, "feature_mismatch", str(exc))

    @app.exception_handler(DeadlineExceeded)
    async def deadline_exceeded(request: Request, exc: DeadlineExceeded) -> JSONResponse:
        return _error(504, "deadline_exceeded", str(exc))

    @app.exception_handler(urls.ServiceUnavailable)
    async def unavailable(request: Request, exc: urls.ServiceUnavailable) -> JSONResponse:
        return _error(503, "service_unavailable", str(exc))

    async def redis_down(request: Request, exc: Exception) -> JSONResponse:
        return _error(503, "service_unavailable", f"Redis at {redis_url} did not answer: {exc}")

    for error in urls.REDIS_ERRORS:
        app.add_exception_handler(error, redis_down)

    @app.exception_handler(redis.ResponseError)
    async def redis_refused(request: Request, exc: redis.ResponseError) -> JSONResponse:
        # Redis answered, with an error (WRONGTYPE: a key holds a value Feast did not write): no outage,
        # and asking again gives the same answer.
        return _error(
            500,
            "online_store_error",
            f"Redis at {redis_url} answered with an error: {urls.first_line(exc)}; a key of the online "
            "store holds a value Feast did not write",
        )

    async def postgres_down(request: Request, exc: Exception) -> JSONResponse:
        return _error(
            503, "service_unavailable", f"Postgres at {postgres} did not answer: {urls.first_line(exc)}"
        )

    app.add_exception_handler(psycopg.Error, postgres_down)
    app.add_exception_handler(sqlalchemy.exc.OperationalError, postgres_down)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", f"unexpected {type(exc).__name__}; see the server log")
