"""Typed Dagster resources. Their settings are fields, filled by `project_resources`: with `dg.EnvVar`s
in the definitions, with resolved values in the CLI and tests. Defaults live in `sms_core/settings.py`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import psycopg
from pydantic import Field, PrivateAttr

from sms_assets.defs.ingestion.dataset import UCI_ZIP_URL, fetch_dataset
from sms_assets.defs.ingestion.landing import LandingFolder
from sms_assets.defs.ingestion.landing_files import DEFAULT_MAX_BATCH_BYTES
from sms_core import feast_config, settings, urls
from sms_core.postgres import connect

if TYPE_CHECKING:
    from feast import FeatureStore

    from sms_core.model.store import ModelStore


class PostgresResource(dg.ConfigurableResource):
    """The Postgres holding the raw and feature tables, Feast's offline store and its registry."""

    url: str = Field(description="libpq or SQLAlchemy URL of the database (SMS_POSTGRES_URL).")

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        with connect(self.url) as conn:
            yield conn

    def redacted(self) -> str:
        return urls.redact(self.url)


class RedisResource(dg.ConfigurableResource):
    """The Redis that Feast's online store writes and serving reads."""

    url: str = Field(description="redis://host:port/db URL (SMS_REDIS_URL).")


class FeastResource(dg.ConfigurableResource):
    """The Feast feature store defined by `feature_repo/`, on these Postgres and Redis servers."""

    postgres: PostgresResource
    redis: RedisResource
    project: str = Field(description="Feast project: registry entries and Redis keys (SMS_FEAST_PROJECT).")

    _store: Any = PrivateAttr(default=None)  # a FeatureStore, built on first use

    def store(self) -> FeatureStore:
        if self._store is None:
            # Fail fast and by name: Feast itself would retry or hang on a dead server.
            urls.check_postgres(self.postgres.url)
            urls.check_redis(self.redis.url)
            self._store = feast_config.feature_store(self.postgres.url, self.redis.url, self.project)
        return self._store


class DatasetResource(dg.ConfigurableResource):
    """The SMS Spam Collection: a local file, or the upstream zip downloaded once into the cache."""

    path: str = Field(description="A local SMSSpamCollection file; empty: download (SMS_DATASET_PATH).")
    state_dir: str = Field(
        description="The state folder; a download is kept in its downloads/ (SMS_STATE_DIR)."
    )
    url: str = UCI_ZIP_URL
    holdback: int = Field(
        default=0,
        description="The last N messages, left out of the initial load for `sms-assets simulate` to "
        "replay as arrivals (SMS_DATASET_HOLDBACK).",
    )

    def fetch(self) -> Path:
        return fetch_dataset(self.path or None, Path(self.state_dir) / "downloads", self.url)


class ModelStoreResource(dg.ConfigurableResource):
    """Where trained models are kept, one folder per version, with a pointer to the served one."""

    root: str = Field(description="The model folder (SMS_MODEL_DIR).")

    def model_store(self) -> ModelStore:
        from sms_core.model.store import ModelStore

        return ModelStore(Path(self.root))


class LandingResource(dg.ConfigurableResource):
    """The folder where batches of new messages and late labels land, as TSV files."""

    path: str = Field(description="The landing folder (SMS_LANDING_DIR).")
    max_bytes: int = Field(
        default=DEFAULT_MAX_BATCH_BYTES,
        gt=0,
        description="The largest batch file, in bytes; a larger one is quarantined without being read.",
    )

    def folder(self) -> LandingFolder:
        return LandingFolder(Path(self.path), self.max_bytes)


def project_resources(env: Mapping[str, str] | None = None) -> dict[str, dg.ConfigurableResource]:
    """The resources every definition uses, keyed as the assets name them.

    Without `env`, each setting is a `dg.EnvVar`, read when a run starts (what `definitions.py` uses);
    with `env` (settings.resolve()'s result, or a test's own), the values are taken from it.
    """

    def text(name: str) -> str:
        return env[name] if env is not None else dg.EnvVar(name)

    def number(name: str) -> int:
        return int(env[name]) if env is not None else dg.EnvVar.int(name)  # type: ignore[return-value]

    postgres = PostgresResource(url=text(settings.POSTGRES_ENV))
    return {
        "postgres": postgres,
        "feast": FeastResource(
            postgres=postgres,
            redis=RedisResource(url=text(settings.REDIS_ENV)),
            project=text(settings.PROJECT_ENV),
        ),
        "dataset": DatasetResource(
            path=text(settings.DATASET_ENV),
            state_dir=text(settings.STATE_ENV),
            holdback=number(settings.HOLDBACK_ENV),
        ),
        "model_store": ModelStoreResource(root=text(settings.MODEL_DIR_ENV)),
        "landing": LandingResource(path=text(settings.LANDING_ENV)),
    }
