"""The served log on real Postgres and Redis: every answer written in Feast's logging schema, Feast's own
monitoring reading it, the intake taking each answer once, and the served-features check catching a Redis
row changed behind the project's back."""

import asyncio
import copy
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import redis
from feast import FeatureStore
from feast.feature_logging import FeatureServiceLoggingSource
from feast.infra.online_stores.helpers import _mmh3
from feast.monitoring.monitoring_service import MonitoringService
from feast.protos.feast.types.Value_pb2 import Value

from sms_core import feast_config, online_keys
from sms_core.contracts import FEATURE_VIEW, log_table
from sms_core.features.schema import TEXT_NAMES
from sms_core.model.store import ModelStore
from sms_core.postgres import connect, query_frame
from sms_core.prediction import answer_ids_async
from sms_core.served_log.columns import ANSWER_FIELDS
from sms_core.served_log.rows import text_sha256
from sms_core.served_log.writer import AnswerLog
from tests.conftest import PROJECT_ROOT
from tests.integration.served import Graph, check, materialized_slice, replay, run, serving, settled

pytestmark = pytest.mark.integration

TEXT_FEATURE = TEXT_NAMES[0]
NEW_TEXTS = ["are we still on for tonight?", "WINNER!! Claim your £900 prize, call 09061701461 now"]


@pytest.fixture(scope="module")
def graph(
    server_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory, dataset_path: Path
) -> Iterator[Graph]:
    with materialized_slice(server_urls, tmp_path_factory.mktemp("served"), dataset_path) as graph:
        yield graph


def feature_store(graph: Graph) -> FeatureStore:
    return feast_config.feature_store(
        graph.slice.postgres_url, graph.slice.redis_url, graph.slice.feast_project
    )


def log_rows(graph: Graph, service: str) -> Any:
    with connect(graph.slice.postgres_url) as conn:
        return query_frame(conn, f'SELECT * FROM {log_table(service)} ORDER BY "__log_timestamp"')


def test_each_answer_is_logged_in_feasts_logging_schema_with_the_answer(graph: Graph) -> None:
    store = feature_store(graph)
    before = {
        name: len(log_rows(graph, name)) if _exists(graph, name) else 0
        for name in ("sms_service_v2", "sms_text_service_v2")
    }
    with serving(graph) as (api, log):
        by_id = api.post("/predict/batch", json={"message_ids": [1, 2, 3]}).json()
        by_text = api.post("/predict", json={"text": NEW_TEXTS[1]}).json()
        settled(log, 4)
    version = by_id["model_version"]
    for service, added, form in (("sms_service_v2", 3, "id"), ("sms_text_service_v2", 1, "text")):
        rows = log_rows(graph, service)
        schema = FeatureServiceLoggingSource(store.get_feature_service(service), store.project).get_schema(
            store.registry
        )
        # Feast's own columns, in its order, then the answer's.
        assert list(rows.columns) == [*schema.names, *ANSWER_FIELDS.names]
        new = rows.iloc[before[service] :]
        assert len(new) == added
        assert set(new["model_version"]) == {version} and set(new["request_form"]) == {form}
        assert new["__request_id"].is_unique and new["batch_id"].nunique() == 1
        # Texts are not kept unless SMS_LOG_TEXTS says so; their sha256 and length always are.
        assert new[[c for c in rows.columns if c.endswith(f"__{TEXT_FEATURE}")]].isna().all().all()
        assert (new["text_chars"] > 0).all() and new["text_sha256"].str.len().eq(64).all()
    ids = log_rows(graph, "sms_service_v2").tail(3)
    assert ids["message_id"].tolist() == [1, 2, 3]
    assert ids["spam_probability"].tolist() == [p["spam_probability"] for p in by_id["predictions"]]
    assert ids[f"{FEATURE_VIEW}__{TEXT_FEATURE}__status"].tolist() == [1, 1, 1]  # Feast's PRESENT
    text = log_rows(graph, "sms_text_service_v2").tail(1).iloc[0]
    assert text["text_sha256"] == text_sha256(NEW_TEXTS[1]) and text["label"] == by_text["label"]


def _exists(graph: Graph, service: str) -> bool:
    with connect(graph.slice.postgres_url) as conn:
        row = conn.execute("SELECT to_regclass(%s)", (log_table(service),)).fetchone()
    return bool(row and row[0])


def test_texts_are_kept_when_the_setting_says_so(graph: Graph) -> None:
    with serving(graph, log_texts=True) as (api, log):
        assert api.post("/predict", json={"text": NEW_TEXTS[0]}).status_code == 200
        assert api.post("/predict", json={"message_id": 7}).status_code == 200
        settled(log, 2)
    text = log_rows(graph, "sms_text_service_v2").iloc[-1]
    assert text["text"] == text[f"sms_text_features__{TEXT_FEATURE}"] == NEW_TEXTS[0]
    by_id = log_rows(graph, "sms_service_v2").iloc[-1]
    assert text_sha256(by_id[f"{FEATURE_VIEW}__{TEXT_FEATURE}"]) == by_id["text_sha256"]


