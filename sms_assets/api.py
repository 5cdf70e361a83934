"""The prediction service: an HTTP API over Feast (Redis, request-time features) and the served model.

- `POST /predict`: `{"message_id": 42}` (features from Redis) or `{"text": "..."}` (features computed
  from the text at request time, through Feast's sms_text_features view);
- `POST /predict/batch`: `{"message_ids": [...]}` or `{"texts": [...]}`, up to MAX_BATCH items;
- `GET /health` (the process answers) and `GET /ready` (the model is loaded and both stores answer).

Every prediction response names the model version (the manifest's hash). Bad input is a 422 naming
the field, an unknown id a 404 naming it, a store that does not answer a 503 giving the reason.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import psycopg
import redis
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from feast import FeatureService, FeatureStore
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

from sms_assets import feast_store, services, serving
from sms_assets.model_store import ModelStore, NoModelError
from sms_assets.serving import FeatureMismatchError, ModelWatcher, Prediction, UnknownMessageError

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 2_000  # longer than any SMS thread worth scoring; bounds the work one request can ask
MAX_BATCH = 1_000
INT64_MAX = 2**63 - 1

T = TypeVar("T")


@dataclass(frozen=True)
class ServiceConfig:
    postgres_url: str
    redis_url: str
    project: str
    model_root: Path
    model_poll_s: float = 1.0  # how soon a newly promoted model is served
    registry_refresh_s: int = 60  # how soon a registry change (feast_registry) is seen


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text must contain a non-whitespace character")
    return text


MessageId = Annotated[StrictInt, Field(ge=0, le=INT64_MAX, examples=[42])]
Text = Annotated[
    StrictStr,
    Field(min_length=1, max_length=MAX_TEXT_CHARS, examples=["WINNER!! Claim your prize now"]),
    AfterValidator(_not_blank),
]


class PredictRequest(BaseModel):
    """One message: a known `message_id`, or the `text` of a new one."""

    model_config = ConfigDict(extra="forbid")

    message_id: MessageId | None = None
    text: Text | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        if (self.message_id is None) == (self.text is None):
            raise ValueError("send exactly one of message_id or text")
        return self


class PredictBatchRequest(BaseModel):
    """Many messages: known `message_ids`, or the `texts` of new ones."""

    model_config = ConfigDict(extra="forbid")

    message_ids: Annotated[list[MessageId], Field(min_length=1, max_length=MAX_BATCH)] | None = None
    texts: Annotated[list[Text], Field(min_length=1, max_length=MAX_BATCH)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictBatchRequest:
        if (self.message_ids is None) == (self.texts is None):
            raise ValueError("send exactly one of message_ids or texts")
        return self


class PredictionOut(BaseModel):
    message_id: int | None = Field(description="The message's id; null for a message sent as text.")
    label: Literal["ham", "spam"]
    spam_probability: float
    features: dict[str, int | float] = Field(description="The features the model scored, by name.")


class PredictResponse(PredictionOut):
    model_version: str


class PredictBatchResponse(BaseModel):
    model_version: str
    predictions: list[PredictionOut]


def _out(prediction: Prediction) -> dict[str, Any]:
    return {
        "message_id": prediction.message_id,
        "label": prediction.label,
        "spam_probability": prediction.spam_probability,
        "features": prediction.features,
    }


class PredictionService:
    """The feature store and the model watcher one server process shares across requests."""

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.models = ModelWatcher(ModelStore(config.model_root), config.model_poll_s)
        self._store: FeatureStore | None = None
        self._store_lock = threading.Lock()
        self._services: tuple[float, FeatureService, FeatureService] | None = None

    def store(self) -> FeatureStore:
        """The feature store, built on first use: a server started while Postgres is down still
        answers /health, returns 503 meanwhile, and serves once Postgres is back."""
        store = self._store
        if store is None:
            with self._store_lock:
                if self._store is None:
                    services.check_postgres(self.config.postgres_url)
                    self._store = feast_store.serving_store(
                        self.config.postgres_url,
                        self.config.redis_url,
                        self.config.project,
                        self.config.registry_refresh_s,
                    )
                store = self._store
        return store

    def feature_services(self) -> tuple[FeatureService, FeatureService]:
        """sms_service and sms_text_service, resolved from the cached registry at most once per
        registry refresh: turning the registry's protobuf into objects costs more than a Redis read."""
        cached = self._services
        if cached is None or time.monotonic() - cached[0] > self.config.registry_refresh_s:
            store = self.store()
            cached = (
                time.monotonic(),
                serving.feature_service(store, feast_store.FEATURE_SERVICE),
                serving.feature_service(store, feast_store.TEXT_FEATURE_SERVICE),
            )
            self._services = cached
        return cached[1], cached[2]

    def predict_ids(self, message_ids: list[int]) -> tuple[str, list[Prediction]]:
        model = self.models.get()  # one snapshot for the whole request
        by_id, _ = self.feature_services()
        return model.version, serving.predict_ids(self.store(), model, message_ids, by_id)

    def predict_texts(self, texts: list[str]) -> tuple[str, list[Prediction]]:
        model = self.models.get()
        _, by_text = self.feature_services()
        return model.version, serving.predict_texts(self.store(), model, texts, by_text)

    async def run(self, work: Callable[[], T]) -> T:
        """Run a request's blocking work: on the event loop once the store is built, else in a thread.

        A built store answers from memory and one Redis round trip, well under a millisecond, which
        is less than the hop to the server's thread pool and back; under load that hop (and the
        threads contending for the GIL) made the tail ten times the median. Building the store reads
        the registry from Postgres and can take seconds, so until then work goes to the thread pool
        and the loop keeps answering /health.
        """
        if self._store is None:
            return await run_in_threadpool(work)
        return work()

    def start(self) -> None:
        try:
            self.models.refresh()
        except NoModelError as exc:
            log.warning("starting without a model: %s", exc)
        self.models.start()
        try:
            self.warm_up()
        except Exception as exc:  # the service starts anyway; requests report the cause as a 503
            log.warning("warm-up failed, requests will retry: %s", exc)

    def stop(self) -> None:
        self.models.stop()

    def warm_up(self) -> None:
        """Build the store and run both request forms once, so the first client pays no set-up."""
        by_id, by_text = self.feature_services()
        serving.text_features(self.store(), ["warm up"], by_text)
        self.store().get_online_features(features=by_id, entity_rows=[{"message_id": 0}])

    def readiness(self) -> tuple[bool, dict[str, str]]:
        checks: dict[str, str] = {}
        model = self.models.current
        checks["model"] = "ok" if model else f"no served model in {self.config.model_root}"
        for name, check, url in (
            ("redis", services.check_redis, self.config.redis_url),
            ("postgres", services.check_postgres, self.config.postgres_url),
        ):
            try:
                check(url)
                checks[name] = "ok"
            except services.ServiceUnavailable as exc:
                checks[name] = str(exc)
        if checks["postgres"] == "ok":
            try:
                self.store()
                checks["feature_store"] = "ok"
            except Exception as exc:
                checks["feature_store"] = f"{type(exc).__name__}: {exc}"
        return all(value == "ok" for value in checks.values()), checks


