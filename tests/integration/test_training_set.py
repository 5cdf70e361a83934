"""A build of the training set joins again only the messages whose label, time, text or features changed
since the last one, and ends where a build that joins every message ends (the same rows, the same data
version); no_future_features verifies those rows and a seeded sample of the others, and fails on a bad
row of either, while its full pass catches a bad row that neither holds
(sms_assets/defs/training/incremental.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from sms_assets.defs.training import incremental
from sms_assets.defs.training.assets import TRAINING_TABLE, training_set
from sms_assets.defs.training.checks import no_future_features
from sms_core.postgres import connect
from tests.conftest import ALL_ASSETS
from tests.integration.test_convergence import (
    Graph,
    check_passed,
    data_versions,
    graph_run_once,
    materialized,
)

pytestmark = pytest.mark.integration

SEED, SAMPLE = 11, 40
CHECK_OP = no_future_features.node_def.name
BUILD = dg.AssetSelection.assets("raw_sms_messages", "sms_features", "feast_registry", "training_set")


@pytest.fixture
def graph(server_urls: tuple[str, str], dataset_path: Path, tmp_path: Path) -> Iterator[Graph]:
    with graph_run_once(server_urls, dataset_path, tmp_path) as graph:
        yield graph


def run(
    graph: Graph, selection: dg.AssetSelection, full_build: bool = False, checked: bool = True, **check: Any
) -> dg.ExecuteInProcessResult:
    """The selection, with the check (when `checked`: the selection holds it) incremental on the small
    table (and `check` for the rest of its config), and a build that joins every message when
    `full_build`."""
    ops: dict[str, Any] = {}
    if checked:
        small_table = {"full_below_rows": 0, "sample_seed": SEED, "sample_size": SAMPLE}
        ops[CHECK_OP] = {"config": {**small_table, **check}}
    if full_build:
        ops[training_set.node_def.name] = {"config": {"full": True}}
    return dg.materialize(
        ALL_ASSETS,
        selection=selection,
        resources=graph.resources,
        instance=graph.instance,
        run_config={"ops": ops},
        raise_on_error=False,
    )


def table(graph: Graph) -> Any:
    return graph.query(f"SELECT * FROM {TRAINING_TABLE} ORDER BY message_id")


def corrupt(graph: Graph, message_id: int, by: int = 1) -> None:
    with connect(graph.slice.postgres_url) as conn:
        conn.execute(
            f"UPDATE {TRAINING_TABLE} SET word_count = word_count + %s WHERE message_id = %s",  # type: ignore[arg-type]
            (by, message_id),
        )


def test_an_incremental_build_ends_where_a_full_build_ends(graph: Graph) -> None:
    unchanged = materialized(run(graph, BUILD))["training_set"]
    assert unchanged["build"].startswith("incremental: 0 rows changed"), unchanged["build"]
    assert (unchanged["rows_changed"], unchanged["changed"]) == (0, False)

    # Two texts edited, one message relabelled, the last one removed.
    lines = graph.lines()
    for i in (20, 21):
        label, _ = lines[i].split("\t", 1)
        lines[i] = f"{label}\tFree entry!!! Text 80082 to win 2000 prizes ({i})"
    label, text = lines[30].split("\t", 1)
    lines[30] = f"{'spam' if label == 'ham' else 'ham'}\t{text}"
    graph.write(lines[:-1])
    result = run(graph, BUILD)
    built = materialized(result)["training_set"]
    assert built["build"].startswith("incremental: 4 rows changed"), built["build"]
    assert (built["rows_changed"], built["dagster/row_count"]) == (4, len(lines) - 1)
    passed, checked = check_passed(result, "no_future_features")
    assert passed and checked["pass"].startswith("incremental"), checked
    assert (checked["changed_rows_verified"], checked["sampled_rows_verified"]) == (4, SAMPLE)
    assert checked["rows_checked"] == 3 + SAMPLE  # the removed message has no row left to verify
    rows, version = table(graph), data_versions(graph)["training_set"]

    result = run(graph, BUILD, full_build=True)
    full = materialized(result)["training_set"]
    assert full["build"] == "full: every labelled message joined"
    assert (full["rows_changed"], full["changed"]) == (0, False)
    assert data_versions(graph)["training_set"] == version
    assert table(graph).equals(rows)
    passed, checked = check_passed(result, "no_future_features")
    assert passed and checked["pass"] == "full: the last build joined every labelled message", checked


def test_an_incremental_pass_fails_on_a_bad_joined_row_and_a_bad_sampled_one_and_the_full_pass_on_any(
    graph: Graph,
) -> None:
    assert check_passed(run(graph, BUILD), "no_future_features")[0]  # build 2, verified
    lines = graph.lines()
    label, _ = lines[9].split("\t", 1)
    lines[9] = f"{label}\tCall me back when you can ({9})"
    graph.write(lines)
    assert run(graph, BUILD.without_checks(), checked=False).success  # build 3, not verified yet
    check = dg.AssetSelection.checks(no_future_features)

    corrupt(graph, 10)  # the row build 3 joined again
    passed, checked = check_passed(run(graph, check), "no_future_features")
    assert not passed and checked["first_not_as_of_ids"] == [10], checked
    assert checked["pass"].startswith("incremental: the 1 rows build 3 joined again"), checked
    corrupt(graph, 10, by=-1)

    with connect(graph.slice.postgres_url) as conn:
        sampled = incremental.sample_ids(conn, TRAINING_TABLE, SEED, SAMPLE)
    corrupt(graph, int(sampled[0]))
    passed, checked = check_passed(run(graph, check), "no_future_features")
    assert not passed and checked["first_not_as_of_ids"] == [int(sampled[0])], checked
    corrupt(graph, int(sampled[0]), by=-1)

    outside = next(i for i in range(1, 5000) if i != 10 and i not in set(sampled.tolist()))
    corrupt(graph, outside)
    passed, checked = check_passed(run(graph, check), "no_future_features")
    assert passed and checked["pass"].startswith("incremental"), checked
    passed, checked = check_passed(run(graph, check, full=True), "no_future_features")
    assert not passed and checked["first_not_as_of_ids"] == [outside], checked
    assert checked["pass"] == "full: asked for (the nightly full_checks_job)"
