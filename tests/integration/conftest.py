import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from sms_assets.api import ServiceConfig
from sms_assets.resources import (
    DatasetResource,
    FeastResource,
    LandingResource,
    ModelStoreResource,
    PostgresResource,
    RedisResource,
)
from tests.conftest import Services
from tests.tcp_proxy import free_port


def build_resources(slice_: Services, dataset: Path) -> dict[str, Any]:
    """The project's resources, pointed explicitly at one isolated slice of the servers."""
    postgres = PostgresResource(url=slice_.postgres_url)
    return {
        "postgres": postgres,
        "feast": FeastResource(
            postgres=postgres, redis=RedisResource(url=slice_.redis_url), project=slice_.feast_project
        ),
        "dataset": DatasetResource(path=str(dataset)),
        "model_store": ModelStoreResource(root=str(slice_.state_dir / "models")),
        "landing": LandingResource(path=str(slice_.state_dir / "landing")),
    }


@pytest.fixture(scope="session")
def resources(isolated: Services, dataset_path: Path) -> dict[str, Any]:
    return build_resources(isolated, dataset_path)


@pytest.fixture(scope="session")
def materialized(resources: dict[str, Any]) -> dg.ExecuteInProcessResult:
    """The whole graph and its checks, run once for the session on its own database and Feast project."""
    from sms_assets.assets import ALL_ASSETS
    from sms_assets.checks import ALL_CHECKS

    result = dg.materialize([*ALL_ASSETS, *ALL_CHECKS], resources=resources)
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
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)
