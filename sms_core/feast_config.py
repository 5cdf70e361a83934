"""The Feast feature store on the project's Postgres and Redis, configured by Feast's own loader.

`feature_repo/feature_store.yaml` names its environment-specific values as `${SMS_FEAST_*}` variables;
`feast_env` derives them from the two service URLs (a `redis+cluster://` URL selects Feast's
`redis_type: redis_cluster`), and Feast's `load_repo_config` (what the `feast` CLI runs) expands
them. Each value is a quoted YAML scalar, so a password holding YAML syntax survives.
For the CLI: `eval "$(sms-assets feast-env)" && feast -c feature_repo plan`.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from sms_core import bounds, moved, urls, watchdog

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig

# Feast itself is imported by the functions that build a store, not here: importing it costs seconds
# (typeguard instruments its classes), and a run that never touches Feast should not pay for it.
REPO_PATH = Path(__file__).resolve().parents[1] / "feature_repo"
FEATURE_STORE_YAML = REPO_PATH / "feature_store.yaml"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "postgres")

# Feast's loader expands variables from the process environment; loads are serialized so that two
# stores built at once (two test slices, two resources) each see their own values.
_ENVIRON_LOCK = threading.Lock()


def feast_env(postgres_url: str, redis_url: str, project: str) -> dict[str, str]:
    """The variables `feature_store.yaml` names, derived from the two service URLs."""
    pg = urls.postgres(postgres_url)
    # A unix-socket URL carries its directory as ?host=/path (libpq convention).
    host = pg.host or str(pg.query.get("host") or "localhost")
    local = host.startswith("/") or host in LOCAL_HOSTS
    redis = urls.redis_kwargs(redis_url)
    if redis["password"] and "," in redis["password"]:
        # Feast splits its Redis connection string on commas.
        raise urls.BadUrl("SMS_REDIS_URL: Feast's Redis connection string cannot carry a ',' in a password")
    cluster = urls.is_cluster(redis_url)
    if cluster:
        # Every seed node; no `db`: redis-py's RedisCluster refuses the argument, even as 0.
        connection = [f"{host}:{port}" for host, port in urls.cluster_nodes(redis_url)]
    else:
        connection = [f"{redis['host']}:{redis['port']}", f"db={redis['db']}"]
    connection += [
        f"socket_connect_timeout={urls.CONNECT_TIMEOUT_S}",
        f"socket_timeout={urls.CONNECT_TIMEOUT_S}",
    ]
    # Feast json-decodes each value: quoted, a password such as `true` or `123` stays a string.
    connection += [f"{name}={json.dumps(redis[name])}" for name in ("username", "password") if redis[name]]
    values = {
        "SMS_FEAST_YAML_PROJECT": project,
        # The registry's SQLAlchemy engine passes the URL's query on to libpq: the same bounds as the
        # project's own connections (urls.bounded_params).
        "SMS_FEAST_REGISTRY_URL": urls.bounded_url(postgres_url).render_as_string(hide_password=False),
        "SMS_FEAST_PG_HOST": host,
        "SMS_FEAST_PG_PORT": str(pg.port or 5432),
        "SMS_FEAST_PG_DATABASE": pg.database or "postgres",
        "SMS_FEAST_PG_USER": pg.username or "postgres",
        "SMS_FEAST_PG_PASSWORD": pg.password or "",
        "SMS_FEAST_PG_SSLMODE": str(pg.query.get("sslmode") or ("disable" if local else "require")),
        # The one bound Feast's Postgres offline store takes (PostgreSQLConfig.keepalives_idle).
        "SMS_FEAST_PG_KEEPALIVES_IDLE": str(bounds.KEEPALIVES_IDLE_S),
        "SMS_FEAST_REDIS": ",".join(connection),
        "SMS_FEAST_REDIS_TYPE": "redis_cluster" if cluster else "redis",
    }
    # Each a YAML double-quoted scalar, escaped by PyYAML itself: any character survives the expansion.
    return {name: _yaml_scalar(value) for name, value in values.items()}


def _yaml_scalar(value: str) -> str:
    return yaml.safe_dump(value, default_style='"', allow_unicode=True, width=float("inf")).rstrip("\n")


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def repo_config(postgres_url: str, redis_url: str, project: str) -> RepoConfig:
    """`feature_store.yaml` as Feast's own loader reads it, for these services and project."""
    from feast.infra.registry.sql import SqlRegistryConfig
    from feast.repo_config import load_repo_config

    # A registry applied before a module moved holds on-demand view source that imports the old path.
    moved.install()
    # Registers the feature services' logging destination before anything reads the registry (Feast
    # raises KeyError 'postgres_destination' otherwise); feature_store.yaml's offline store imports it
    # too, which is what the `feast` CLI relies on.
    from sms_core.served_log import destination  # noqa: F401

    values = feast_env(postgres_url, redis_url, project)
    with _ENVIRON_LOCK, _environment(values):
        config = load_repo_config(REPO_PATH, FEATURE_STORE_YAML)
    registry = config.registry
    if isinstance(registry, SqlRegistryConfig):
        # The registry engine's connections are watched like the project's own: a server that goes
        # silent ends their waits too (the URL still chooses the dialect; its bounds are in libpq's
        # connection string).
        registry.sqlalchemy_config_kwargs = {
            **registry.sqlalchemy_config_kwargs,
            "creator": functools.partial(watchdog.watched_connection, postgres_url),
        }
    return config


def feature_store(postgres_url: str, redis_url: str, project: str) -> FeatureStore:
    from feast import FeatureStore

    return FeatureStore(config=repo_config(postgres_url, redis_url, project))


def serving_store(
    postgres_url: str, redis_url: str, project: str, registry_refresh_s: int = 60
) -> FeatureStore:
    """A store for a long-running server: its registry is re-read by a background thread.

    With the default (sync) cache a request that finds the cache expired re-reads the registry from
    Postgres itself; in thread mode no request ever waits for the registry, and while Postgres is down
    the last registry read keeps serving.

    Its Redis client does not retry: redis-py's default retries a failed connection three times with
    up to seconds of backoff each, which a request's deadline would cut short at random. A request
    that finds Redis gone answers 503 at once; the next one connects afresh.
    """
    from feast import FeatureStore
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType

    config = repo_config(postgres_url, redis_url, project)
    registry = config.registry
    assert registry is not None  # feature_store.yaml declares one
    registry.cache_mode = "thread"
    registry.cache_ttl_seconds = registry_refresh_s
    online = config.online_store
    assert isinstance(online, RedisOnlineStoreConfig)  # feature_store.yaml declares Redis
    # Feast passes each connection-string parameter to redis-py, json-decoded: `retry=None`. On a
    # cluster None means RedisCluster's default of three attempts; a count of 0 is what a connection
    # string can say (redis-py would rather have a Retry object, which it cannot carry).
    if online.redis_type == RedisType.redis_cluster:
        online.connection_string += ",cluster_error_retry_attempts=0"
    else:
        online.connection_string += ",retry=null"
    return FeatureStore(config=config)
