"""A model file is checked against its manifest's sha256 before it is unpickled, and refused otherwise."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from sms_api.model_watcher import ModelWatcher
from sms_core.model.pipelines import statistics_pipeline
from sms_core.model.store import (
    MANIFEST_FILE,
    MODEL_FILE,
    ModelIntegrityError,
    ModelStore,
    ModelStoreError,
    NoModelError,
)


class TouchOnUnpickle:
    """A pickle payload whose unpickling writes `marker`: proof that unpickling ran foreign code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return Path.write_text, (self.marker, "unpickled")


def toy_model(c: float) -> Pipeline:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 2))
    return statistics_pipeline({"regularization_c": c, "seed": 0}).fit(features, features[:, 0] > 0)


def plant_pickle(store: ModelStore, version: str, marker: Path) -> str:
    """Replace a version's model file by a pickle that writes `marker` when unpickled; its sha256."""
    payload = pickle.dumps(TouchOnUnpickle(marker))
    (store.root / version / MODEL_FILE).write_bytes(payload)
    return hashlib.sha256(payload).hexdigest()


def test_the_planted_pickle_runs_code_when_unpickled(tmp_path: Path) -> None:
    # The premise of the tests below: loading this file without the check would write the marker.
    marker = tmp_path / "marker"
    path = tmp_path / "evil.joblib"
    path.write_bytes(pickle.dumps(TouchOnUnpickle(marker)))
    joblib.load(path)
    assert marker.read_text() == "unpickled"


def test_a_saved_version_loads_after_its_hash_is_checked(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    saved = store.save(toy_model(1.0), {"features": ["a", "b"]})
    store.promote(saved.version)
    loaded = store.load()
    assert loaded.version == saved.version
    assert loaded.manifest["sha256"].startswith(saved.version)
    x = np.array([[0.5, -1.0], [-2.0, 0.3]])
    assert np.array_equal(loaded.model.predict_proba(x), saved.model.predict_proba(x))


def test_a_replaced_model_file_is_refused_before_it_is_unpickled(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    saved = store.save(toy_model(1.0), {})
    store.promote(saved.version)
    marker = tmp_path / "marker"
    planted = plant_pickle(store, saved.version, marker)
    recorded = store.manifest(saved.version)["sha256"]
    with pytest.raises(ModelIntegrityError) as refused:
        store.load()
    assert not marker.exists()
    message = str(refused.value)
    assert message == (
        f"{store.root / saved.version}: sha256 mismatch: model.joblib has {planted[:12]}, "
        f"manifest.json records {recorded[:12]}; refusing to load it"
    )
    assert "\n" not in message
    assert refused.value.version == saved.version
    assert isinstance(refused.value, ModelStoreError)
    with pytest.raises(ModelIntegrityError):
        store.load(saved.version)  # asked for by name, the same check
    assert not marker.exists()


def test_a_manifest_without_sha256_is_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    saved = store.save(toy_model(1.0), {})
    marker = tmp_path / "marker"
    plant_pickle(store, saved.version, marker)
    manifest_path = store.root / saved.version / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    del manifest["sha256"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(
        ModelIntegrityError,
        match=rf"^{store.root / saved.version}: manifest.json records no sha256 of model.joblib; ",
    ):
        store.load(saved.version)
    assert not marker.exists()


def test_a_missing_model_file_or_broken_manifest_is_refused_by_name(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    saved = store.save(toy_model(1.0), {})
    folder = tmp_path / saved.version
    (folder / MODEL_FILE).unlink()
    with pytest.raises(ModelIntegrityError, match=rf"^{folder}: model.joblib is missing; "):
        store.load(saved.version)
    (folder / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ModelIntegrityError, match=rf"^{folder}: manifest.json is not valid JSON"):
        store.load(saved.version)
    with pytest.raises(NoModelError, match="no model version 'absent'"):
        store.load("absent")


def refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sms_api.model_watcher" and r.levelno == logging.ERROR]


def test_the_watcher_keeps_the_good_model_and_logs_a_refusal_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ModelStore(tmp_path / "models")
    good = store.save(toy_model(1.0), {})
    bad = store.save(toy_model(0.01), {})
    store.promote(good.version)
    watcher = ModelWatcher(store)
    assert watcher.refresh() is True
    marker = tmp_path / "marker"
    plant_pickle(store, bad.version, marker)
    store.promote(bad.version)
    caplog.set_level(logging.INFO, logger="sms_api.model_watcher")
    for _ in range(5):  # five polls
        assert watcher.refresh() is False
    assert not marker.exists()
    assert watcher.get().version == good.version
    assert watcher.refused is not None
    assert watcher.refused.version == bad.version
    assert watcher.refused.reason.startswith("sha256 mismatch: model.joblib has ")
    [logged] = refusals(caplog)
    assert logged.exc_info is None  # one line, no traceback
    assert logged.getMessage().startswith(f"refused model version {bad.version} in {store.root}: ")
    assert logged.getMessage().endswith(f"; still serving {good.version}")

    store.promote(good.version)  # CURRENT names a good version again
    assert watcher.refresh() is False  # already served
    assert watcher.refused is None
    assert watcher.get().version == good.version


def test_a_repaired_version_is_served_once_its_files_change(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    good = store.save(toy_model(1.0), {})
    store.promote(good.version)
    original = (store.root / good.version / MODEL_FILE).read_bytes()
    plant_pickle(store, good.version, tmp_path / "marker")
    watcher = ModelWatcher(store)
    assert watcher.refresh() is False
    assert watcher.refused is not None and watcher.refused.version == good.version
    (store.root / good.version / MODEL_FILE).write_bytes(original)
    assert watcher.refresh() is True
    assert watcher.refused is None
    assert watcher.get().version == good.version
    assert not (tmp_path / "marker").exists()


def test_without_a_good_model_the_watcher_answers_with_the_refusal(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    bad = store.save(toy_model(1.0), {})
    store.promote(bad.version)
    plant_pickle(store, bad.version, tmp_path / "marker")
    watcher = ModelWatcher(store)
    assert watcher.refresh() is False
    with pytest.raises(NoModelError, match=rf"refused version {bad.version}: sha256 mismatch"):
        watcher.get()
    assert not (tmp_path / "marker").exists()
