"""Every failure as a JSON error: what went wrong and, for a service, which one (password masked)."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import redis
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sms_api.prediction import FeatureMismatchError, UnknownMessageError
from sms_api.service import DeadlineExceeded, ServiceConfig
from sms_assets.lib import urls
from sms_assets.lib.model_store import NoModelError

log = logging.getLogger(__name__)


def _error(status: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "detail": detail, **extra})


def install_error_handlers(app: FastAPI, config: ServiceConfig) -> None:
    postgres, redis_url = urls.redact(config.postgres_url), urls.redact(config.redis_url)

    @app.exception_handler(UnknownMessageError)
    async def unknown_message(request: Request, exc: UnknownMessageError) -> JSONResponse:
        return _error(404, "unknown_message_id", str(exc), message_ids=exc.message_ids)

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

    @app.exception_handler(redis.RedisError)
    async def redis_down(request: Request, exc: redis.RedisError) -> JSONResponse:
        return _error(503, "service_unavailable", f"Redis at {redis_url} did not answer: {exc}")

    async def postgres_down(request: Request, exc: Exception) -> JSONResponse:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return _error(503, "service_unavailable", f"Postgres at {postgres} did not answer: {reason}")

    app.add_exception_handler(psycopg.Error, postgres_down)
    app.add_exception_handler(sqlalchemy.exc.OperationalError, postgres_down)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", f"unexpected {type(exc).__name__}; see the server log")
