"""Redis losing what it held: emptied (FLUSHDB), half of its keys deleted, killed and restarted empty.

A known id is never "unknown": the API answers 503 `online_store_incomplete` for it (404 stays for an id
the offline table does not hold either) and /ready is 503 while Redis holds fewer messages than it
must. The catch-up sensor notices on its next tick and requests a full sync, which heals every id.

Redis here is a server of the tests' own without persistence (as on these machines), with a password
that must never be printed; the database and Feast project are the module's own.
"""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import numpy as np
import pytest

from sms_api.app import create_app
from sms_assets.defs.feature_store import online_sync
from sms_assets.defs.feature_store.sensors import FULL_SYNC, OUTAGE
from sms_core import online_keys, urls
from sms_core.contracts import FEATURE_TABLE
from sms_core.embedded import wait_until
from sms_core.postgres import connect, id_array
from tests.conftest import Services, new_slice
from tests.daemon import InProcessDaemon
from tests.integration.conftest import (
    build_resources,
    live_server,
    metadata,
    service_config,
    slice_definitions,
)
from tests.integration.test_api_contract import assert_declared, open_schema
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

PASSWORD = "lost-keys-s3cret"
KNOWN = 42
UNKNOWN = 999_999
BATCH = 1_000


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), persistent=False, password=PASSWORD)
    server.start()
    yield server
    if server.process:
        server.crash()


@pytest.fixture(scope="module")
def slice_(
    server_urls: tuple[str, str], redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    with new_slice(server_urls, tmp_path_factory.mktemp("lost"), redis_url=redis_server.url) as slice_:
        yield slice_


@pytest.fixture(scope="module")
def daemon(slice_: Services, dataset_path: Path) -> Iterator[InProcessDaemon]:
    """The code location's sensors and runs on the slice, after the initial load (a model served)."""
    defs = slice_definitions(build_resources(slice_, dataset_path))
    with dg.instance_for_test() as instance:
        assert defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance).success
        yield InProcessDaemon(defs, instance)


@pytest.fixture
def api(daemon: InProcessDaemon, slice_: Services) -> Iterator[httpx.Client]:
    with live_server(create_app(service_config(slice_))) as client:
        yield client


def offline_ids(slice_: Services) -> np.ndarray:
    with connect(slice_.postgres_url) as conn:
        return id_array(conn, f"SELECT message_id FROM {FEATURE_TABLE} ORDER BY message_id")


def ready_says(api: httpx.Client, status: int) -> dict:
    """/ready's body once its status is `status` (its count of Redis keys is a few seconds old)."""
    answers: list[httpx.Response] = []

    def answered() -> None:
        answers.append(api.get("/ready"))
        assert answers[-1].status_code == status, answers[-1].text

    wait_until(answered, timeout_s=15, interval_s=0.5)
    return answers[-1].json()


def repaired(daemon: InProcessDaemon, lost: str) -> None:
    """The sensor's first tick asks for a full sync of Redis, naming the loss; the sync succeeds, and
    the tick after it finds nothing to do."""
    request = daemon.sensor("feature_store_catch_up")
    assert isinstance(request, dg.RunRequest), request
    assert request.asset_selection == [dg.AssetKey("online_store")]
    assert request.run_config == FULL_SYNC.to_config_dict()
    assert lost in request.tags["sms_assets/catch_up"]
    assert daemon.execute(request).success
    up_to_date = daemon.sensor("feature_store_catch_up")
    assert isinstance(up_to_date, dg.SkipReason) and "up to date" in (up_to_date.skip_message or "")


def every_id_answers(api: httpx.Client, ids: np.ndarray) -> None:
    for start in range(0, len(ids), BATCH):
        chunk = [int(i) for i in ids[start : start + BATCH]]
        response = api.post("/predict/batch", json={"message_ids": chunk})
        assert response.status_code == 200, response.text[:300]


def test_an_emptied_redis_is_incomplete_not_unknown_then_heals(
    daemon: InProcessDaemon, api: httpx.Client, redis_server: RedisServer, slice_: Services
) -> None:
    assert api.post("/predict", json={"message_id": KNOWN}).status_code == 200
    assert ready_says(api, 200)["checks"]["online_store"] == "ok"

    redis_server.flushdb()
    known = api.post("/predict", json={"message_id": KNOWN})
    assert known.status_code == 503, known.text
    assert known.json() == {
        "error": "online_store_incomplete",
        "detail": f"message {KNOWN} exists but its features are not in the online store; a sync is due",
        "message_ids": [KNOWN],
        "unknown_message_ids": [],
    }
    assert_declared(open_schema, "/predict", known)
    unknown = api.post("/predict", json={"message_id": UNKNOWN})
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["detail"] == (
        f"unknown message_id {UNKNOWN}: neither the online nor the offline store holds it"
    )
    # A batch: the same rule per id, and 503 when any id exists (a retry after the sync succeeds).
    both = api.post("/predict/batch", json={"message_ids": [UNKNOWN, KNOWN, 3]})
    assert both.status_code == 503, both.text
    assert (both.json()["message_ids"], both.json()["unknown_message_ids"]) == ([3, KNOWN], [UNKNOWN])
    assert_declared(open_schema, "/predict/batch", both)

    total = len(offline_ids(slice_))
    ready = ready_says(api, 503)
    assert ready["checks"]["online_store"] == (
        f"incomplete: Redis holds 0 of the {total:,} messages of {FEATURE_TABLE} it must hold "
        "(synced through none (lost or never written)); a sync is due"
    )
    assert {name for name, value in ready["checks"].items() if value != "ok"} == {"online_store"}

    # The watermark went with the keys: that means every row, never "nothing to do".
    repaired(daemon, f"Redis holds 0 of the {total:,}")
    assert api.post("/predict", json={"message_id": KNOWN}).status_code == 200
    assert ready_says(api, 200)["checks"]["online_store"] == "ok"