def test_the_feature_services_sample_rate_is_honoured(graph: Graph) -> None:
    store = feature_store(graph)
    service = copy.deepcopy(store.get_feature_service("sms_service_v2"))
    assert service.logging_config is not None and service.logging_config.sample_rate == 1.0
    service.logging_config.sample_rate = 0.25
    model = ModelStore(graph.slice.state_dir / "models").load()
    # The draws the writer will make, made ahead from the same seed.
    ahead = random.Random(3)
    expected = sum(ahead.random() < 0.25 for _ in range(200))
    log = AnswerLog(lambda: store, graph.slice.postgres_url, 1_000, False, draw=random.Random(3).random)

    async def answer_each() -> None:
        for i in range(200):
            answered = await answer_ids_async(store, model, [100 + i], service)
            log.offer(service, "id", [100 + i], answered, model.version)

    before = len(log_rows(graph, "sms_service_v2"))
    log.start()
    asyncio.run(answer_each())
    log.stop()
    assert 0 < expected < 200
    assert (log.counts.written, log.counts.sampled_out) == (expected, 200 - expected)
    assert len(log_rows(graph, "sms_service_v2")) - before == expected


def test_feast_monitor_reads_the_log_tables_unchanged(graph: Graph) -> None:
    variables = feast_config.feast_env(
        graph.slice.postgres_url, graph.slice.redis_url, graph.slice.feast_project
    )
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("feast")),
            "-c",
            "feature_repo",
            "monitor",
            "run",
            "--source-type",
            "log",
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, **variables},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Status: completed" in done.stdout, done.stdout
    # sms_service_v2 and its text twin have logged answers (the other two services have no table yet).
    assert int(done.stdout.split("Feature services computed:")[1].split()[0]) >= 2, done.stdout
    store = feature_store(graph)
    result = MonitoringService(store).compute_log_metrics(
        project=store.project, feature_service_name="sms_service_v2"
    )
    assert result["status"] == "completed" and result["computed_features"] >= 1
    with connect(graph.slice.postgres_url) as conn:
        logged = query_frame(
            conn,
            "SELECT feature_view_name, feature_name, row_count FROM feast_monitoring_feature_metrics "
            "WHERE data_source_type = 'log' AND granularity = 'daily'",
        )
    served = logged[(logged["feature_view_name"] == FEATURE_VIEW) & (logged["feature_name"] == TEXT_FEATURE)]
    assert len(served) and (served["row_count"] > 0).all()


def test_the_intake_takes_each_answer_once_and_the_check_passes_on_honest_traffic(graph: Graph) -> None:
    with serving(graph, log_texts=True) as (api, log):
        answered = replay(api, ids=list(range(200, 260)), texts=NEW_TEXTS)
        settled(log, answered)
    first = run(graph)
    assert first.success
    passed, _, found = check(first, "served_features_match_offline")
    assert passed, found
    assert found["mismatched_answers"] == 0 and found["answers_compared"] >= answered
    assert found["by_form"]["text"] >= 2 and found["scores_compared"] == found["matched"]
    again = run(graph)
    [event] = again.asset_materializations_for_node("served_log")
    assert event.metadata["rows_taken_in"].value == 0
    with connect(graph.slice.postgres_url) as conn:
        total = query_frame(conn, "SELECT count(*) AS n, count(DISTINCT request_id) AS d FROM served_answers")
    assert total["n"].iloc[0] == total["d"].iloc[0] == event.metadata["dagster/row_count"].value


def test_a_redis_row_changed_by_hand_fails_the_check_naming_the_id_and_feature(graph: Graph) -> None:
    run(graph)  # what was logged before is taken in already
    # Feast's keys and fields are bytes; redis-py's stubs declare str, its code takes both.
    client: Any = redis.Redis.from_url(graph.slice.redis_url)
    key, field = (
        online_keys.entity_key(graph.slice.feast_project, 42),
        _mmh3(f"{FEATURE_VIEW}:{TEXT_FEATURE}"),
    )
    original = client.hget(key, field)
    assert original is not None
    client.hset(key, field, Value(string_val="URGENT! You have won a prize").SerializeToString())
    try:
        with serving(graph) as (api, log):
            answered = replay(api, ids=[41, 42, 43])
            settled(log, answered)
        result = run(graph)
    finally:
        client.hset(key, field, original)
    passed, severity, found = check(result, "served_features_match_offline")
    assert not passed and severity == dg.AssetCheckSeverity.ERROR
    assert found["mismatched_answers"] == 1 and found["matched"] == 2
    assert found["first_mismatched_ids"] == [42] and found["first_mismatched_features"] == [TEXT_FEATURE]
    # Blocking: Feast's profile of the log is not computed on a log that proves serving wrong.
    assert not result.asset_materializations_for_node("served_feature_metrics")


def test_the_traffic_command_replays_messages_against_the_running_api(graph: Graph) -> None:
    before = len(log_rows(graph, "sms_service_v2"))
    command = [str(Path(sys.executable).with_name("sms-assets")), "traffic", "--kind", "ids", "--count", "60"]
    with serving(graph) as (api, log):
        done = subprocess.run(
            [*command, "--url", str(api.base_url)],
            env={**os.environ, **graph.slice.env()},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        settled(log, 60)
        refused = subprocess.run(
            [*command[:-1], "0", "--url", str(api.base_url)],
            env={**os.environ, **graph.slice.env()},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    version = ModelStore(graph.slice.state_dir / "models").current_version()
    assert done.stdout.strip().endswith(f"answers by model version: {version} 60")
    assert len(log_rows(graph, "sms_service_v2")) - before == 60
    assert refused.returncode == 1 and refused.stderr.strip() == "error: --count must be at least 1"
