"""The Dagster instance configs the deployments ship (compose, Kubernetes), built on a real Postgres: the
storage, the run coordinator and the pools each one gives."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster_k8s import K8sRunLauncher
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from sqlalchemy.engine import make_url

from tests.conftest import PROJECT_ROOT
from tests.unit.test_compose import ROOT, compose, dagster_yaml, env_references, environment
from tests.unit.test_concurrency import assert_one_slot_per_pool_per_run
from tests.unit.test_deploy_profile import INSTANCE_YAML, STORAGE_ENV, in_a_pod, instance_home

pytestmark = pytest.mark.integration
__all__ = ["in_a_pod"]  # a fixture the Kubernetes profile's test uses


def test_dagster_yaml_builds_a_postgres_instance_that_stores_events(tmp_path, monkeypatch, scratch_database):
    # The URL as the containers get it (its driver above all), moved to the scratch database.
    [variable] = env_references(dagster_yaml()["storage"]["postgres"])
    compose_url = make_url(environment(compose()["services"]["daemon"])[variable])
    url = make_url(scratch_database).set(drivername=compose_url.drivername, query=compose_url.query)
    (tmp_path / "dagster.yaml").write_text((ROOT / "deploy" / "compose" / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv(variable, url.render_as_string(hide_password=False))

    # DagsterInstance.get() validates dagster.yaml against Dagster's own schema, as every container will.
    instance = dg.DagsterInstance.get()
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert isinstance(instance.run_launcher, dg.DefaultRunLauncher)
        assert not instance.telemetry_enabled
        assert instance.get_runs() == []
        # Writing an event is what the webserver, the daemon and every run do; it also sends a
        # Postgres NOTIFY, which fails on some driver and SQLAlchemy combinations.
        instance.report_runless_asset_event(dg.AssetMaterialization("compose_check"))
        assert instance.get_latest_materialization_event(dg.AssetKey("compose_check")) is not None
    finally:
        instance.dispose()


def test_the_compose_instance_config_gives_one_slot_per_pool_per_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch_database: str
) -> None:
    (tmp_path / "dagster.yaml").write_text((PROJECT_ROOT / "deploy" / "compose" / "dagster.yaml").read_text())
    # dagster-postgres' driver, as docker-compose.yml gives it (README: why psycopg2).
    url = make_url(scratch_database).set(drivername="postgresql+psycopg2")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", url.render_as_string(hide_password=False))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert_one_slot_per_pool_per_run(instance)
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert instance.run_coordinator.dequeue_interval_seconds == 1
        # The pools serialize; no run count limit holds back runs that share no store.
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs != 1


def test_the_instance_keeps_its_history_in_postgres_with_one_slot_per_pool_per_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch_database: str, in_a_pod: None
) -> None:
    url = make_url(scratch_database).set(drivername="postgresql+psycopg2")
    monkeypatch.setenv(STORAGE_ENV, url.render_as_string(hide_password=False))
    home = instance_home(tmp_path, INSTANCE_YAML.read_text())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        config = instance.get_concurrency_config()
        assert config.pool_config.pool_granularity is not None
        assert config.pool_config.pool_granularity.value == "run"
        assert config.pool_config.default_pool_limit == 1
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert instance.get_runs() == []
        assert isinstance(instance.run_launcher, K8sRunLauncher)
