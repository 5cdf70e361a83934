"""What one server process shares across requests: the feature store, the feature services, the model."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from fastapi.concurrency import run_in_threadpool
from feast import FeatureService, FeatureStore

from sms_api import prediction
from sms_api.model_watcher import ModelWatcher
from sms_api.prediction import Prediction
from sms_assets.lib import feast_config, settings, urls
from sms_assets.lib.model_store import ModelStore, ModelVersion

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ServiceConfig:
    postgres_url: str
    redis_url: str
    project: str
    model_root: Path
    model_poll_s: float = 1.0  # how soon a newly promoted model is served
    registry_refresh_s: int = 60  # how soon a registry change (feast_registry) is seen
    # Required on /predict and /predict/batch when set; left out of repr so no log line can show it.
    api_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> ServiceConfig:
        """The configuration the settings give (`sms-assets serve`, and each of its worker processes)."""
        env = settings.resolve(environ)
        return cls(
            postgres_url=env[settings.POSTGRES_ENV],
            redis_url=env[settings.REDIS_ENV],
            project=env[settings.PROJECT_ENV],
            model_root=Path(env[settings.MODEL_DIR_ENV]),
            api_token=settings.api_token(environ),
        )


class PredictionService:
    """The feature store and the model watcher one server process shares across requests."""

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.models = ModelWatcher(ModelStore(config.model_root), config.model_poll_s)
        self._store: FeatureStore | None = None
        self._store_lock = threading.Lock()
        self._services: dict[str, tuple[float, FeatureService]] = {}

    def store(self) -> FeatureStore:
        """The feature store, built on first use: a server started while Postgres is down still
        answers /health, returns 503 meanwhile, and serves once Postgres is back."""
        store = self._store
        if store is None:
            with self._store_lock:
                if self._store is None:
                    urls.check_postgres(self.config.postgres_url)
                    self._store = feast_config.serving_store(
                        self.config.postgres_url,
                        self.config.redis_url,
                        self.config.project,
                        self.config.registry_refresh_s,
                    )
                store = self._store
        return store

    def feature_service(self, name: str) -> FeatureService:
        """A feature service, resolved from the cached registry at most once per registry refresh:
        turning the registry's protobuf into objects costs more than a Redis read."""
        cached = self._services.get(name)
        if cached is None or time.monotonic() - cached[0] > self.config.registry_refresh_s:
            cached = (time.monotonic(), prediction.feature_service(self.store(), name))
            self._services[name] = cached
        return cached[1]

    def feature_services(self, model: ModelVersion) -> tuple[FeatureService, FeatureService]:
        """The services a model is served through: the one its manifest names, and its text twin."""
        by_id, by_text = prediction.served_through(model)
        return self.feature_service(by_id), self.feature_service(by_text)

    def predict_ids(self, message_ids: list[int]) -> tuple[str, list[Prediction]]:
        model = self.models.get()  # one snapshot for the whole request
        by_id, _ = self.feature_services(model)
        return model.version, prediction.predict_ids(self.store(), model, message_ids, by_id)

    def predict_texts(self, texts: list[str]) -> tuple[str, list[Prediction]]:
        model = self.models.get()
        _, by_text = self.feature_services(model)
        return model.version, prediction.predict_texts(self.store(), model, texts, by_text)

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
        self.models.refresh()
        if self.models.current is None:
            log.warning("starting without a model: %s", self.model_check())
        self.models.start()
        try:
            self.warm_up()
        except Exception as exc:  # the service starts anyway; requests report the cause as a 503
            log.warning("warm-up failed, requests will retry: %s", exc)

    def stop(self) -> None:
        self.models.stop()

    def warm_up(self) -> None:
        """Build the store and run both request forms once, so the first client pays no set-up."""
        model = self.models.current
        if model:
            by_id, by_text = self.feature_services(model)
        else:
            by_id, by_text = prediction.VIEW_FEATURES, prediction.TEXT_VIEW_FEATURES
        prediction.text_features(self.store(), ["warm up"], by_text)
        self.store().get_online_features(features=by_id, entity_rows=[{"message_id": 0}])

    def model_check(self) -> str:
        """The model's readiness: "ok" when CURRENT's version is served, else why not and what is."""
        model, refused = self.models.current, self.models.refused
        if refused is not None:
            serving = f"serving {model.version}" if model else "no model served"
            return f"refused version {refused.version}: {refused.reason}; {serving}"
        return "ok" if model else f"no served model in {self.config.model_root}"

    def readiness(self) -> tuple[bool, dict[str, str]]:
        checks: dict[str, str] = {"model": self.model_check()}
        for name, check, url in (
            ("redis", urls.check_redis, self.config.redis_url),
            ("postgres", urls.check_postgres, self.config.postgres_url),
        ):
            try:
                check(url)
                checks[name] = "ok"
            except urls.ServiceUnavailable as exc:
                checks[name] = str(exc)
        if checks["postgres"] == "ok":
            try:
                self.store()
                checks["feature_store"] = "ok"
            except Exception as exc:
                checks["feature_store"] = f"{type(exc).__name__}: {exc}"
        return all(value == "ok" for value in checks.values()), checks
