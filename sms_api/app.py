"""The prediction service: an HTTP API over Feast (Redis, request-time features) and the served model.

- `POST /predict`: `{"message_id": 42}` (features from Redis) or `{"text": "..."}` (features computed
  from the text at request time, through Feast's sms_text_features view);
- `POST /predict/batch`: `{"message_ids": [...]}` or `{"texts": [...]}`, up to MAX_BATCH items;
- `GET /health` (the process answers) and `GET /ready` (the model is loaded and both stores answer,
  each asked within readiness.READY_TIMEOUT_S).

With SMS_API_TOKEN set, both prediction routes require `Authorization: Bearer <token>` (401 otherwise);
`/health` and `/ready` never do.

Every prediction response names the model version (the manifest's hash). Bad input is a 422 naming
the field, an unknown id a 404 naming it, a store that refuses the connection a 503 giving the
reason, and one that has not answered within the request's deadline (SMS_API_DEADLINE_S) a 504
naming it, while the other routes keep answering.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from sms_api import auth
from sms_api.errors import install_error_handlers
from sms_api.prediction import Prediction
from sms_api.schemas import PredictBatchRequest, PredictBatchResponse, PredictRequest, PredictResponse
from sms_api.service import PredictionService, ServiceConfig


def _out(prediction: Prediction) -> dict[str, Any]:
    return {
        "message_id": prediction.message_id,
        "label": prediction.label,
        "spam_probability": prediction.spam_probability,
        "features": prediction.features,
    }


def create_app(config: ServiceConfig) -> FastAPI:
    service = PredictionService(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        await service.warm_up()
        # Feast, pandas and sklearn leave a few hundred thousand long-lived objects behind at
        # start-up; frozen, they are no longer re-scanned by each full garbage collection (about
        # 0.1 s here), a pause that otherwise lands on whichever request triggers it.
        gc.collect()
        gc.freeze()
        yield
        service.stop()

    app = FastAPI(
        title="sms_assets prediction service",
        description=__doc__ or "",
        lifespan=lifespan,
    )
    app.state.service = service
    install_error_handlers(app, config)
    auth.install_handler(app)
    token_required = auth.dependencies(config.api_token)

    # The handlers run on the event loop and await the service, which reads Redis through Feast's
    # asyncio client under the request's deadline. They return a JSONResponse built from values the
    # code produced itself: response_model documents the shape, and FastAPI skips re-validating it.
    @app.post("/predict", response_model=PredictResponse, dependencies=token_required)
    async def predict(request: PredictRequest) -> JSONResponse:
        if request.message_id is not None:
            version, [prediction] = await service.predict_ids([request.message_id])
        else:
            version, [prediction] = await service.predict_texts([request.text or ""])
        return JSONResponse({**_out(prediction), "model_version": version})

    @app.post("/predict/batch", response_model=PredictBatchResponse, dependencies=token_required)
    async def predict_batch(request: PredictBatchRequest) -> JSONResponse:
        if request.message_ids is not None:
            version, predictions = await service.predict_ids(request.message_ids)
        else:
            version, predictions = await service.predict_texts(request.texts or [])
        return JSONResponse({"model_version": version, "predictions": [_out(p) for p in predictions]})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        model = service.models.current
        return {"status": "ok", "model_version": model.version if model else None}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        ok, checks = await service.readiness()
        model = service.models.current
        return JSONResponse(
            status_code=200 if ok else 503,
            content={"ready": ok, "model_version": model.version if model else None, "checks": checks},
        )

    return app
