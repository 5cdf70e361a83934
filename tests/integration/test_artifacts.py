"""A served model file that is not the one its manifest recorded is refused by the CLI and the API.

The planted file is a pickle that writes a marker file when unpickled: the marker never appearing
proves the refusal came before any of the file ran.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from feature_repo import repo
from sms_api.app import create_app
from sms_assets.defs.resources import FeastResource, PostgresResource, RedisResource
from sms_core import registry, settings
from sms_core.features.schema import NUMERIC_NAMES
from sms_core.model.pipelines import statistics_pipeline
from sms_core.model.store import MODEL_FILE, ModelStore, ModelVersion
from tests.conftest import Services
from tests.integration.conftest import live_server, service_config

pytestmark = pytest.mark.integration

DEADLINE_S = 30
SPAM = "URGENT! You have WON a 2000 prize. Txt CLAIM to 81010 now!!"


class TouchOnUnpickle:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return Path.write_text, (self.marker, "unpickled")


def save_model(store: ModelStore, c: float) -> ModelVersion:
    """A small version-1 model on the text statistics, saved as a version (not promoted)."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(80, len(NUMERIC_NAMES)))
    model = statistics_pipeline({"regularization_c": c, "seed": 0}).fit(features, features[:, 0] > 0)
    return store.save(model, {"features": list(NUMERIC_NAMES), "feature_service": "sms_service"})


def plant_pickle(store: ModelStore, version: str, marker: Path) -> None:
    (store.root / version / MODEL_FILE).write_bytes(pickle.dumps(TouchOnUnpickle(marker)))


def wait_for(client: httpx.Client, done: Any) -> httpx.Response:
    """GET /ready until `done(response)` holds."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        response = client.get("/ready")
        if done(response):
            return response
        assert time.monotonic() < deadline, f"/ready never changed: {response.status_code} {response.text}"
        time.sleep(0.05)


def test_predict_command_refuses_a_replaced_model_file(isolated: Services, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    served = save_model(store, 1.0)
    store.promote(served.version)
    marker = tmp_path / "marker"
    plant_pickle(store, served.version, marker)
    env = {**os.environ, **isolated.env(), settings.MODEL_DIR_ENV: str(store.root)}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "sms-assets"), "predict", "--message-id", "42"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {store.root / served.version}: sha256 mismatch: model.joblib has ")
    assert line.endswith(f", manifest.json records {served.manifest['sha256'][:12]}; refusing to load it")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not marker.exists()


def test_api_keeps_the_good_model_and_reports_the_refused_one(
    isolated: Services, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    postgres = PostgresResource(url=isolated.postgres_url)
    feast = FeastResource(
        postgres=postgres, redis=RedisResource(url=isolated.redis_url), project=isolated.feast_project
    )
    registry.apply_repo(feast.store(), repo)  # text predictions need the registry, not any table
    store = ModelStore(tmp_path / "models")
    good, bad = save_model(store, 1.0), save_model(store, 0.01)
    assert good.version != bad.version
    store.promote(good.version)
    marker = tmp_path / "marker"
    plant_pickle(store, bad.version, marker)
    caplog.set_level(logging.INFO, logger="sms_api.model_watcher")
    app = create_app(service_config(isolated, model_root=store.root, model_poll_s=0.05))
    with live_server(app) as api:
        ready = wait_for(api, lambda r: r.status_code == 200)
        assert ready.json()["checks"]["model"] == "ok"
        assert api.post("/predict", json={"text": SPAM}).json()["model_version"] == good.version

        store.promote(bad.version)
        refused = wait_for(api, lambda r: r.json()["checks"]["model"] != "ok")
        assert refused.status_code == 503
        body = refused.json()
        assert body["ready"] is False
        assert body["model_version"] == good.version
        model_check = body["checks"]["model"]
        assert model_check.startswith(f"refused version {bad.version}: sha256 mismatch: model.joblib has ")
        assert model_check.endswith(
            f", manifest.json records {bad.manifest['sha256'][:12]}; serving {good.version}"
        )
        assert {k: v for k, v in body["checks"].items() if k != "model"} == {
            "redis": "ok",
            "postgres": "ok",
            "feature_store": "ok",
            "online_store": "ok",
        }
        answer = api.post("/predict", json={"text": SPAM})
        assert answer.status_code == 200
        assert answer.json()["model_version"] == good.version
        time.sleep(0.5)  # ten more polls of the same refused CURRENT
        assert api.get("/ready").json()["checks"]["model"] == model_check
        assert not marker.exists()
        logged = [
            r for r in caplog.records if r.name == "sms_api.model_watcher" and r.levelno >= logging.ERROR
        ]
        assert [r.getMessage().split(":")[0] for r in logged] == [
            f"refused model version {bad.version} in {store.root}"
        ]
        assert logged[0].exc_info is None

        store.promote(good.version)
        again = wait_for(api, lambda r: r.status_code == 200)
        assert again.json()["checks"]["model"] == "ok"
        assert again.json()["model_version"] == good.version


def test_api_without_a_good_model_answers_503_with_the_refusal(isolated: Services, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    bad = save_model(store, 1.0)
    store.promote(bad.version)
    marker = tmp_path / "marker"
    plant_pickle(store, bad.version, marker)
    app = create_app(service_config(isolated, model_root=store.root, model_poll_s=0.05))
    with live_server(app) as api:
        ready = api.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["model_version"] is None
        assert ready.json()["checks"]["model"].startswith(f"refused version {bad.version}: sha256 mismatch")
        assert ready.json()["checks"]["model"].endswith("; no model served")
        answer = api.post("/predict", json={"text": SPAM})
        assert answer.status_code == 503
        assert answer.json()["error"] == "no_model"
        assert f"refused version {bad.version}: sha256 mismatch" in answer.json()["detail"]
        batch = api.post("/predict/batch", json={"message_ids": [1, 2]})
        assert batch.status_code == 503
        assert f"refused version {bad.version}" in batch.json()["detail"]
    assert not marker.exists()
