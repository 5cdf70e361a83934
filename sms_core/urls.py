"""Service URLs, parsed and masked by SQLAlchemy's URL object, and checks that a server answers.

One parser for both services: SQLAlchemy's `make_url` takes a password holding `#`, `?`, `/` or `%` as
it is, or percent-encoded, where `urllib`'s split (and so redis-py's `from_url`) cuts it at `#` or `?`.
Every URL that reaches a message, a log line or Dagster metadata goes through `redact`.

A Redis URL names one server (`redis://`) or seed nodes of a Redis Cluster (`redis+cluster://host:port`,
more as `?node=host:port`): the mode travels with the URL to every process and caller, and
`redis_client` gives the matching redis-py client, which finds the cluster's other nodes itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import quote, quote_plus

import psycopg
import redis
import redis.asyncio
from psycopg.conninfo import make_conninfo
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from sms_core.bounds import CONNECT_TIMEOUT_S, bounded_params

POSTGRES_SCHEMES = ("postgresql", "postgres")
MALFORMED = "<malformed URL, not shown>"
REDIS_SCHEMES = ("redis", "redis+cluster")
REDIS_URL_FORM = "redis://host:port/db or redis+cluster://host:port URL"
# What a redis-py client raises when a server or cluster fails; a cluster that cannot be reached or
# formed raises RedisClusterException, which is not a RedisError.
REDIS_ERRORS = (redis.RedisError, RedisClusterException)


class ServiceUnavailable(RuntimeError):
    """A service could not be reached; the message names its URL without the password."""


class BadUrl(ValueError):
    """A service URL that cannot be used; the message names the setting, never the password."""


def parse(url: str, setting: str) -> URL:
    """`url` as a SQLAlchemy URL; BadUrl naming `setting` (and not the value) when it is malformed."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise BadUrl(f"{setting} is not a URL of the form scheme://user:password@host:port/name") from None
    if "@" in (parsed.host or "") or "@" in (parsed.database or ""):
        # The password held a raw '@': the rest of it would be read as the host (or, after a '/', as
        # the database name).
        raise BadUrl(f"{setting} holds an '@' in its user or password: percent-encode it as %40")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        # SQLAlchemy takes any number; a client would then fail on every connection, or take 0 as
        # "the default port".
        raise BadUrl(f"{setting} port must be 1 to 65535, got {parsed.port}")
    return parsed


def redact(url: str) -> str:
    """The URL with its password masked, for messages, logs and metadata."""
    try:
        parsed = parse(url, "URL")
    except BadUrl:
        return MALFORMED
    return parsed.render_as_string(hide_password=True)


def postgres(url: str, setting: str = "SMS_POSTGRES_URL") -> URL:
    """A Postgres URL (libpq or SQLAlchemy form) as a SQLAlchemy URL with the psycopg 3 driver."""
    parsed = parse(url, setting)
    if parsed.get_backend_name() not in POSTGRES_SCHEMES:
        raise BadUrl(f"{setting} must be a postgresql:// URL, got {redact(url)}")
    return parsed.set(drivername="postgresql+psycopg")


def bounded_url(url: str) -> URL:
    """A Postgres URL (psycopg 3 driver) carrying `bounded_params` where it does not say otherwise: for
    SQLAlchemy engines (Feast's SQL registry), which pass query parameters on to libpq."""
    parsed = postgres(url)
    return parsed.update_query_dict({k: v for k, v in bounded_params().items() if k not in parsed.query})


def libpq_conninfo(url: str) -> str:
    """A libpq connection string (what psycopg.connect takes) for a libpq or SQLAlchemy Postgres URL,
    with `bounded_params` where the URL does not say otherwise.

    Key/value pairs quoted by psycopg's `make_conninfo` (as Feast's own Postgres stores connect), not a
    URL: libpq's URL parser refuses a password holding a space and quotes the password back in the
    error it raises.
    """
    parsed = postgres(url)
    params: dict[str, Any] = dict(bounded_params())
    params.update(parsed.translate_connect_args(username="user", database="dbname"))
    # ?host=/run/postgresql (a socket folder), ?sslmode=...: libpq options, as SQLAlchemy passes them.
    params.update(
        {key: value if isinstance(value, str) else value[-1] for key, value in parsed.query.items()}
    )
    return make_conninfo("", **params)


def redis_kwargs(url: str, setting: str = "SMS_REDIS_URL") -> dict[str, Any]:
    """host, port, db, username and password of a Redis URL, as redis-py's client takes them."""
    parsed = parse(url, setting)
    if parsed.drivername not in REDIS_SCHEMES:
        raise BadUrl(f"{setting} must be a {REDIS_URL_FORM}, got {redact(url)}")
    db = parsed.database or "0"
    if not db.isdigit():
        raise BadUrl(f"{setting} database must be a number, got {db!r} in {redact(url)}")
    cluster = parsed.drivername == "redis+cluster"
    if cluster and int(db) != 0:
        raise BadUrl(f"{setting}: a Redis Cluster has database 0 only, got {db} in {redact(url)}")
    if _more_seeds(parsed, url, setting) and not cluster:
        raise BadUrl(
            f"{setting}: node= names more nodes of a Redis Cluster: write redis+cluster://, got {redact(url)}"
        )
    return {
        "host": parsed.host or "localhost",
        "port": parsed.port or 6379,
        "db": int(db),
        "username": parsed.username or None,
        "password": parsed.password or None,
    }


