"""Version 2 rolled out beside version 1: gated against it on the same rows, switched in one pointer
move, rolled back with one command, and the service version 1 reads kept while a model names it."""

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from feature_repo import repo
from sms_api.app import create_app
from sms_assets.defs.feature_store.assets import feast_registry
from sms_assets.defs.resources import FeastResource
from sms_assets.defs.serving.assets import served_model
from sms_assets.defs.training.assets import spam_model
from sms_core.embedded import wait_until
from sms_core.features.schema import NUMERIC_NAMES, TEXT_NAMES
from sms_core.model.store import ModelStore
from tests.conftest import ALL_ASSETS, Services, delete_feast_keys, new_slice
from tests.integration.conftest import build_resources, check_evaluation, live_server, service_config

pytestmark = pytest.mark.integration

RETRAIN = dg.AssetSelection.assets(
    "feast_registry", "online_store", "training_set"
) | dg.AssetSelection.assets(spam_model, served_model)
SPAM = "URGENT! You have won a 2000 prize. Txt CLAIM to 81010 now"


def serves(api: httpx.Client, version: str, features: tuple[str, ...]) -> None:
    """Wait until the API answers both request forms with `version`, on `features`."""

    def check() -> None:
        for body in ({"message_id": 42}, {"text": SPAM}):
            answer = api.post("/predict", json=body).json()
            assert answer["model_version"] == version, answer
            assert tuple(answer["features"]) == features, answer

    wait_until(check, timeout_s=30, interval_s=0.1)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [os.path.join(os.path.dirname(sys.executable), "sms-assets"), *args]
    return subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def test_version_2_rolls_out_beside_version_1_and_rolls_back(
    server_urls: tuple[str, str], tmp_path: Path, dataset_path: Path
) -> None:
    with new_slice(server_urls, tmp_path / "state") as slice_:
        resources = build_resources(slice_, dataset_path)
        store = ModelStore(slice_.state_dir / "models")
        first = dg.materialize(
            ALL_ASSETS,
            resources=resources,
            run_config={"ops": {"spam_model": {"config": {"feature_service": "sms_service"}}}},
        )
        assert first.success
        v1 = store.current_version()
        assert store.manifest(v1)["feature_service"] == "sms_service"

        with live_server(create_app(service_config(slice_))) as api:
            serves(api, v1, NUMERIC_NAMES)

            # Roll-out: the default service is version 2; the candidate is judged against the served
            # version-1 model scored on the very same held-out rows, and promoted.
            second = dg.materialize(ALL_ASSETS, resources=resources, selection=RETRAIN)
            passed, gate = check_evaluation(second, "model_beats_floor_and_served")
            assert passed, gate
            assert gate["served_version"] == v1
            assert gate["compared_with"] == "the served model on the candidate's held-out rows"
            v2 = store.current_version()
            manifest = store.manifest(v2)
            assert manifest["feature_service"] == "sms_service_v2"
            assert manifest["served_on_same_split"]["version"] == v1
            assert manifest["metrics"]["f1"] > manifest["served_on_same_split"]["metrics"]["f1"]
            serves(api, v2, TEXT_NAMES)

            # Roll-back: one command, the pointer moves back, the API follows without a restart.
            env = slice_.env()
            result = cli(env, "model", "rollback")
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == f"serving {v1}; {v2} is withdrawn (rolled back)"
            assert store.current_version() == v1
            serves(api, v1, NUMERIC_NAMES)

        listing = cli(env, "model", "list").stdout.splitlines()
        status = {line.split()[0]: line.split()[-1] for line in listing[1:]}
        assert status == {v1: "SERVED", v2: "withdrawn"}, listing
        # What the Dagster UI shows for served_model: the rolled-back version, and why.
        home = Path(slice_.state_dir) / "dagster_home"
        with dg.DagsterInstance.from_config(str(home)) as instance:
            event = instance.get_latest_materialization_event(served_model.key)
            assert event is not None and event.asset_materialization is not None
            shown: dict[str, Any] = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        assert shown["version"] == v1 and shown["how"] == f"rolled back from {v2}"

        # The same candidate again (training is seeded: same bytes, same version) is not re-promoted.
        again = dg.materialize(ALL_ASSETS, resources=resources, selection=RETRAIN, raise_on_error=False)
        assert not again.success
        [failure] = [e for e in again.all_events if e.event_type_value == "STEP_FAILURE"]
        assert f"model {v2} was rolled back" in str(failure.event_specific_data)
        assert store.current_version() == v1


def test_a_feature_service_a_kept_model_names_stays_in_the_registry(
    materialized: dg.ExecuteInProcessResult, resources: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    served = ModelStore(Path(resources["model_store"].root)).current_version()
    # A repo edited to drop the services the served model (version 2) reads through.
    kept = [s for s in repo.FEATURE_SERVICES if s.name not in ("sms_service_v2", "sms_text_service_v2")]
    monkeypatch.setattr(repo, "FEATURE_SERVICES", kept)
    result = dg.materialize([feast_registry], resources=resources, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.event_specific_data)
    assert "sms_service_v2" in message and "sms_text_service_v2" in message and served in message


def test_a_service_applied_after_the_api_started_is_found_without_a_restart(
    materialized: dg.ExecuteInProcessResult, resources: dict[str, Any], isolated: Services, tmp_path: Path
) -> None:
    # The session's served model (version 2), served for a Feast project whose registry is still empty.
    project = f"late_{uuid.uuid4().hex[:8]}"
    shutil.copytree(Path(resources["model_store"].root), tmp_path / "models")
    slice_ = Services(isolated.postgres_url, isolated.redis_url, project, tmp_path)
    try:
        with live_server(create_app(service_config(slice_, registry_refresh_s=3600))) as api:
            early = api.post("/predict", json={"text": SPAM})
            assert early.status_code == 503, early.text
            assert early.json()["error"] == "feature_mismatch"
            assert "sms_service_v2" in early.json()["detail"] and project in early.json()["detail"]
            # feast_registry applies the repo for this project while the API runs.
            feast = FeastResource(
                postgres=resources["postgres"], redis=resources["feast"].redis, project=project
            )
            dg.materialize(
                [feast_registry], resources={"feast": feast, "model_store": resources["model_store"]}
            )
            late = api.post("/predict", json={"text": SPAM})
            assert late.status_code == 200, late.text
            assert late.json()["label"] == "spam"
    finally:
        delete_feast_keys(isolated.redis_url, project)