def test_half_of_the_keys_deleted_under_a_kept_watermark_are_synced_again(
    daemon: InProcessDaemon, api: httpx.Client, slice_: Services
) -> None:
    ids = offline_ids(slice_)
    watermark = online_sync.read_watermark(slice_.redis_url, slice_.feast_project)
    assert watermark is not None
    deleted = online_keys.delete(slice_.redis_url, slice_.feast_project, [int(i) for i in ids[::2]])
    assert deleted == len(ids[::2])
    assert online_sync.read_watermark(slice_.redis_url, slice_.feast_project) == watermark

    lost = int(ids[0])
    response = api.post("/predict", json={"message_id": lost})
    assert response.status_code == 503 and response.json()["message_ids"] == [lost], response.text
    ready = ready_says(api, 503)["checks"]["online_store"]
    assert f"holds {len(ids) - deleted:,} of the {len(ids):,}" in ready

    # A full sync already on its way is left to do it; an arrivals run in flight is not (it writes
    # only what arrived): the sync asked for queues behind it.
    instance, defs = daemon.instance, daemon.defs
    reconciling = instance.create_run_for_job(
        defs.resolve_job_def("reconcile_online_store_job"), status=dg.DagsterRunStatus.NOT_STARTED
    )
    wait = daemon.sensor("feature_store_catch_up")
    instance.delete_run(reconciling.run_id)
    assert isinstance(wait, dg.SkipReason) and reconciling.run_id in (wait.skip_message or "")
    arriving = instance.create_run_for_job(
        defs.resolve_job_def("arrivals_job"), status=dg.DagsterRunStatus.STARTED
    )
    try:
        repaired(daemon, f"{deleted:,} lost")
    finally:
        instance.delete_run(arriving.run_id)
    every_id_answers(api, ids)
    assert ready_says(api, 200)["ready"] is True


def test_a_restart_that_comes_back_empty_is_one_line_while_down_then_synced(
    daemon: InProcessDaemon, api: httpx.Client, redis_server: RedisServer, slice_: Services
) -> None:
    redis_server.crash()
    down = daemon.sensor("feature_store_catch_up")
    assert isinstance(down, dg.SkipReason), down
    line = down.skip_message or ""
    assert line.startswith(f"{OUTAGE}Redis at {urls.redact(slice_.redis_url)} is unreachable"), line
    assert "\n" not in line and PASSWORD not in line and "***" in line
    assert api.post("/predict", json={"message_id": KNOWN}).json()["error"] == "service_unavailable"

    redis_server.start()
    assert api.post("/predict", json={"message_id": KNOWN}).status_code == 503
    repaired(daemon, "Redis holds 0 of the")
    every_id_answers(api, offline_ids(slice_))
    assert ready_says(api, 200)["ready"] is True


def test_a_lost_watermark_means_every_row_not_nothing_to_do(
    daemon: InProcessDaemon, api: httpx.Client, slice_: Services
) -> None:
    with urls.redis_session(slice_.redis_url) as client:
        client.delete(online_sync.watermark_key(slice_.feast_project))
    # The keys are all there: clients see nothing, and the gap is an ordinary one (two ticks).
    assert api.post("/predict", json={"message_id": KNOWN}).status_code == 200
    behind = daemon.sensor("feature_store_catch_up")
    assert isinstance(behind, dg.SkipReason) and "Redis holds its changes up to None" in (
        behind.skip_message or ""
    )
    request = daemon.sensor("feature_store_catch_up")
    assert isinstance(request, dg.RunRequest) and not request.run_config
    result = daemon.execute(request)
    assert result.success
    synced = metadata(result, "online_store")
    assert (synced["full_refresh"], synced["rows_written"]) == (True, len(offline_ids(slice_)))
    assert online_sync.read_watermark(slice_.redis_url, slice_.feast_project) is not None


def test_beyond_the_keys_counted_one_by_one_the_database_size_still_shows_a_loss(
    daemon: InProcessDaemon, api: httpx.Client, slice_: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database too large to SCAN on every tick is bounded by DBSIZE: a database of this project
    alone (as here) still shows every loss."""
    monkeypatch.setattr(online_keys, "EXACT_COUNT_KEYS", 0)
    ids = offline_ids(slice_)
    deleted = online_keys.delete(slice_.redis_url, slice_.feast_project, [int(i) for i in ids[:100]])
    assert deleted == 100
    ready = ready_says(api, 503)["checks"]["online_store"]
    assert f"Redis holds at most {len(ids) - deleted:,} of the {len(ids):,} messages" in ready
    repaired(daemon, "100 lost")
    assert ready_says(api, 200)["ready"] is True
