"""What one server process shares across requests: the feature store, the feature services, the model."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from feast import FeatureService, FeatureStore
from feast.errors import FeatureServiceNotFoundException

from sms_api import readiness
from sms_api.coalesce import CoalescedReads
from sms_api.model_watcher import ModelWatcher
from sms_api.online_store import HoldingCheck, OfflineTable
from sms_core import feast_config, prediction, settings, urls
from sms_core.contracts import TEXT_VIEW_FEATURES, VIEW_FEATURES
from sms_core.model.store import ModelStore, ModelVersion
from sms_core.prediction import Answered, Prediction, UnknownMessageError
from sms_core.served_log.writer import AnswerLog

log = logging.getLogger(__name__)


class DeadlineExceeded(RuntimeError):
    """A request's deadline passed while it waited for a service; the message names the service."""


@dataclass(frozen=True)
class ServiceConfig:
    postgres_url: str
    redis_url: str
    project: str
    model_root: Path
    model_poll_s: float = 1.0  # how soon a newly promoted model is served
    registry_refresh_s: int = 60  # how soon a registry change (feast_registry) is seen
    deadline_s: float = settings.DEFAULT_API_DEADLINE_S  # waiting longer for Redis or Postgres is a 504
    # Required on /predict and /predict/batch when set; left out of repr so no log line can show it.
    api_token: str | None = field(default=None, repr=False)
    log_answers: bool = True  # each answer written to its feature service's log (docs/served-log.md)
    log_texts: bool = False
    log_queue: int = settings.DEFAULT_LOG_QUEUE

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ServiceConfig:
        """The configuration the settings give (`sms-assets serve`, and each of its worker processes)."""
        chosen = settings.load(environ).resolved()
        assert chosen.postgres_url is not None and chosen.redis_url is not None
        return cls(
            postgres_url=chosen.postgres_url,
            redis_url=chosen.redis_url,
            project=chosen.feast_project,
            model_root=chosen.models,
            api_token=chosen.token,
            deadline_s=chosen.api_deadline_s,
            log_answers=chosen.log_answers,
            log_texts=chosen.log_texts,
            log_queue=chosen.log_queue,
        )