def _more_seeds(parsed: URL, url: str, setting: str) -> list[tuple[str, int]]:
    """The URL's `?node=host:port` seed nodes, each checked."""
    values = parsed.query.get("node") or ()
    seeds = []
    for value in (values,) if isinstance(values, str) else values:
        host, _, port = value.rpartition(":")
        if not (host and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise BadUrl(f"{setting}: node={value!r} is not host:port, in {redact(url)}")
        seeds.append((host, int(port)))
    return seeds


def is_cluster(url: str) -> bool:
    """Whether a Redis URL names seed nodes of a Redis Cluster (`redis+cluster://`)."""
    return parse(url, "SMS_REDIS_URL").drivername == "redis+cluster"


def cluster_nodes(url: str, setting: str = "SMS_REDIS_URL") -> list[tuple[str, int]]:
    """The seed nodes of a `redis+cluster://` URL: its host:port, then each `?node=host:port`.

    One answering seed is enough for a client to find every node; more let it start while one is down.
    """
    kwargs = redis_kwargs(url, setting)
    return [(kwargs["host"], kwargs["port"]), *_more_seeds(parse(url, setting), url, setting)]


def redis_client(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> redis.Redis | RedisCluster:
    """A client that gives up within `timeout_s` when Redis does not answer.

    For a cluster, redis-py's RedisCluster: it asks a seed node for the slot map when built (so a
    cluster that cannot be reached fails here), routes each key to its node, splits a multi-key
    DEL by hash slot and runs SCAN on every primary.
    """
    kwargs = redis_kwargs(url)
    timeouts: dict[str, Any] = {"socket_connect_timeout": timeout_s, "socket_timeout": timeout_s}
    if is_cluster(url):
        # No `db`: RedisCluster refuses the argument, even as 0.
        nodes = [ClusterNode(host, port) for host, port in cluster_nodes(url)]
        return RedisCluster(
            startup_nodes=nodes, username=kwargs["username"], password=kwargs["password"], **timeouts
        )
    return redis.Redis(**kwargs, **timeouts)


def async_redis_client(url: str, timeout_s: float) -> redis.asyncio.Redis | redis.asyncio.RedisCluster:
    """An asyncio client that tries once (redis-py retries three times by default), within `timeout_s`."""
    kwargs = redis_kwargs(url)
    timeouts: dict[str, Any] = {"socket_connect_timeout": timeout_s, "socket_timeout": timeout_s}
    if is_cluster(url):
        nodes = [AsyncClusterNode(host, port) for host, port in cluster_nodes(url)]
        return redis.asyncio.RedisCluster(
            startup_nodes=nodes,
            username=kwargs["username"],
            password=kwargs["password"],
            retry=Retry(NoBackoff(), 0),
            **timeouts,
        )
    return redis.asyncio.Redis(**kwargs, **timeouts, retry=Retry(NoBackoff(), 0))


@contextmanager
def redis_session(url: str) -> Iterator[redis.Redis | RedisCluster]:
    """A client for the block's commands; a Redis error in it is ServiceUnavailable naming the URL."""
    try:
        client = redis_client(url)
        try:
            yield client
        finally:
            client.close()
    except REDIS_ERRORS as exc:
        raise redis_unavailable(url, exc) from exc


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def without_password(text: str, url: str) -> str:
    """`text` with the URL's password, in each form a library might quote it back, masked."""
    try:
        password = parse(url, "URL").password
    except BadUrl:
        return text
    if not password:
        return text
    forms = {password, quote(password, safe=""), quote(password), quote_plus(password), repr(password)[1:-1]}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def postgres_unavailable(url: str, exc: BaseException) -> ServiceUnavailable:
    detail = without_password(first_line(exc), url)
    return ServiceUnavailable(f"Postgres at {redact(url)} is unreachable: {detail}")


def redis_unavailable(url: str, exc: BaseException) -> ServiceUnavailable:
    detail = without_password(first_line(exc), url)
    return ServiceUnavailable(f"Redis at {redact(url)} is unreachable: {detail}")


def check_postgres(url: str) -> None:
    """Fail within seconds, naming the URL, when Postgres does not answer."""
    try:
        with psycopg.connect(libpq_conninfo(url), connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        raise postgres_unavailable(url, exc) from exc


def check_redis(url: str) -> None:
    """Fail within seconds, naming the URL, when Redis does not answer or is a cluster node named
    by a `redis://` URL (a single-server client would be refused every key of the other nodes)."""
    with redis_session(url) as client:
        client.ping()
        if not is_cluster(url) and cast(dict, client.info("cluster")).get("cluster_enabled"):
            raise BadUrl(
                f"SMS_REDIS_URL names a node of a Redis Cluster: write it redis+cluster://, got {redact(url)}"
            )
