"""Typed Dagster resources. Each reads its environment when a run builds it, never at import."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psycopg
from feast import FeatureStore
from pydantic import PrivateAttr

from sms_assets import feast_store, services
from sms_assets.arrivals import LandingFolder
from sms_assets.ingestion import UCI_ZIP_URL, fetch_dataset
from sms_assets.model_store import ModelStore
from sms_assets.postgres import connect

DEFAULT_FEAST_PROJECT = "sms_assets"
HOLDBACK_ENV = "SMS_DATASET_HOLDBACK"
LANDING_ENV = "SMS_LANDING_DIR"


class PostgresResource(dg.ConfigurableResource):
    """The Postgres holding the raw and feature tables, Feast's offline store and its registry."""

    url: str | None = None  # unset: SMS_POSTGRES_URL, else an embedded server

    def resolved_url(self) -> str:
        return self.url or services.postgres_url()

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        with connect(self.resolved_url()) as conn:
            yield conn


class RedisResource(dg.ConfigurableResource):
    """The Redis that Feast's online store writes and serving reads."""

    url: str | None = None  # unset: SMS_REDIS_URL, else an embedded server

    def resolved_url(self) -> str:
        return self.url or services.redis_url()


class FeastResource(dg.ConfigurableResource):
    """The Feast feature store defined by `feature_repo/`, on these Postgres and Redis servers."""

    postgres: PostgresResource
    redis: RedisResource
    project: str | None = None  # unset: SMS_FEAST_PROJECT, else "sms_assets"

    _store: FeatureStore | None = PrivateAttr(default=None)

    def resolved_project(self) -> str:
        return self.project or os.environ.get("SMS_FEAST_PROJECT") or DEFAULT_FEAST_PROJECT

    def store(self) -> FeatureStore:
        if self._store is None:
            postgres_url, redis_url = self.postgres.resolved_url(), self.redis.resolved_url()
            # Fail fast and by name: Feast itself would retry or hang on a dead server.
            services.check_postgres(postgres_url)
            services.check_redis(redis_url)
            self._store = feast_store.feature_store(postgres_url, redis_url, self.resolved_project())
        return self._store


class DatasetResource(dg.ConfigurableResource):
    """The SMS Spam Collection: a local file, or the upstream zip downloaded once into the cache."""

    path: str | None = None  # unset: SMS_DATASET_PATH, else download
    url: str = UCI_ZIP_URL
    # The last N messages are left out of the initial load, for `sms-assets simulate` to replay as arrivals.
    holdback: int | None = None  # unset: SMS_DATASET_HOLDBACK, else 0

    def fetch(self) -> Path:
        cache = services.state_dir() / "downloads"
        return fetch_dataset(self.path or os.environ.get("SMS_DATASET_PATH"), cache, self.url)

    def resolved_holdback(self) -> int:
        if self.holdback is not None:
            return self.holdback
        return int(os.environ.get(HOLDBACK_ENV) or 0)


class ModelStoreResource(dg.ConfigurableResource):
    """Where trained models are kept, one folder per version, with a pointer to the served one."""

    root: str | None = None  # unset: SMS_MODEL_DIR, else <state dir>/models

    def model_store(self) -> ModelStore:
        root = self.root or os.environ.get("SMS_MODEL_DIR")
        return ModelStore(Path(root) if root else services.state_dir() / "models")


class LandingResource(dg.ConfigurableResource):
    """The folder where batches of new messages and late labels land, as TSV files."""

    path: str | None = None  # unset: SMS_LANDING_DIR, else <state dir>/landing

    def folder(self) -> LandingFolder:
        root = self.path or os.environ.get(LANDING_ENV)
        return LandingFolder(Path(root) if root else services.state_dir() / "landing")
