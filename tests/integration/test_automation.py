"""Sensors and declarative automation of the real code location, evaluated against a real Dagster
instance, Postgres and Redis: the `defs` that `dagster dev` loads, pointed at a slice of its own."""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from sms_assets import online_sync
from sms_assets.arrivals import MESSAGES_HEADER, LandingFolder
from sms_assets.definitions import defs
from tests.conftest import Services, delete_feast_keys, new_slice, patched_env

pytestmark = pytest.mark.integration

FOLLOWERS = {"sms_features", "feast_registry", "online_store"}


@pytest.fixture(scope="module")
def slice_(server_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with new_slice(server_urls, tmp_path_factory.mktemp("automation")) as slice_:
        yield slice_


@pytest.fixture(scope="module")
def instance(slice_: Services) -> Iterator[dg.DagsterInstance]:
    """A real (SQLite) instance, with `defs` pointed at the slice and the initial load done."""
    with (
        patched_env({**slice_.env(), "SMS_DATASET_HOLDBACK": "20"}),
        dg.instance_for_test() as instance,
    ):
        assert defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance).success
        yield instance


@pytest.fixture
def folder(slice_: Services) -> LandingFolder:
    return LandingFolder(slice_.state_dir / "landing")


def tick(name: str, instance: dg.DagsterInstance) -> dg.RunRequest | dg.SkipReason:
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        result = defs.resolve_sensor_def(name)(context)
    assert isinstance(result, dg.RunRequest | dg.SkipReason), result
    return result


def execute(request: dg.RunRequest, job_name: str | None, instance: dg.DagsterInstance) -> bool:
    """Run what a sensor requested, as the daemon would, in this process."""
    if job_name:
        job = defs.resolve_job_def(job_name)
        return job.execute_in_process(
            run_config=request.run_config, instance=instance, tags=request.tags
        ).success
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, asset_selection=request.asset_selection).success


def land(folder: LandingFolder, name: str, count: int = 3) -> Path:
    now = datetime.now(UTC)
    return folder.land(
        name, MESSAGES_HEADER, [(f"{name}-{i}", now, f"message {i} of {name}") for i in range(count)]
    )


def requested(result: dg.EvaluateAutomationConditionsResult) -> set[str]:
    return {r.key.to_user_string() for r in result.results if r.true_subset.size}  # type: ignore[union-attr]


def test_arrivals_sensor(instance: dg.DagsterInstance, folder: LandingFolder) -> None:
    skip = tick("arrivals_sensor", instance)
    assert isinstance(skip, dg.SkipReason) and "no batch waiting" in (skip.skip_message or "")

    first, second = land(folder, "s1.tsv"), land(folder, "s2.tsv")
    request = tick("arrivals_sensor", instance)
    assert isinstance(request, dg.RunRequest)
    assert request.run_config["ops"]["ingest_arrivals"]["config"]["batches"] == ["s1.tsv", "s2.tsv"]

    # While a run that ingests (or computes features) is in flight, batches wait for the next tick.
    in_flight = instance.create_run_for_job(
        defs.resolve_job_def("arrivals_job"), status=dg.DagsterRunStatus.NOT_STARTED
    )
    wait = tick("arrivals_sensor", instance)
    assert isinstance(wait, dg.SkipReason) and in_flight.run_id in (wait.skip_message or "")
    instance.delete_run(in_flight.run_id)

    assert execute(request, "arrivals_job", instance)
    assert folder.pending() == [] and first.exists() is False and second.exists() is False
    assert isinstance(tick("arrivals_sensor", instance), dg.SkipReason)


def test_automation_brings_new_messages_to_redis_in_one_run(
    instance: dg.DagsterInstance, folder: LandingFolder, slice_: Services
) -> None:
    # The automation sensor's first tick only records where things stand, as the daemon's does.
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert requested(baseline) == set()

    land(folder, "a1.tsv")
    request = tick("arrivals_sensor", instance)
    assert isinstance(request, dg.RunRequest) and execute(request, "arrivals_job", instance)

    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    assert requested(after) == FOLLOWERS  # not the training set nor the model: those are nightly
    keys = [dg.AssetKey(name) for name in sorted(FOLLOWERS)]
    assert execute(dg.RunRequest(asset_selection=keys), None, instance)

    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
    assert requested(settled) == set()
    # A full materialization (the README's `make run`, which selects '*') does not set the followers
    # off again: they ran in the same run as their parents.
    everything = list(defs.resolve_asset_graph().get_all_asset_keys())
    assert execute(dg.RunRequest(asset_selection=everything), None, instance)
    assert (
        requested(dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor))
        == set()
    )


def test_catch_up_sensor_closes_every_gap(
    instance: dg.DagsterInstance, folder: LandingFolder, slice_: Services
) -> None:
    up_to_date = tick("feature_store_catch_up", instance)
    assert isinstance(up_to_date, dg.SkipReason) and "up to date" in (up_to_date.skip_message or "")

    # Messages ingested, but the automation run that follows never happened (it failed, say).
    land(folder, "c1.tsv")
    request = tick("arrivals_sensor", instance)
    assert isinstance(request, dg.RunRequest) and execute(request, "arrivals_job", instance)
    behind = tick("feature_store_catch_up", instance)
    assert isinstance(behind, dg.RunRequest)
    assert {k.to_user_string() for k in behind.asset_selection or []} == FOLLOWERS
    assert execute(behind, None, instance)
    assert isinstance(tick("feature_store_catch_up", instance), dg.SkipReason)

    # Redis lost its data (and with it the watermark): only Redis needs refilling.
    delete_feast_keys(slice_.redis_url, slice_.feast_project)
    refill = tick("feature_store_catch_up", instance)
    assert isinstance(refill, dg.RunRequest)
    assert refill.asset_selection == [dg.AssetKey("online_store")]
    assert execute(refill, None, instance)
    assert online_sync.read_watermark(slice_.redis_url, slice_.feast_project) is not None
    assert isinstance(tick("feature_store_catch_up", instance), dg.SkipReason)
