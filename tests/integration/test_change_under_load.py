"""30 requests a second, known ids and new texts, through every change the pipeline makes to what is
served: a re-run with edited messages, a full refresh of Redis, a retrain with promotion, a rollback and
a promote (`benchmarks/change.py`, whose report times each phase). Every answer is a 200, and each is
exactly what the version it names gives its features."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.change import PHASES, RATE, print_table, summary, through_changes
from sms_api.app import create_app
from sms_core.model.pipelines import model_input, spam_scores
from sms_core.model.store import ModelStore
from tests.integration.conftest import live_server, service_config
from tests.integration.test_convergence import Graph, graph_run_once

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def graph(
    server_urls: tuple[str, str], dataset_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Graph]:
    with graph_run_once(server_urls, dataset_path, tmp_path_factory.mktemp("under_load")) as graph:
        yield graph


def test_every_answer_is_a_200_and_exactly_its_versions_through_every_change(graph: Graph) -> None:
    with live_server(create_app(service_config(graph.slice))) as api:
        answers = through_changes(graph.resources, graph.instance, graph.dataset, str(api.base_url))
    report = summary(answers)
    print_table({"rate": RATE, "phases": report})
    assert tuple(report) == PHASES
    assert all(r["answers"] > 0 and not r["not_200"] for r in report.values()), report
    failed = [a for a in answers if a.status != 200]
    assert not failed, failed[:5]
    store = ModelStore(graph.slice.state_dir / "models")
    assert_each_answer_is_its_versions(store, [a.body for a in answers])


def assert_each_answer_is_its_versions(store: ModelStore, bodies: list[dict[str, Any]]) -> None:
    """No half swap: each probability is exactly what the version the answer names gives its features."""
    for version in {body["model_version"] for body in bodies}:
        model = store.load(version)
        names = model.manifest["features"]
        mine = [body for body in bodies if body["model_version"] == version]
        inputs = model_input(names, {n: [body["features"][n] for body in mine] for n in names})
        expected = spam_scores(model.model, inputs)
        np.testing.assert_allclose([body["spam_probability"] for body in mine], expected, rtol=0, atol=1e-12)
