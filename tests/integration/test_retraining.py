"""spam_model retrains once enough of the training set changed, keeps its candidate short of that and
says why, and the nightly retrain's config trains on any change (sms_assets/defs/training/retraining.py).

The policy applies to training sets of 100,000 rows and more; these tests lower that bound to 0, so the
dataset's 5,574 rows count as a large training set.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from sms_assets.defs.training.schedules import retrain_job
from tests.integration.test_convergence import STABLE_MODEL, Graph, check_passed, graph_run_once, materialized

pytestmark = pytest.mark.integration

LARGE = STABLE_MODEL.model_copy(update={"retrain_every_change_below_rows": 0})
TRAINING = dg.AssetSelection.assets("raw_sms_messages", "training_set", "spam_model")


@pytest.fixture
def graph(server_urls: tuple[str, str], dataset_path: Path, tmp_path: Path) -> Iterator[Graph]:
    with graph_run_once(server_urls, dataset_path, tmp_path) as graph:
        yield graph


def relabel(graph: Graph, indexes: list[int]) -> None:
    lines = graph.lines()
    for i in indexes:
        label, text = lines[i].split("\t", 1)
        lines[i] = f"{'spam' if label == 'ham' else 'ham'}\t{text}"
    graph.write(lines)


def test_a_small_change_keeps_the_candidate_until_the_share_is_reached_or_the_nightly_config_retrains(
    graph: Graph,
) -> None:
    trained = materialized(graph.run(TRAINING, model=LARGE))["spam_model"]
    relabel(graph, [3, 4, 5])
    assets = materialized(graph.run(TRAINING, model=LARGE))
    assert assets["training_set"]["rows_changed"] == 3
    kept = assets["spam_model"]
    assert (kept["version"], kept["changed"]) == (trained["version"], False)
    assert kept["retrain"].startswith("kept: 3 of its ") and "(0.05%)" in kept["retrain"], kept["retrain"]

    # Counted since the candidate was trained, not since the last run: 3 + 3 rows of 5,574 reach 0.1%.
    relabel(graph, [6, 7, 8])
    assets = materialized(graph.run(TRAINING, model=LARGE.model_copy(update={"retrain_share": 0.001})))
    assert assets["training_set"]["rows_changed"] == 3
    retrained = assets["spam_model"]
    assert retrained["retrain"] == "trained on this run's training set"
    assert retrained["version"] != trained["version"] and retrained["changed"] is True

    # The nightly retrain_job sets retrain_share to 0: any change is trained on.
    relabel(graph, [9])
    assert isinstance(retrain_job.config, dict)
    config = LARGE.model_copy(update=retrain_job.config["ops"]["spam_model"]["config"])
    assets = materialized(graph.run(TRAINING, model=config))
    assert assets["spam_model"]["retrain"] == "trained on this run's training set"


def test_with_the_candidate_kept_the_served_check_passes_on_the_held_out_messages_left(graph: Graph) -> None:
    served = materialized(graph.run(model=LARGE))["spam_model"]
    held_out = graph.resources["model_store"].model_store().manifest(served["version"])["test_message_ids"]
    # Dropping k lines from the file's end removes the k newest loaded messages (the held-back tail
    # stays unloaded): as many as it takes to remove a held-out one, few enough for the candidate to stand.
    loaded = int(graph.query("SELECT max(message_id) AS m FROM sms_training_set")["m"].iloc[0])
    gone = loaded - max(i for i in held_out if i <= loaded) + 1
    assert gone <= 100
    graph.write(graph.lines()[:-gone])
    result = graph.run(model=LARGE)
    assert result.success
    assert materialized(result)["spam_model"]["version"] == served["version"]
    passed, meta = check_passed(result, "served_predictions_match_offline")
    assert passed and meta["mismatched"] == 0 and meta["held_out_gone"] >= 1
    assert meta["compared"] + meta["held_out_gone"] == meta["held_out_messages"]
