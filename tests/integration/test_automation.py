"""Sensors and declarative automation of the real code location, evaluated against a real Dagster
instance, Postgres and Redis: the `defs` that `dagster dev` loads, pointed at a slice of its own."""

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from sms_assets.defs.feature_store import online_sync
from sms_assets.defs.feature_store.sensors import FULL_SYNC
from sms_assets.defs.features import table as feature_table
from sms_assets.defs.ingestion.batches import MESSAGES_HEADER
from sms_assets.defs.ingestion.landing import LandingFolder
from sms_assets.defs.ingestion.sensors import INGESTING
from sms_core.postgres import connect
from tests.conftest import Services, delete_feast_keys, new_slice
from tests.daemon import InProcessDaemon
from tests.integration.conftest import build_resources, loaded_instance, slice_definitions

pytestmark = pytest.mark.integration

# What follows new messages: their features, then Redis (the registry follows the feature repo only).
FOLLOWERS = {"sms_features", "online_store"}
HOLDBACK = 20


@pytest.fixture(scope="module")
def slice_(server_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with new_slice(server_urls, tmp_path_factory.mktemp("automation")) as slice_:
        yield slice_


@pytest.fixture(scope="module")
def defs(slice_: Services, dataset_path: Path) -> dg.Definitions:
    """The code location's definitions, their resources pointed at the slice."""
    return slice_definitions(build_resources(slice_, dataset_path, holdback=HOLDBACK))


@pytest.fixture(scope="module")
def instance(defs: dg.Definitions) -> Iterator[dg.DagsterInstance]:
    with loaded_instance(defs) as instance:
        yield instance


@pytest.fixture
def folder(slice_: Services) -> LandingFolder:
    return LandingFolder(slice_.state_dir / "landing")


@pytest.fixture
def daemon(defs: dg.Definitions, instance: dg.DagsterInstance) -> InProcessDaemon:
    return InProcessDaemon(defs, instance)


def land(folder: LandingFolder, name: str, count: int = 3) -> Path:
    now = datetime.now(UTC)
    return folder.land(
        name, MESSAGES_HEADER, [(f"{name}-{i}", now, f"message {i} of {name}") for i in range(count)]
    )


def names(keys: Iterable[dg.AssetKey]) -> set[str]:
    return {key.to_user_string() for key in keys}


def test_arrivals_sensor(
    defs: dg.Definitions, daemon: InProcessDaemon, instance: dg.DagsterInstance, folder: LandingFolder
) -> None:
    skip = daemon.sensor("arrivals_sensor")
    assert isinstance(skip, dg.SkipReason) and "no batch waiting" in (skip.skip_message or "")

    first, second = land(folder, "s1.tsv"), land(folder, "s2.tsv")
    request = daemon.sensor("arrivals_sensor")
    assert isinstance(request, dg.RunRequest)
    config = request.run_config["ops"]["ingest_arrivals"]["config"]
    # only_news: a sensor run that brings no new message does not wake automation downstream.
    assert (config["batches"], config["only_news"]) == (["s1.tsv", "s2.tsv"], True)

    # A run that ingests and has yet to start takes every batch waiting: no second one is asked for.
    job = defs.resolve_job_def("arrivals_job")
    queued = instance.create_run_for_job(job, status=dg.DagsterRunStatus.NOT_STARTED)
    wait = daemon.sensor("arrivals_sensor")
    assert isinstance(wait, dg.SkipReason) and f"wait for run {queued.run_id}" in (wait.skip_message or "")
    instance.delete_run(queued.run_id)

    # While the run asked for is in progress, its batches are its own; a batch that lands meanwhile
    # gets one follow-up run, which takes whatever waits when it starts (the run queue starts it as soon
    # as the landing pool is free).
    running = instance.create_run_for_job(
        job, run_config=request.run_config, status=dg.DagsterRunStatus.STARTED
    )
    taken = daemon.sensor("arrivals_sensor")
    assert isinstance(taken, dg.SkipReason) and running.run_id in (taken.skip_message or "")
    third = land(folder, "s3.tsv")
    follow_up = daemon.sensor("arrivals_sensor")
    assert isinstance(follow_up, dg.RunRequest)
    assert follow_up.run_config["ops"]["ingest_arrivals"]["config"] == {"batches": [], "only_news": True}
    assert follow_up.tags["sms_assets/first_batch"] == "s3.tsv"
    instance.delete_run(running.run_id)

    assert daemon.execute(request, "arrivals_job").success
    assert folder.pending() == [third] and not first.exists() and not second.exists()
    # The follow-up, run after it, takes the batch that landed meanwhile.
    assert daemon.execute(follow_up, "arrivals_job").success
    assert folder.pending() == []
    assert isinstance(daemon.sensor("arrivals_sensor"), dg.SkipReason)


def test_an_arrival_reaches_redis_in_its_own_run(
    defs: dg.Definitions, daemon: InProcessDaemon, folder: LandingFolder, slice_: Services
) -> None:
    """The arrivals sensor's one run ingests, computes features and writes Redis: automation has
    nothing left to do, and the registry is not applied again for new rows."""
    assert daemon.automation() == set()

    land(folder, "a1.tsv")
    request = daemon.sensor("arrivals_sensor")
    assert isinstance(request, dg.RunRequest)
    assert names(request.asset_selection or []) == {"sms_arrivals", "sms_arrival_labels", *FOLLOWERS}
    result = daemon.execute(request, "arrivals_job")
    assert result.success
    assert {names([e.asset_key]).pop() for e in result.get_asset_materialization_events() if e.asset_key} == {
        "sms_arrivals",
        "sms_features",
        "online_store",
    }
    assert all(check.passed for check in result.get_asset_check_evaluations())
    with connect(slice_.postgres_url) as conn:
        newest = feature_table.newest_change(conn)
    assert online_sync.read_watermark(slice_.redis_url, slice_.feast_project) == newest
    assert daemon.automation() == set()

    # A full materialization (the README's `make run`, which selects '*') does not set the followers
    # off again: they ran in the same run as their parents.
    everything = sorted(defs.resolve_asset_graph().get_all_asset_keys())
    assert daemon.execute(dg.RunRequest(asset_selection=everything)).success
    assert daemon.automation() == set()


def test_features_follow_an_ingestion_that_did_not_carry_them(
    defs: dg.Definitions, daemon: InProcessDaemon, instance: dg.DagsterInstance, folder: LandingFolder
) -> None:
    """A run that only ingested (one launched from the UI, say) is followed by automation, even while
    the next ingestion is in flight: under a steady stream one nearly always is."""
    assert daemon.automation() == set()
    land(folder, "n1.tsv")
    request = daemon.sensor("arrivals_sensor")
    assert isinstance(request, dg.RunRequest)
    only_ingest = dg.RunRequest(run_config=request.run_config, asset_selection=INGESTING)
    assert daemon.execute(only_ingest, "arrivals_job").success
    land(folder, "n2.tsv")
    next_ingestion = instance.create_run_for_job(
        defs.resolve_job_def("arrivals_job"),
        status=dg.DagsterRunStatus.STARTED,
        asset_selection=frozenset(INGESTING),
    )
    try:
        requested = daemon.automation()
        assert names(requested) == FOLLOWERS
    finally:
        instance.delete_run(next_ingestion.run_id)
    request = daemon.sensor("arrivals_sensor")
    assert isinstance(request, dg.RunRequest) and daemon.execute(request, "arrivals_job").success
    assert daemon.execute(dg.RunRequest(asset_selection=sorted(requested))).success
    assert daemon.automation() == set()


def test_catch_up_sensor_closes_every_gap(
    daemon: InProcessDaemon, folder: LandingFolder, slice_: Services
) -> None:
    up_to_date = daemon.sensor("feature_store_catch_up")
    assert isinstance(up_to_date, dg.SkipReason) and "up to date" in (up_to_date.skip_message or "")

    # Messages ingested by a run that stopped there (its feature step failed, say), and no automation
    # run followed. The first tick leaves automation its chance; the second, still seeing the gap,
    # closes it.
    land(folder, "c1.tsv")
    request = daemon.sensor("arrivals_sensor")
    assert isinstance(request, dg.RunRequest)
    only_ingest = dg.RunRequest(run_config=request.run_config, asset_selection=INGESTING)
    assert daemon.execute(only_ingest, "arrivals_job").success
    wait = daemon.sensor("feature_store_catch_up")
    assert isinstance(wait, dg.SkipReason) and "3 arrived message(s) without features" in (
        wait.skip_message or ""
    )
    behind = daemon.sensor("feature_store_catch_up")
    assert isinstance(behind, dg.RunRequest)
    assert names(behind.asset_selection or []) == FOLLOWERS
    assert daemon.execute(behind).success
    assert isinstance(daemon.sensor("feature_store_catch_up"), dg.SkipReason)

    # Redis lost its data (and with it the watermark): nothing else will refill it, so the first tick
    # asks for every row (tests/integration/test_lost_keys.py has the partial losses).
    delete_feast_keys(slice_.redis_url, slice_.feast_project)
    refill = daemon.sensor("feature_store_catch_up")
    assert isinstance(refill, dg.RunRequest)
    assert refill.asset_selection == [dg.AssetKey("online_store")]
    assert refill.run_config == FULL_SYNC.to_config_dict()
    assert daemon.execute(refill).success
    assert online_sync.read_watermark(slice_.redis_url, slice_.feast_project) is not None
    assert isinstance(daemon.sensor("feature_store_catch_up"), dg.SkipReason)

    # A deploy changed the feature code (here: the table says it was computed by other code). Redis is
    # not synced from such a table, and the sensor asks for every row to be computed again.
    with connect(slice_.postgres_url) as conn:
        conn.execute("""COMMENT ON TABLE sms_features IS '{"code_version": "older"}'""")
    assert not daemon.execute(dg.RunRequest(asset_selection=[dg.AssetKey("online_store")])).success
    wait = daemon.sensor("feature_store_catch_up")
    assert isinstance(wait, dg.SkipReason) and "must be computed again" in (wait.skip_message or "")
    rebuild = daemon.sensor("feature_store_catch_up")
    assert isinstance(rebuild, dg.RunRequest)
    assert names(rebuild.asset_selection or []) == {*FOLLOWERS, "feast_registry"}
    assert daemon.execute(rebuild).success
    assert isinstance(daemon.sensor("feature_store_catch_up"), dg.SkipReason)
