from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from sms_assets.resources import (
    DatasetResource,
    FeastResource,
    LandingResource,
    ModelStoreResource,
    PostgresResource,
    RedisResource,
)
from tests.conftest import Services


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
    """The whole graph, materialized once for the session on its own database and Feast project."""
    from sms_assets.assets import ALL_ASSETS

    result = dg.materialize(ALL_ASSETS, resources=resources)
    assert result.success
    return result


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    [event] = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in event.metadata.items()}
