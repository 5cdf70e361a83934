"""The whole graph with a three-node Redis Cluster as the online store (a `redis+cluster://` URL).

The cluster is the module's own (redis_cluster.py), on a Postgres database and Feast project of its
own. One instance across the runs, as in test_convergence.py: the first run, a prediction served from
the cluster, an edit and a removal, then a full refresh that finds a stray key wherever it landed.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from redis.cluster import RedisCluster

from sms_api import readiness
from sms_api.app import create_app
from sms_assets.defs.feature_store.assets import OnlineStoreConfig
from sms_core import online_keys, urls
from sms_core.embedded import free_port
from sms_core.features.schema import FEATURE_NAMES
from tests.conftest import ALL_ASSETS, new_slice
from tests.integration.conftest import live_server, service_config
from tests.integration.redis_cluster import NODES, redis_cluster
from tests.integration.test_convergence import Graph, check_passed, materialized

pytestmark = pytest.mark.integration

# Every asset check of the code location, by name.
CHECKS = {spec.name for a in ALL_ASSETS if isinstance(a, dg.AssetsDefinition) for spec in a.check_specs}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[int]]]:
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as started:
        yield started


@pytest.fixture(scope="module")
def graph(
    cluster: tuple[str, list[int]],
    server_urls: tuple[str, str],
    dataset_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Graph]:
    folder = tmp_path_factory.mktemp("cluster-graph")
    dataset = folder / "SMSSpamCollection"
    shutil.copyfile(dataset_path, dataset)
    with new_slice(server_urls, folder / "state", redis_url=cluster[0]) as slice_:
        yield Graph(slice_, dataset)


@pytest.fixture(scope="module")
def first_run(graph: Graph) -> dg.ExecuteInProcessResult:
    return graph.run()


def assert_every_check_passed(result: dg.ExecuteInProcessResult) -> None:
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == CHECKS
    assert [e.check_name for e in evaluations if not e.passed] == []


def keys_by_node(graph: Graph) -> dict[str, set[bytes]]:
    """The project's entity keys each primary of the cluster holds (the watermark left out)."""
    client = urls.redis_client(graph.slice.redis_url)
    assert isinstance(client, RedisCluster)
    watermark = f"sms_assets:online_synced_through:sms_base_features:{graph.slice.feast_project}".encode()
    try:
        return {
            node.name: {
                key
                for key in client.scan_iter(match=f"*{graph.slice.feast_project}", target_nodes=node)
                if key != watermark
            }
            for node in client.get_primaries()
        }
    finally:
        client.close()


def offline_ids(graph: Graph) -> set[int]:
    return set(graph.query("SELECT message_id FROM sms_features")["message_id"].tolist())


def assert_cluster_holds_exactly(graph: Graph, ids: set[int]) -> None:
    by_node = keys_by_node(graph)
    assert len(by_node) == NODES
    assert all(by_node.values()), {node: len(keys) for node, keys in by_node.items()}
    held = set().union(*by_node.values())
    assert held == {online_keys.entity_key(graph.slice.feast_project, i) for i in ids}
    assert graph.online_ids() == ids


def test_any_answering_seed_node_is_enough_and_a_redis_url_of_a_node_is_refused(
    cluster: tuple[str, list[int]],
) -> None:
    _, ports = cluster
    down = free_port()
    with pytest.raises(urls.ServiceUnavailable, match=rf"^Redis at redis\+cluster://127\.0\.0\.1:{down}/0 "):
        urls.check_redis(f"redis+cluster://127.0.0.1:{down}/0")
    two_seeds = f"redis+cluster://127.0.0.1:{down}/0?node=127.0.0.1:{ports[2]}"
    urls.check_redis(two_seeds)
    assert asyncio.run(readiness.redis_check(two_seeds)) == readiness.OK
    with pytest.raises(
        urls.BadUrl, match=r"^SMS_REDIS_URL names a node of a Redis Cluster: write it redis\+"
    ):
        urls.check_redis(f"redis://127.0.0.1:{ports[1]}/0")
    urls.check_redis(f"redis+cluster://127.0.0.1:{ports[1]}/0")  # any node is a seed


