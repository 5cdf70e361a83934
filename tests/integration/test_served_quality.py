"""Live quality: arrivals served by id and by text, their labels landing later, F1 per model version
against its held-out F1; wrong labels fail the check, and the nightly retrain records the verdict."""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from sms_assets.defs.ingestion.batches import LABELS_HEADER
from sms_assets.defs.ingestion.simulate import ArrivalStream, held_back, sms_id
from sms_core.model.store import ModelStore
from tests.integration.served import Graph, check, materialized_slice, replay, run, serving, settled

pytestmark = pytest.mark.integration

HOLDBACK = 500
ARRIVALS = dg.AssetSelection.assets("sms_arrivals", "sms_arrival_labels", "sms_features", "online_store")


@pytest.fixture(scope="module")
def graph(
    server_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory, dataset_path: Path
) -> Iterator[Graph]:
    with materialized_slice(
        server_urls, tmp_path_factory.mktemp("quality"), dataset_path, holdback=HOLDBACK
    ) as graph:
        yield graph


def test_live_f1_per_model_version_once_labels_land(graph: Graph, dataset_path: Path) -> None:
    folder = graph.resources["landing"].folder()
    messages = held_back(dataset_path, HOLDBACK)
    stream = ArrivalStream(folder, messages, batches=1, label_delay=1, prefix="live")
    landed = stream.land_next()
    assert landed is not None and len(landed.message_ids) == HOLDBACK
    assert run(graph, ARRIVALS).success
    with serving(graph) as (api, log):
        # Most arrivals asked for by id once they are in Redis, some by text before they arrived.
        answered = replay(api, ids=landed.message_ids[100:], texts=[m.text for m in messages[:100]])
        settled(log, answered)
    version = ModelStore(graph.slice.state_dir / "models").current_version()

    before_labels = run(graph)
    passed, _, found = check(before_labels, "served_quality_holds")
    assert passed and found["labelled_answers"] == 0

    assert stream.land_next() is not None  # the labels, a batch later
    assert run(graph, ARRIVALS).success
    passed, _, found = check(run(graph), "served_quality_holds")
    assert passed, found["by_version"]
    assert found["labelled_answers"] == answered  # by id, and by text through the text's sha256
    held_out = ModelStore(graph.slice.state_dir / "models").manifest(version)["metrics"]["f1"]
    live = found["live_f1"][version]
    assert live > held_out - 0.05, found["by_version"]

    # A moderation team that got every verdict backwards: later labels replace the earlier ones.
    flipped = [
        (sms_id("live", m), datetime.now(UTC).isoformat(), "ham" if m.label == "spam" else "spam")
        for m in messages
    ]
    folder.land(f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-live-flipped-labels.tsv", LABELS_HEADER, flipped)
    assert run(graph, ARRIVALS).success
    passed, severity, found = check(run(graph), "served_quality_holds")
    assert not passed and severity == dg.AssetCheckSeverity.ERROR
    assert found["dropped_versions"] == [version] and found["live_f1"][version] < 0.2

    # The nightly retrain reads the verdict: the model it trains records it.
    retrain = run(graph, dg.AssetSelection.assets("training_set", "spam_model"))
    [event] = retrain.asset_materializations_for_node("spam_model")
    assert event.metadata["live_quality_of_served"].value == "failed"