def _error(status: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "detail": detail, **extra})


def _install_error_handlers(app: FastAPI, config: ServiceConfig) -> None:
    postgres, redis_url = services.redact(config.postgres_url), services.redact(config.redis_url)

    @app.exception_handler(UnknownMessageError)
    async def unknown_message(request: Request, exc: UnknownMessageError) -> JSONResponse:
        return _error(404, "unknown_message_id", str(exc), message_ids=exc.message_ids)

    @app.exception_handler(NoModelError)
    async def no_model(request: Request, exc: NoModelError) -> JSONResponse:
        return _error(503, "no_model", str(exc))

    @app.exception_handler(FeatureMismatchError)
    async def feature_mismatch(request: Request, exc: FeatureMismatchError) -> JSONResponse:
        return _error(503, "feature_mismatch", str(exc))

    @app.exception_handler(services.ServiceUnavailable)
    async def unavailable(request: Request, exc: services.ServiceUnavailable) -> JSONResponse:
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
    _install_error_handlers(app, config)

    # The prediction handlers are `async def` and hand their blocking work to service.run (see why
    # there). They return a JSONResponse built from values the code produced itself: response_model
    # documents the shape, and FastAPI skips re-validating it on every request.
    @app.post("/predict", response_model=PredictResponse)
    async def predict(request: PredictRequest) -> JSONResponse:
        if request.message_id is not None:
            ids = [request.message_id]
            version, [prediction] = await service.run(lambda: service.predict_ids(ids))
        else:
            texts = [request.text or ""]
            version, [prediction] = await service.run(lambda: service.predict_texts(texts))
        return JSONResponse({**_out(prediction), "model_version": version})

    @app.post("/predict/batch", response_model=PredictBatchResponse)
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
