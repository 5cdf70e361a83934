"""The prediction service: an HTTP API over Feast (Redis, request-time features) and the served model.

Its routes, limits and errors, as clients see them, are API_DESCRIPTION (the OpenAPI description,
shown at /docs), written from the constants that enforce them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from sms_api import auth, docs, metrics
from sms_api.contract import BATCH_EXAMPLES, PREDICT_EXAMPLES, READY_RESPONSES, prediction_responses
from sms_api.errors import EXCERPT_CHARS, DeclaredLengthLimit, install_error_handlers
from sms_api.readiness import READY_TIMEOUT_S
from sms_api.schemas import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    MAX_TEXT_CHARS,
    Health,
    PredictBatchRequest,
    PredictBatchResponse,
    PredictRequest,
    PredictResponse,
    Readiness,
)
from sms_api.service import PredictionService, ServiceConfig
from sms_core.prediction import Prediction
from sms_core.settings import API_DEADLINE_ENV, DEFAULT_API_DEADLINE_S

API_DESCRIPTION = f"""
- `POST /predict`: `{{"message_id": 42}}` (features from Redis) or `{{"text": "..."}}` (features computed
  from the text at request time, through Feast's sms_text_features view);
- `POST /predict/batch`: `{{"message_ids": [...]}}` or `{{"texts": [...]}}`, up to {MAX_BATCH:,} items;
- `GET /health`: the process answers; `GET /ready`: the model is loaded, Redis and Postgres
  answer, each asked within {READY_TIMEOUT_S:g} s, and Redis holds every message it must; and how the
  served log fares (answers dropped from it are named there, and never make the service unready);
- `GET /metrics`: the served log's counts, in Prometheus' text format.

Every prediction names the model version (the manifest's hash). Errors are JSON, and quote what was
sent only as a short excerpt ({EXCERPT_CHARS} characters at most):

- 401: with SMS_API_TOKEN set, a prediction request without `Authorization: Bearer <token>`
  (`/health` and `/ready` never need it);
- 422: bad input, naming the field (`loc`); malformed JSON, with its line and column;
- 400: a body Python's JSON parser refuses (not UTF-8, nested too deeply, a number too long);
- 415: a body sent with another content type than `application/json`;
- 413: a body over {MAX_BODY_BYTES:,} bytes, refused without reading the rest. That is the largest a
  valid request needs: {MAX_BATCH:,} texts of {MAX_TEXT_CHARS:,} characters, each character at its
  longest JSON spelling (an escaped surrogate pair, 12 bytes); Content-Length is checked first, and a
  chunked body is counted as it arrives;
- 404: an unknown `message_id` (neither Redis nor the offline feature table holds it), naming it;
- 503: Redis or Postgres refuses the connection, or no model is served yet, giving the reason; or
  `online_store_incomplete`, a message that exists but whose features Redis lost (a sync is due);
- 504: Redis or Postgres did not answer within the request's deadline ({API_DEADLINE_ENV}, by
  default {DEFAULT_API_DEADLINE_S:g} s), naming it (password masked). The wait is abandoned; the
  other routes keep answering meanwhile.
"""


def _out(prediction: Prediction) -> dict[str, Any]:
    return {
        "message_id": prediction.message_id,
        "label": prediction.label,
        "spam_probability": prediction.spam_probability,
        "features": prediction.features,
    }


class _PredictionApp(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        # Outside FastAPI's own middleware, where Starlette would answer a declared length in plain text.
        return DeclaredLengthLimit(super().build_middleware_stack())


def create_app(config: ServiceConfig) -> FastAPI:
    service = PredictionService(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        await service.warm_up()
        yield
        service.stop()
        await service.aclose()

    app = _PredictionApp(
        title="sms_assets prediction service",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        max_body_size=MAX_BODY_BYTES,  # Starlette counts a chunked body too, and refuses it once over
        docs_url=None,  # served by sms_api.docs, without a CDN
        redoc_url=None,
    )
    app.state.service = service
    docs.install(app)
    metrics.install(app, service.served_log)
    install_error_handlers(app, config)
    auth.install_handler(app)
    token_required = auth.dependencies(config.api_token)

    # The handlers run on the event loop and await the service, which reads Redis through Feast's
    # asyncio client under the request's deadline. They return a JSONResponse built from values the
    # code produced itself: response_model documents the shape, and FastAPI skips re-validating it.
    responses = prediction_responses(token_required=bool(config.api_token))

    @app.post("/predict", response_model=PredictResponse, responses=responses, dependencies=token_required)
    async def predict(
        request: Annotated[PredictRequest, Body(openapi_examples=PREDICT_EXAMPLES)],
    ) -> JSONResponse:
        if request.message_id is not None:
            version, [prediction] = await service.predict_ids([request.message_id])
        else:
            version, [prediction] = await service.predict_texts([request.text or ""])
        return JSONResponse({**_out(prediction), "model_version": version})

    @app.post(
        "/predict/batch",
        response_model=PredictBatchResponse,
        responses=responses,
        dependencies=token_required,
    )
    async def predict_batch(
        request: Annotated[PredictBatchRequest, Body(openapi_examples=BATCH_EXAMPLES)],
    ) -> JSONResponse:
        if request.message_ids is not None:
            version, predictions = await service.predict_ids(request.message_ids)
        else:
            version, predictions = await service.predict_texts(request.texts or [])
        return JSONResponse({"model_version": version, "predictions": [_out(p) for p in predictions]})

    @app.get("/health", response_model=Health)
    async def health() -> dict[str, Any]:
        model = service.models.current
        return {"status": "ok", "model_version": model.version if model else None}

    @app.get(
        "/ready",
        response_model=Readiness,
        response_description="Every check is ok.",
        responses=READY_RESPONSES,
    )
    async def ready() -> JSONResponse:
        ok, checks = await service.readiness()
        model = service.models.current
        return JSONResponse(
            status_code=200 if ok else 503,
            content={
                "ready": ok,
                "model_version": model.version if model else None,
                "checks": checks,
                "served_log": service.served_log_check(),
            },
        )

    return app
