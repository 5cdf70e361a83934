"""The arrivals worker against a real Dagster instance, Postgres and Redis: each batch becomes a run of
arrivals_job with its materializations and checks, it waits for any run holding its pools (not for the
served log's intake, which holds a pool of its own), and arrivals_sensor leaves the folder to it while
it holds the folder's lock."""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from sms_assets.arrivals_worker import WORKER_TAG, ArrivalsWorker
from sms_assets.defs.ingestion.batches import MESSAGES_HEADER, message_id_for
from sms_assets.defs.ingestion.landing import LandingFolder
from sms_assets.defs.shared import SERVED_LOG_POOL
from sms_core import feast_config, locks
from sms_core.prediction import all_online
from tests.conftest import Services, new_slice
from tests.daemon import InProcessDaemon
from tests.integration.conftest import build_resources, loaded_instance, slice_definitions

pytestmark = pytest.mark.integration

HOLDBACK = 20


@pytest.fixture(scope="module")
def slice_(server_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with new_slice(server_urls, tmp_path_factory.mktemp("worker")) as slice_:
        yield slice_


@pytest.fixture(scope="module")
def defs(slice_: Services, dataset_path: Path) -> dg.Definitions:
    return slice_definitions(build_resources(slice_, dataset_path, holdback=HOLDBACK))


@pytest.fixture(scope="module")
def instance(defs: dg.Definitions) -> Iterator[dg.DagsterInstance]:
    with loaded_instance(defs) as instance:
        yield instance


@pytest.fixture
def folder(slice_: Services) -> LandingFolder:
    return LandingFolder(slice_.state_dir / "landing")


def land(folder: LandingFolder, name: str, count: int = 3) -> list[int]:
    now = datetime.now(UTC)
    rows = [(f"{name}-{i}", now, f"message {i} of {name}") for i in range(count)]
    folder.land(name, MESSAGES_HEADER, rows)
    return [message_id_for(sms_id) for sms_id, _, _ in rows]


def test_a_batch_is_a_run_with_its_materializations_and_checks_and_reaches_redis(
    defs: dg.Definitions, instance: dg.DagsterInstance, folder: LandingFolder, slice_: Services
) -> None:
    worker = ArrivalsWorker(defs, instance, folder)
    assert worker.once() is None  # nothing waits

    ids = land(folder, "w1.tsv")
    result = worker.once()
    assert result is not None and result.success
    run = result.dagster_run
    assert run.job_name == "arrivals_job" and WORKER_TAG in run.tags
    assert run.tags["sms_assets/first_batch"] == "w1.tsv"
    materialized = {
        e.asset_key.to_user_string() for e in result.get_asset_materialization_events() if e.asset_key
    }
    assert materialized == {"sms_arrivals", "sms_features", "online_store"}
    checks = result.get_asset_check_evaluations()
    assert "online_matches_offline" in {c.check_name for c in checks}
    assert all(c.passed for c in checks)
    assert folder.pending() == []
    store = feast_config.feature_store(slice_.postgres_url, slice_.redis_url, slice_.feast_project)
    assert all_online(store, ids)


@pytest.mark.parametrize("status", [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTED])
def test_the_worker_waits_for_a_run_that_holds_its_pools(
    defs: dg.Definitions, instance: dg.DagsterInstance, folder: LandingFolder, status: dg.DagsterRunStatus
) -> None:
    worker = ArrivalsWorker(defs, instance, folder)
    # The hourly reconciliation, about to start or in progress: it holds sms_stores, which arrivals_job
    # needs. (A queued run is one more status of the same list.)
    queued = instance.create_run_for_job(defs.resolve_job_def("reconcile_online_store_job"), status=status)
    try:
        land(folder, f"w2-{status.value.lower()}.tsv")
        blocker = worker.held_back_by()
        assert blocker is not None and blocker.run_id == queued.run_id
        assert worker.once() is None
        assert [path.name for path in folder.pending()] == [f"w2-{status.value.lower()}.tsv"]
    finally:
        instance.delete_run(queued.run_id)
    result = worker.once()
    assert result is not None and result.success
    assert folder.pending() == []


def test_the_worker_does_not_wait_for_the_served_log_intake_but_for_a_run_holding_the_stores(
    defs: dg.Definitions, instance: dg.DagsterInstance, folder: LandingFolder, slice_: Services
) -> None:
    worker = ArrivalsWorker(defs, instance, folder)
    # The quarter-hourly intake in progress: it holds only the served log's pool.
    intake = instance.create_run_for_job(
        defs.resolve_job_def("served_log_job"), status=dg.DagsterRunStatus.STARTED
    )
    try:
        held = intake.run_op_concurrency.all_pools if intake.run_op_concurrency else None
        assert held is not None and set(held) == {SERVED_LOG_POOL}
        ids = land(folder, "w5.tsv")
        assert worker.held_back_by() is None
        result = worker.once()
        assert result is not None and result.success
        assert folder.pending() == []
        store = feast_config.feature_store(slice_.postgres_url, slice_.redis_url, slice_.feast_project)
        assert all_online(store, ids)
        # Beside it, the nightly retrain: it holds sms_stores, and the worker waits for it.
        retrain = instance.create_run_for_job(
            defs.resolve_job_def("retrain_job"), status=dg.DagsterRunStatus.STARTED
        )
        try:
            land(folder, "w6.tsv")
            blocker = worker.held_back_by()
            assert blocker is not None and blocker.run_id == retrain.run_id
            assert worker.once() is None
            assert [path.name for path in folder.pending()] == ["w6.tsv"]
        finally:
            instance.delete_run(retrain.run_id)
        result = worker.once()
        assert result is not None and result.success
        assert folder.pending() == []
    finally:
        instance.delete_run(intake.run_id)


def test_a_failed_run_is_tried_again_later_and_the_bad_batch_is_quarantined(
    defs: dg.Definitions, instance: dg.DagsterInstance, folder: LandingFolder
) -> None:
    # An hour: the test sees the worker hold back, whatever the machine's pace.
    worker = ArrivalsWorker(defs, instance, folder, retry_after_s=3600)
    folder.root.mkdir(parents=True, exist_ok=True)
    (folder.root / "bad.tsv").write_text("not a header\n")
    failed = worker.once()
    assert failed is not None and not failed.success
    assert (folder.quarantined / "bad.tsv").exists()
    land(folder, "w3.tsv")
    assert worker.once() is None
    assert [path.name for path in folder.pending()] == ["w3.tsv"]
    result = ArrivalsWorker(defs, instance, folder).once()
    assert result is not None and result.success


def test_the_sensor_leaves_the_batches_to_the_worker_while_it_holds_the_folder(
    defs: dg.Definitions, instance: dg.DagsterInstance, folder: LandingFolder
) -> None:
    daemon = InProcessDaemon(defs, instance)
    land(folder, "w4.tsv")
    with folder.watched():
        assert folder.watcher() is not None
        skip = daemon.sensor("arrivals_sensor")
        assert isinstance(skip, dg.SkipReason)
        assert "for the arrivals worker" in (skip.skip_message or "")
        # A second worker on the same folder is refused, naming the first.
        with pytest.raises(locks.Busy) as busy, folder.watched():
            pass
        assert busy.value.holder == folder.watcher()
    # Once the worker is gone, the sensor takes the batches again.
    assert folder.watcher() is None
    request = daemon.sensor("arrivals_sensor")
    assert isinstance(request, dg.RunRequest)
    assert daemon.execute(request, "arrivals_job").success