class PredictionService:
    """The feature store and the model watcher one server process shares across requests.

    Requests run on the event loop and never block it: Redis is read through Feast's asyncio client,
    and building the feature store (reading the registry from Postgres, which can take seconds) runs
    once, in a thread, however many requests wait for it. Every wait is bounded by the request's
    deadline, `config.deadline_s`; past it the request fails with DeadlineExceeded naming the service
    it waited for, and the wait is abandoned (Feast's Redis connection is dropped, not reused).
    """

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.models = ModelWatcher(ModelStore(config.model_root), config.model_poll_s)
        self._store: FeatureStore | None = None
        self._store_lock = threading.Lock()
        self._building: asyncio.Future[FeatureStore] | None = None
        self._services: dict[str, tuple[float, FeatureService]] = {}
        self.offline = OfflineTable(config.postgres_url)
        self.holding = HoldingCheck(config.redis_url, config.project, self.offline, readiness.READY_TIMEOUT_S)
        self.reads = CoalescedReads(
            lambda ids, service: prediction.read_ids_async(self.store(), ids, service), config.deadline_s
        )
        answers = AnswerLog(self.store, config.postgres_url, config.log_queue, config.log_texts)
        self.served_log = answers if config.log_answers else None  # built either way: it starts nothing

    def store(self) -> FeatureStore:
        """The feature store, built on first use: a server started while Postgres is down still
        answers /health, returns 503 meanwhile, and serves once Postgres is back."""
        store = self._store
        if store is None:
            with self._store_lock:
                if self._store is None:
                    c = self.config
                    urls.check_postgres(c.postgres_url)
                    self._store = feast_config.serving_store(
                        c.postgres_url, c.redis_url, c.project, c.registry_refresh_s
                    )
                store = self._store
        return store

    def feature_service(self, name: str) -> FeatureService:
        """A feature service, resolved from the cached registry at most once per registry refresh:
        turning the registry's protobuf into objects costs more than a Redis read."""
        cached = self._services.get(name)
        if cached is None or time.monotonic() - cached[0] > self.config.registry_refresh_s:
            store = self.store()
            try:
                service = prediction.feature_service(store, name)
            except FeatureServiceNotFoundException:
                # A model promoted since the last refresh may name a service applied after it.
                store.refresh_registry()
                try:
                    service = prediction.feature_service(store, name)
                except FeatureServiceNotFoundException:
                    raise prediction.FeatureMismatchError(
                        f"feature service {name} is not in the registry of Feast project "
                        f"{self.config.project}: materialize feast_registry"
                    ) from None
            cached = (time.monotonic(), service)
            self._services[name] = cached
        return cached[1]

    def feature_services(self, model: ModelVersion) -> tuple[FeatureService, FeatureService]:
        """The services a model is served through: the one its manifest names, and its text twin."""
        by_id, by_text = prediction.served_through(model)
        return self.feature_service(by_id), self.feature_service(by_text)

    @asynccontextmanager
    async def _waiting_for(self, service: str, url: str, deadline: float) -> AsyncIterator[None]:
        """The block, cancelled at `deadline` (event-loop time) and then DeadlineExceeded naming the
        service it waited for."""
        try:
            async with asyncio.timeout_at(deadline):
                yield
        except TimeoutError:
            raise DeadlineExceeded(
                f"{service} at {urls.redact(url)} did not answer within the request deadline "
                f"of {self.config.deadline_s:g} s"
            ) from None

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.config.deadline_s

    async def _built_store(self, deadline: float) -> FeatureStore:
        """The feature store, built off the loop the first time, once however many requests wait."""
        if self._store is None:
            building = self._building
            if building is None or (building.done() and (building.cancelled() or building.exception())):
                building = self._building = asyncio.ensure_future(asyncio.to_thread(self.store))
                # Its failure is each waiting request's answer; with none left waiting, it is not news.
                building.add_done_callback(lambda done: done.cancelled() or done.exception())
            async with self._waiting_for("Postgres", self.config.postgres_url, deadline):
                # Shielded: a request that gives up does not cancel the build the others wait for.
                await asyncio.shield(building)
        return self.store()

    async def predict_ids(self, message_ids: list[int]) -> tuple[str, list[Prediction]]:
        deadline = self._deadline()
        model = self.models.get()  # one snapshot for the whole request
        await self._built_store(deadline)
        by_id, _ = self.feature_services(model)
        try:
            async with self._waiting_for("Redis", self.config.redis_url, deadline):
                read = await self.reads.read(message_ids, by_id)
            answered = prediction.answer_ids(model, message_ids, read)
        except UnknownMessageError as missing:
            # Unknown, or lost by Redis: the offline table says which.
            async with self._waiting_for("Postgres", self.config.postgres_url, deadline):
                answer = await self.offline.unknown_or_lost(missing.message_ids)
            raise answer from None
        return self._logged(by_id, "id", message_ids, answered, model)

    async def predict_texts(self, texts: list[str]) -> tuple[str, list[Prediction]]:
        deadline = self._deadline()
        model = self.models.get()
        store = await self._built_store(deadline)
        _, by_text = self.feature_services(model)
        answered = await prediction.answer_texts_async(store, model, texts, by_text)
        return self._logged(by_text, "text", texts, answered, model)

    def _logged(
        self, service: FeatureService, form: str, request: list, answered: Answered, model: ModelVersion
    ) -> tuple[str, list[Prediction]]:
        """The answer, handed to the served log on the way out (which never blocks nor fails it)."""
        if self.served_log is not None:
            self.served_log.offer(service, form, request, answered, model.version)
        return model.version, answered.predictions

    def start(self) -> None:
        self.models.refresh()
        if self.models.current is None:
            log.warning("starting without a model: %s", self.model_check())
        self.models.start()
        if self.served_log is not None:
            self.served_log.start()

    def stop(self) -> None:
        self.models.stop()
        if self.served_log is not None:
            self.served_log.stop()

    async def aclose(self) -> None:
        await self.offline.close()

    def served_log_check(self) -> str:
        """What /ready says of the served log; informational, it never makes the service unready."""
        if self.served_log is None:
            return f"off ({settings.LOG_ANSWERS_ENV} is false)"
        return self.served_log.describe()

    async def warm_up(self) -> None:
        """Build the store and run both request forms once, so the first client pays no set-up; the
        service starts anyway when this fails (requests report the cause)."""
        try:
            deadline = self._deadline()
            store = await self._built_store(deadline)
            model = self.models.current
            if model:
                by_id, by_text = self.feature_services(model)
            else:
                by_id, by_text = VIEW_FEATURES, TEXT_VIEW_FEATURES
            await prediction.text_features_async(store, ["warm up"], by_text)
            async with self._waiting_for("Redis", self.config.redis_url, deadline):
                await store.get_online_features_async(features=by_id, entity_rows=[{"message_id": 0}])
        except Exception as exc:
            log.warning("warm-up failed, requests will retry: %s", exc)
        # Frozen, start-up's objects are not re-scanned by each full collection (a 0.1 s pause a request pays)
        gc.collect()
        gc.freeze()

    def model_check(self) -> str:
        """The model's readiness: "ok" when CURRENT's version is served, else why not and what is."""
        model, refused = self.models.current, self.models.refused
        if refused is not None:
            serving = f"serving {model.version}" if model else "no model served"
            return f"refused version {refused.version}: {refused.reason}; {serving}"
        return "ok" if model else f"no served model in {self.config.model_root}"

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        """Each check ("ok" or why not): the model, Redis and Postgres (each asked within
        readiness.READY_TIMEOUT_S), once Postgres answers the feature store, and once both answer
        whether Redis holds every message it must (a store that lost keys answers 503 for them)."""
        checks = {"model": self.model_check()}
        checks.update(await readiness.services_check(self.config.redis_url, self.config.postgres_url))
        if checks["postgres"] == readiness.OK:
            try:
                await self._built_store(self._deadline())
                checks["feature_store"] = readiness.OK
            except Exception as exc:
                checks["feature_store"] = f"{type(exc).__name__}: {exc}"
        if checks["postgres"] == checks["redis"] == readiness.OK:
            checks["online_store"] = await readiness.online_store_check(self.holding)
        return all(value == readiness.OK for value in checks.values()), checks
