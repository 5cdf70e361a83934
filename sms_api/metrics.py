"""`GET /metrics`: the served log's counts in Prometheus' text format, read when scraped.

The counts live in the served log's writer (sms_core.served_log.writer); a collector reads them at each
scrape, so a request updates no metric. Each server process keeps its own counts: with several workers
behind one port a scrape reaches one of them, while `served_log_writers` in Postgres holds every
writer's, which the served_log asset adds up.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sms_core.served_log.writer import REASONS, AnswerLog


class ServedLogCollector(Collector):
    def __init__(self, served_log: AnswerLog):
        self.served_log = served_log

    def collect(self) -> Iterator[Metric]:
        counts = self.served_log.counts
        yield CounterMetricFamily(
            "sms_served_log_answers_written",
            "Answers written to their feature service's log.",
            counts.written,
        )
        dropped = CounterMetricFamily(
            "sms_served_log_answers_dropped", "Answers not logged, by reason.", labels=["reason"]
        )
        for reason in REASONS:
            dropped.add_metric([reason], counts.dropped[reason])
        yield dropped
        yield CounterMetricFamily(
            "sms_served_log_answers_sampled_out",
            "Answers left out by the feature service's logging sample rate.",
            counts.sampled_out,
        )
        yield GaugeMetricFamily(
            "sms_served_log_answers_waiting",
            "Answers queued for the log, not yet written.",
            self.served_log.queued,
        )


def install(app: FastAPI, served_log: AnswerLog | None) -> None:
    # A registry per app: two apps in one process (the tests) each report their own writer.
    registry = CollectorRegistry()
    if served_log is not None:
        registry.register(ServedLogCollector(served_log))

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
