"""A watchdog for a Postgres server that holds its connections open and answers nothing: stopped,
wedged, or behind a link that forwards nothing, where the server's kernel still acknowledges every byte
and keepalive, so that neither `bounds.py`'s TCP settings nor its statement timeout (which the server
itself enforces) can end the wait.

Every wait of a `Watched` connection for the server (statements, fetches, COPY, commit) is registered.
When one has waited SILENT_AFTER_S, the watchdog asks the server for a new connection; when that gets no
answer within PROBE_TIMEOUT_S either, it cuts the waiting connection (the server rolls its transaction
back) and marks why, which `postgres.connect` turns into one line naming the server. A long statement on
a server that answers is left alone. So a silent server fails a step within SILENT_BOUND_S.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from sms_core.urls import CONNECT_TIMEOUT_S, libpq_conninfo

SILENT_AFTER_S = 10.0  # an answer awaited this long makes the watchdog ask the server if it is there
WATCH_EVERY_S = 1.0
PROBE_TIMEOUT_S = CONNECT_TIMEOUT_S + 1.0  # the new connection and its SELECT 1
# The longest a step waits on a silent server: the wait, a watchdog round, the unanswered new
# connection, and a second for the waiting thread to wake and fail.
SILENT_BOUND_S = SILENT_AFTER_S + WATCH_EVERY_S + PROBE_TIMEOUT_S + 1.0


class Watched(psycopg.Connection):
    """A connection whose every wait for the server (statements, fetches, COPY, commit) the watchdog
    can see."""

    _url: str = ""
    _cut: str | None = None  # why the watchdog cut it

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:  # type: ignore[override]
        with _WATCHDOG.watching(self):
            return super().wait(gen, interval, timeout)


class _Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waits: dict[int, tuple[Watched, int, float]] = {}  # id -> (connection, socket, since)
        self._thread: threading.Thread | None = None

    @contextmanager
    def watching(self, conn: Watched) -> Iterator[None]:
        key = id(conn)
        with self._lock:
            self._waits[key] = (conn, conn.pgconn.socket, time.monotonic())
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="postgres-watchdog", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._waits.pop(key, None)

    def _run(self) -> None:
        asked: dict[int, float] = {}  # id -> when the server was last found answering for that wait
        while True:
            time.sleep(WATCH_EVERY_S)
            now = time.monotonic()
            with self._lock:
                waits = list(self._waits.items())
            asked = {key: at for key, at in asked.items() if key in dict(waits)}
            answered: dict[str, bool] = {}  # one question per server and round, however many wait on it
            for key, (conn, fd, since) in waits:
                if now - max(since, asked.get(key, since)) < SILENT_AFTER_S:
                    continue
                if conn._url not in answered:
                    answered[conn._url] = _answers(conn._url)
                if answered[conn._url]:
                    asked[key] = time.monotonic()
                    continue
                with self._lock:
                    if self._waits.get(key, (None, 0, 0.0))[2] != since:
                        continue  # that wait ended meanwhile
                    conn._cut = (
                        f"no answer for {time.monotonic() - since:.0f} s, and none to a new connection "
                        f"within {CONNECT_TIMEOUT_S} s"
                    )
                    _shut(fd)


def watched_connection(url: str) -> Watched:
    """A Watched connection to `url`, with the bounds: what Feast's SQL registry engine connects
    through (`feast_config.repo_config`), so a silent server ends its waits too."""
    conn = Watched.connect(libpq_conninfo(url))
    conn._url = url
    return conn


def _answers(url: str) -> bool:
    """Whether the server answers a new connection and a query within the connect timeout. An error it
    sends back (too many connections, shutting down) is an answer: it is there."""
    done = threading.Event()

    def ask() -> None:
        try:
            with psycopg.connect(libpq_conninfo(url)) as probe:
                probe.execute("SELECT 1")
        except psycopg.Error as exc:
            if exc.sqlstate is None:
                return  # no answer: a timeout, a refused or reset connection
        done.set()

    threading.Thread(target=ask, name="postgres-probe", daemon=True).start()
    return done.wait(PROBE_TIMEOUT_S)


def _shut(fd: int) -> None:
    """End the connection on socket `fd` as a reset would: the thread waiting on it wakes with an error."""
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


_WATCHDOG = _Watchdog()
