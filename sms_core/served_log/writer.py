"""The served log's writer in a server process: answers queued by requests, written by a thread.

A request hands its answers to `offer`, which never blocks and never raises: the answers join a queue
bounded in answers, or, when it is full, are counted as dropped. A thread wakes every FLUSH_S, takes
what came meanwhile off the queue (more at once only when FLUSH_ANSWERS came) and writes each feature
service's rows through Feast's own path, `FeatureStore.write_logged_features`, which reaches the
offline store's COPY. A write that fails (Postgres down, slow past the statement timeout) drops its
answers and counts them; the counts are kept in `served_log_writers` as soon as Postgres answers again,
where the served_log asset reads them. The feature service's `sample_rate` decides, per request,
whether its answers are logged."""

from __future__ import annotations

import itertools
import logging
import os
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sms_core import urls
from sms_core.served_log import intake, offline_store, rows
from sms_core.served_log.columns import log_schema

if TYPE_CHECKING:
    import pyarrow as pa
    from feast import FeatureService, FeatureStore

    from sms_core.prediction import Answered

log = logging.getLogger(__name__)

FLUSH_S = 1.0
FLUSH_ANSWERS = 5_000
STOP_WAIT_S = 5.0
WARN_EVERY_S = 60.0
REASONS = ("queue_full", "write_failed")


@dataclass
class Counts:
    written: int = 0
    sampled_out: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    last_error: str = ""

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())


class AnswerLog:
    """The bounded queue of answers and the thread that writes them to their services' log tables."""

    def __init__(
        self,
        store: Callable[[], FeatureStore],
        postgres_url: str,
        capacity: int,
        log_texts: bool,
        draw: Callable[[], float] = random.random,
    ):
        self._store = store
        self._postgres_url = postgres_url  # to mask its password in an error shown
        self.capacity = capacity
        self.log_texts = log_texts
        self._draw = draw
        self._queue: queue.SimpleQueue[rows.Served] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._queued = 0
        self._lock = threading.Lock()
        self.counts = Counts()
        self._recorded: tuple[int, ...] = ()
        self._schemas: dict[str, tuple[FeatureService, pa.Schema]] = {}  # by service name
        self._thread: threading.Thread | None = None
        self._warned_at = float("-inf")
        started = datetime.now(UTC)
        self.name = f"{socket.gethostname()}:{os.getpid()}:{started.isoformat(timespec='seconds')}"
        self.started_at = started
        # A request's batch id: this writer's random prefix and a count, unique across writers and
        # restarts without a uuid4 (a system call) per request.
        self._prefix = uuid.uuid4().hex[:16]
        self._batches = itertools.count()

    @property
    def queued(self) -> int:
        return self._queued

    def offer(
        self,
        service: FeatureService,
        form: str,
        request: Sequence[int] | Sequence[str],
        answered: Answered,
        model_version: str,
    ) -> None:
        """Queue a request's answers for the log: never blocks, never raises."""
        config = service.logging_config
        n = len(answered.predictions)
        if config is None or not n:
            return
        if config.sample_rate < 1.0 and self._draw() >= config.sample_rate:
            self.counts.sampled_out += n
            return
        with self._lock:
            if self._queued + n > self.capacity:
                self.counts.dropped["queue_full"] += n
                return
            self._queued += n
        self._queue.put_nowait(
            rows.served(
                service,
                form,
                request,
                answered,
                model_version,
                datetime.now(UTC),
                f"{self._prefix}{next(self._batches):016x}",
            )
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="served-log-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued (for up to STOP_WAIT_S), then end the thread."""
        if self._thread is not None:
            self._stopping.set()
            self._thread.join(STOP_WAIT_S)
            self._thread = None
            self._stopping.clear()

    def describe(self) -> str:
        """One line for /ready: how many answers were logged, and any dropped, with why."""
        counts = self.counts
        if not counts.total_dropped:
            return f"ok: {counts.written:,} answers logged, none dropped, {self._queued:,} waiting"
        reasons = ", ".join(f"{reason.replace('_', ' ')} {n:,}" for reason, n in counts.dropped.items() if n)
        error = f"; last error: {counts.last_error}" if counts.last_error else ""
        return (
            f"dropping: {counts.total_dropped:,} answers not logged ({reasons}), "
            f"{counts.written:,} logged, {self._queued:,} waiting{error}"
        )

    def _run(self) -> None:
        # Woken by the clock, not by each answer: a thread woken per request takes the GIL from the event
        # loop serving the next one, twice per request. One batch per wake-up unless a full one came:
        # each write has a fixed cost (a connection, the log schema), which a loop draining the queue
        # while answers keep coming would pay for a handful of answers at a time.
        stopping = False
        while not stopping:
            stopping = self._stopping.wait(FLUSH_S)
            while True:
                batch, full = self._take()
                if not batch:
                    break
                self._write(batch)
                if not (full or stopping):
                    break
            self._record_counts()

    def _take(self) -> tuple[list[rows.Served], bool]:
        """What is queued, up to about FLUSH_ANSWERS answers, without waiting; and whether it reached
        FLUSH_ANSWERS (more may be waiting)."""
        batch: list[rows.Served] = []
        answers = 0
        while answers < FLUSH_ANSWERS:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
            batch.append(item)
            answers += item.n
        return batch, True

    def _write(self, batch: list[rows.Served]) -> None:
        by_service: dict[str, list[rows.Served]] = {}
        for served in batch:
            by_service.setdefault(served.service.name, []).append(served)
        for served in by_service.values():
            n = sum(s.n for s in served)
            try:
                store = self._store()
                service = served[-1].service  # the newest resolution of it
                table = rows.log_table(self._schema(store, service), served, self.log_texts)
                store.write_logged_features(logs=table, source=service)
                self.counts.written += n
            except Exception as exc:  # whatever fails, serving goes on: the answers are counted as dropped
                self.counts.dropped["write_failed"] += n
                self._failed(exc)
            finally:
                with self._lock:
                    self._queued -= n

    def _schema(self, store: FeatureStore, service: FeatureService) -> pa.Schema:
        """The service's log schema, computed again only when the request path resolved the service
        anew (after a registry refresh): computing it reads views from the registry."""
        from feast.feature_logging import FeatureServiceLoggingSource

        cached = self._schemas.get(service.name)
        if cached is None or cached[0] is not service:
            schema = log_schema(
                FeatureServiceLoggingSource(service, store.project).get_schema(store.registry)
            )
            cached = self._schemas[service.name] = (service, schema)
        return cached[1]

    def _failed(self, exc: BaseException) -> None:
        self.counts.last_error = urls.without_password(
            f"{type(exc).__name__}: {urls.first_line(exc)}", self._postgres_url
        )
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "served log: answers dropped (%s so far): %s",
                self.counts.total_dropped,
                self.counts.last_error,
            )

    def _record_counts(self) -> None:
        """Keep this writer's drop counts in Postgres when they changed, once it answers."""
        counts = self.counts
        now = tuple(counts.dropped.values())
        if now == self._recorded or not counts.total_dropped:
            return
        try:
            with offline_store.connect(self._store().config.offline_store) as conn:
                conn.execute(intake.WRITERS_DDL)
                conn.execute(
                    intake.RECORD_WRITER_SQL,
                    {
                        "writer": self.name,
                        "started_at": self.started_at,
                        "written": counts.written,
                        **counts.dropped,
                    },
                )
            self._recorded = now
        except Exception as exc:
            self._failed(exc)