def test_the_whole_graph_on_the_cluster_passes_every_check(
    graph: Graph, first_run: dg.ExecuteInProcessResult
) -> None:
    assert_every_check_passed(first_run)
    ids = offline_ids(graph)
    assert len(ids) == 5574
    assert materialized(first_run)["online_store"]["rows_written"] == len(ids)
    assert_cluster_holds_exactly(graph, ids)
    _, checked = check_passed(first_run, "online_matches_offline")
    assert (checked["online_messages"], checked["offline_messages"]) == (len(ids), len(ids))


def test_the_api_serves_a_prediction_from_the_cluster(
    graph: Graph, first_run: dg.ExecuteInProcessResult
) -> None:
    text = graph.query("SELECT text FROM raw_sms_messages WHERE message_id = 42")["text"].iloc[0]
    with live_server(create_app(service_config(graph.slice))) as api:
        ready = api.get("/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {
            "model": "ok",
            "redis": "ok",
            "postgres": "ok",
            "feature_store": "ok",
            "online_store": "ok",  # every key counted, across the cluster's nodes
        }
        response = api.post("/predict", json={"message_id": 42})
        assert response.status_code == 200, response.text
        assert response.json()["features"]["message_text"] == text
        # An id the cluster does not hold is unknown: the features came from the cluster.
        assert api.post("/predict", json={"message_id": 999_999}).status_code == 404


def test_an_edit_and_removals_reach_the_cluster(graph: Graph, first_run: dg.ExecuteInProcessResult) -> None:
    lines = graph.lines()[:5000]
    label, _ = lines[41].split("\t")
    lines[41] = f"{label}\tWINNER!! Call 09061701461 now to claim 1000 FREE prizes!!!"
    graph.write(lines)
    result = graph.run()
    assert_every_check_passed(result)
    online_store = materialized(result)["online_store"]
    assert (online_store["entities_removed"], online_store["full_refresh"]) == (574, False)
    assert online_store["rows_written"] >= 1
    assert_cluster_holds_exactly(graph, set(range(1, 5001)))
    row = graph.query("SELECT * FROM sms_features WHERE message_id = 42").iloc[0]
    assert (row["exclamation_count"], row["digit_count"]) == (5, 15)
    online = graph.online([42])
    assert {name: online[name][0] for name in FEATURE_NAMES} == {name: row[name] for name in FEATURE_NAMES}


def test_a_full_refresh_deletes_stray_keys_on_every_node(
    graph: Graph, first_run: dg.ExecuteInProcessResult
) -> None:
    ids = offline_ids(graph)
    stray = list(range(900_000, 900_060))  # enough ids that each node holds some of them
    row = graph.online([1])
    graph.resources["feast"].store().write_to_online_store(
        "sms_base_features",
        df=pd.DataFrame(
            {
                "message_id": stray,
                "event_timestamp": [pd.Timestamp("2024-01-01", tz="UTC")] * len(stray),
                **{name: row[name] * len(stray) for name in FEATURE_NAMES},
            }
        ),
    )
    stray_keys = {online_keys.entity_key(graph.slice.feast_project, i) for i in stray}
    assert all(keys & stray_keys for keys in keys_by_node(graph).values())
    result = graph.run(dg.AssetSelection.assets("online_store"), OnlineStoreConfig(full_refresh=True))
    assert result.success
    online_store = materialized(result)["online_store"]
    assert (online_store["full_refresh"], online_store["entities_removed"]) == (True, len(stray))
    assert online_store["rows_written"] == len(ids)
    assert_cluster_holds_exactly(graph, ids)
    passed, _ = check_passed(result, "online_matches_offline")
    assert passed
