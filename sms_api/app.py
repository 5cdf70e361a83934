"""The prediction service: an HTTP API over Feast (Redis, request-time features) and the served model.

- `POST /predict`: `{"message_id": 42}` (features from Redis) or `{"text": "..."}` (features computed
  from the text at request time, through Feast's sms_text_features view);
- `POST /predict/batch`: `{"message_ids": [...]}` or `{"texts": [...]}`, up to MAX_BATCH items;
- `GET /health` (the process answers) and `GET /ready` (the model is loaded and both stores answer).

With SMS_API_TOKEN set, both prediction routes require `Authorization: Bearer <token>` (401 otherwise);
`/health` and `/ready` never do.

Every prediction response names the model version (the manifest's hash). Bad input is a 422 naming
the field, an unknown id a 404 naming it, a store that does not answer a 503 giving the reason.
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

    # The prediction handlers are `async def` and hand their blocking work to service.run (see why
    # there). They return a JSONResponse built from values the code produced itself: response_model
    # documents the shape, and FastAPI skips re-validating it on every request.
    @app.post("/predict", response_model=PredictResponse, dependencies=token_required)
    async def predict(request: PredictRequest) -> JSONResponse:
        if request.message_id is not None:
            ids = [request.message_id]
            version, [prediction] = await service.run(lambda: service.predict_ids(ids))
        else:
            texts = [request.text or ""]
            version, [prediction] = await service.run(lambda: service.predict_texts(texts))
        return JSONResponse({**_out(prediction), "model_version": version})

    @app.post("/predict/batch", response_model=PredictBatchResponse, dependencies=token_required)
    async def predict_batch(request: PredictBatchRequest) -> JSONResponse:
        message_ids, texts = request.message_ids, request.texts
        if message_ids is not None:
            version, predictions = await service.run(lambda: service.predict_ids(message_ids))
        else:
            assert texts is not None
            version, predictions = await service.run(lambda: service.predict_texts(texts))
        return JSONResponse({"model_version": version, "predictions": [_out(p) for p in predictions]})

    @app.get("/health")
    def health() -> dict[str, Any]:
        model = service.models.current
        return {"status": "ok", "model_version": model.version if model else None}

    @app.get("/ready")
    def ready() -> JSONResponse:
        ok, checks = service.readiness()
        model = service.models.current
        return JSONResponse(
            status_code=200 if ok else 503,
            content={"ready": ok, "model_version": model.version if model else None, "checks": checks},
        )

    return app
