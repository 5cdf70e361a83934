from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
from fastapi import FastAPI

from benchmarks.change import serving
from sms_api.service import ServiceConfig
from sms_assets.definitions import defs
from sms_assets.defs.resources import (
    DatasetResource,
    FeastResource,
    LandingResource,
    ModelStoreResource,
    PostgresResource,
    RedisResource,
)
from tests.conftest import ALL_ASSETS, Services


def build_resources(slice_: Services, dataset: Path, holdback: int = 0) -> dict[str, Any]:
    """The project's resources, pointed explicitly at one isolated slice of the servers."""
    postgres = PostgresResource(url=slice_.postgres_url)
    return {
        "postgres": postgres,
        "feast": FeastResource(
            postgres=postgres, redis=RedisResource(url=slice_.redis_url), project=slice_.feast_project
        ),
        "dataset": DatasetResource(path=str(dataset), state_dir=str(slice_.state_dir), holdback=holdback),
        "model_store": ModelStoreResource(root=str(slice_.state_dir / "models")),
        "landing": LandingResource(path=str(slice_.state_dir / "landing")),
    }


@contextmanager
def loaded_instance(definitions: dg.Definitions) -> Iterator[dg.DagsterInstance]:
    """A real (SQLite) instance, with the initial load done through `definitions`."""
    with dg.instance_for_test() as instance:
        job = definitions.resolve_implicit_global_asset_job_def()
        assert job.execute_in_process(instance=instance).success
        yield instance


def slice_definitions(resources: dict[str, Any]) -> dg.Definitions:
    """The code location's definitions (`defs`: assets, checks, jobs, schedules, sensors, executor),
    with these resources in place of the `dg.EnvVar` ones it reads from the environment."""
    return dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        schedules=defs.schedules,
        sensors=defs.sensors,
        executor=defs.executor,
        loggers=defs.loggers,
        resources=resources,
    )


@pytest.fixture(scope="session")
def resources(isolated: Services, dataset_path: Path) -> dict[str, Any]:
    return build_resources(isolated, dataset_path)


@pytest.fixture(scope="session")
def materialized(resources: dict[str, Any]) -> dg.ExecuteInProcessResult:
    """The whole graph and its checks, run once for the session on its own database and Feast project."""
    result = dg.materialize(ALL_ASSETS, resources=resources)
    assert result.success
    return result


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    [event] = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in event.metadata.items()}


def check_evaluation(result: dg.ExecuteInProcessResult, check: str) -> tuple[bool, dict[str, Any]]:
    """Whether a check passed in a run, and its metadata."""
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == check]
    return evaluation.passed, {key: value.value for key, value in evaluation.metadata.items()}


def service_config(slice_: Services, **overrides: Any) -> ServiceConfig:
    """The prediction service's configuration for one isolated slice (as `sms-assets serve` builds it)."""
    values: dict[str, Any] = {
        "postgres_url": slice_.postgres_url,
        "redis_url": slice_.redis_url,
        "project": slice_.feast_project,
        "model_root": slice_.state_dir / "models",
        "model_poll_s": 0.1,
        **overrides,
    }
    return ServiceConfig(**values)


@contextmanager
def live_server(app: FastAPI) -> Iterator[httpx.Client]:
    """The app served by uvicorn on a free loopback port, and an HTTP client pointed at it."""
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client
