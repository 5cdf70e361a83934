"""What the served-log tests share: a slice of their own with the whole graph materialized, traffic
through the real API, and the served log taken in and judged the way served_log_job does it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
from fastapi import FastAPI

from sms_api.app import create_app
from sms_api.service import PredictionService
from sms_core.embedded import wait_until
from sms_core.served_log.writer import AnswerLog
from tests.conftest import ALL_ASSETS, Services, new_slice
from tests.integration.conftest import build_resources, live_server, service_config

BATCH = 50
SERVED_LOG = dg.AssetSelection.assets("served_log", "served_feature_metrics")


@dataclass(frozen=True)
class Graph:
    """A slice of the servers with the whole graph materialized in it."""

    slice: Services
    resources: dict[str, Any]
    instance: dg.DagsterInstance


@contextmanager
def materialized_slice(
    server_urls: tuple[str, str], state_dir: Path, dataset: Path, holdback: int = 0
) -> Iterator[Graph]:
    """A database, Feast project and state folder of its own, the whole graph materialized in it, and
    a Dagster instance that keeps every run (the checks read the latest materialization)."""
    with new_slice(server_urls, state_dir) as slice_, dg.instance_for_test() as instance:
        resources = build_resources(slice_, dataset, holdback=holdback)
        assert dg.materialize(ALL_ASSETS, resources=resources, instance=instance).success
        yield Graph(slice_, resources, instance)


def run(graph: Graph, selection: dg.AssetSelection = SERVED_LOG, **kwargs: Any) -> dg.ExecuteInProcessResult:
    """Materialize `selection` (by default the served log and its checks, as served_log_job does)."""
    return dg.materialize(
        ALL_ASSETS,
        resources=graph.resources,
        instance=graph.instance,
        selection=selection,
        raise_on_error=False,
        **kwargs,
    )


def answer_log(app: FastAPI) -> AnswerLog:
    service = app.state.service
    assert isinstance(service, PredictionService) and service.served_log is not None
    return service.served_log


@contextmanager
def serving(graph: Graph, **overrides: Any) -> Iterator[tuple[httpx.Client, AnswerLog]]:
    """The API on the slice, and its served log's writer."""
    app = create_app(service_config(graph.slice, **overrides))
    with live_server(app) as client:
        yield client, answer_log(app)


def settled(log: AnswerLog, answers: int, timeout_s: float = 30) -> None:
    """Wait until the writer has written (or dropped) `answers` answers in all."""

    def done() -> None:
        counts = log.counts
        if counts.written + counts.total_dropped + counts.sampled_out < answers:
            raise AssertionError(f"{counts} after {answers} answers")

    wait_until(done, timeout_s=timeout_s, interval_s=0.05)


def replay(api: httpx.Client, ids: Sequence[int] = (), texts: Sequence[str] = ()) -> int:
    """Send ids and texts as batch requests of BATCH; returns how many answers came back."""
    answered = 0
    for key, items in (("message_ids", list(ids)), ("texts", list(texts))):
        for start in range(0, len(items), BATCH):
            response = api.post("/predict/batch", json={key: items[start : start + BATCH]})
            assert response.status_code == 200, response.text
            answered += len(response.json()["predictions"])
    return answered


def check(result: dg.ExecuteInProcessResult, name: str) -> tuple[bool, dg.AssetCheckSeverity, dict[str, Any]]:
    """Whether a check passed in a run, its severity, and its metadata."""
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation.passed, evaluation.severity, {k: v.value for k, v in evaluation.metadata.items()}
