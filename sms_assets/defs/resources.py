"""Typed Dagster resources. Each field left unset (the default, shown as such in the launchpad) takes
its `SMS_*` setting, read when the resource is used, in the process that uses it (sms_core/settings.py:
pydantic-settings, with the documented defaults and embedded servers). A run's config or a test may set
any field instead."""

from __future__ import annotations

from collections.abc import Iterator
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


def _settings() -> settings.Settings:
    # Read on use, in this process: a code server, a run worker and a step each read their own.
    return settings.load()


class PostgresResource(dg.ConfigurableResource):
    """The Postgres holding the raw and feature tables, Feast's offline store and its registry."""

    url: str | None = Field(
        default=None,
        description="libpq or SQLAlchemy URL of the database; unset: SMS_POSTGRES_URL, else the "
        "embedded Postgres under the state folder.",
    )
    _resolved: str | None = PrivateAttr(default=None)

    def resolved_url(self) -> str:
        if self._resolved is None:
            self._resolved = self.url or _settings().postgres()
        return self._resolved

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        with connect(self.resolved_url()) as conn:
            yield conn

    def redacted(self) -> str:
        return urls.redact(self.resolved_url())


class RedisResource(dg.ConfigurableResource):
    """The Redis that Feast's online store writes and serving reads."""

    url: str | None = Field(
        default=None,
        description="redis://host:port/db (or redis+cluster://host:port) URL; unset: SMS_REDIS_URL, else "
        "the embedded Redis under the state folder.",
    )
    _resolved: str | None = PrivateAttr(default=None)

    def resolved_url(self) -> str:
        if self._resolved is None:
            self._resolved = self.url or _settings().redis()
        return self._resolved


class FeastResource(dg.ConfigurableResource):
    """The Feast feature store defined by `feature_repo/`, on these Postgres and Redis servers."""

    postgres: PostgresResource
    redis: RedisResource
    project: str | None = Field(
        default=None,
        description="Feast project: registry entries and Redis keys; unset: SMS_FEAST_PROJECT "
        f"({settings.DEFAULT_FEAST_PROJECT}).",
    )

    _store: Any = PrivateAttr(default=None)  # a FeatureStore, built on first use

    def project_name(self) -> str:
        return self.project or _settings().feast_project

    def store(self) -> FeatureStore:
        if self._store is None:
            postgres, redis = self.postgres.resolved_url(), self.redis.resolved_url()
            # Fail fast and by name: Feast itself would retry or hang on a dead server.
            urls.check_postgres(postgres)
            urls.check_redis(redis)
            self._store = feast_config.feature_store(postgres, redis, self.project_name())
        return self._store


class DatasetResource(dg.ConfigurableResource):
    """The SMS Spam Collection: a local file, or the upstream zip downloaded once into the cache."""

    path: str | None = Field(
        default=None, description="A local SMSSpamCollection file; unset: SMS_DATASET_PATH, else download."
    )
    state_dir: str | None = Field(
        default=None, description="A download is kept in its downloads/; unset: SMS_STATE_DIR."
    )
    url: str = UCI_ZIP_URL
    holdback: int | None = Field(
        default=None,
        ge=0,
        description="The last N messages, left out of the initial load for `sms-assets simulate` to "
        "replay as arrivals; unset: SMS_DATASET_HOLDBACK (0).",
    )

    def held_back(self) -> int:
        return self.holdback if self.holdback is not None else _settings().dataset_holdback

    def fetch(self) -> Path:
        if self.path and self.state_dir:
            return fetch_dataset(self.path, Path(self.state_dir) / "downloads", self.url)
        setting = _settings()
        path = self.path or (str(setting.dataset_path) if setting.dataset_path else None)
        state = Path(self.state_dir) if self.state_dir else setting.state()
        return fetch_dataset(path, state / "downloads", self.url)


class ModelStoreResource(dg.ConfigurableResource):
    """Where trained models are kept, one folder per version, with a pointer to the served one."""

    root: str | None = Field(default=None, description="The model folder; unset: SMS_MODEL_DIR.")

    def model_store(self) -> ModelStore:
        from sms_core.model.store import ModelStore

        return ModelStore(Path(self.root) if self.root else _settings().models)


class LandingResource(dg.ConfigurableResource):
    """The folder where batches of new messages and late labels land, as TSV files."""

    path: str | None = Field(default=None, description="The landing folder; unset: SMS_LANDING_DIR.")
    max_bytes: int = Field(
        default=DEFAULT_MAX_BATCH_BYTES,
        gt=0,
        description="The largest batch file, in bytes; a larger one is quarantined without being read.",
    )

    def folder(self) -> LandingFolder:
        return LandingFolder(Path(self.path) if self.path else _settings().landing, self.max_bytes)


def project_resources(chosen: settings.Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    """The resources every definition uses, keyed as the assets name them.

    Without `chosen` (what the definitions use), each field is left unset and takes its setting where
    the resource is used; with it (a test's own settings), each field is given its value.
    """
    if chosen is None:
        postgres = PostgresResource()
        return {
            "postgres": postgres,
            "feast": FeastResource(postgres=postgres, redis=RedisResource()),
            "dataset": DatasetResource(),
            "model_store": ModelStoreResource(),
            "landing": LandingResource(),
        }
    postgres = PostgresResource(url=chosen.postgres())
    return {
        "postgres": postgres,
        "feast": FeastResource(
            postgres=postgres, redis=RedisResource(url=chosen.redis()), project=chosen.feast_project
        ),
        "dataset": DatasetResource(
            path=str(chosen.dataset_path) if chosen.dataset_path else None,
            state_dir=str(chosen.state()),
            holdback=chosen.dataset_holdback,
        ),
        "model_store": ModelStoreResource(root=str(chosen.models)),
        "landing": LandingResource(path=str(chosen.landing)),
    }


@dg.definitions
def resources() -> dg.Definitions:
    """The resources, and the executor SMS_EXECUTOR names (bounded by SMS_MAX_CONCURRENT)."""
    from sms_assets.defs.executor import executor_from_settings

    try:
        chosen = settings.load()
    except settings.BadSetting as exc:
        # One line naming the variable, whichever Dagster command is loading the definitions.
        raise SystemExit(f"error: {exc}") from None
    return dg.Definitions(resources=project_resources(), executor=executor_from_settings(chosen))
