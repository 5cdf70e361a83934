"""Model versions on disk: saving keeps the served version, promotion moves it, the watcher swaps it."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from sms_api.model_watcher import ModelWatcher
from sms_core.model import pipelines as training
from sms_core.model.store import CURRENT_FILE, ModelStore, NoModelError

FIXTURES = Path(__file__).parents[1] / "fixtures"


def toy_model(c: float) -> Pipeline:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 2))
    return training.statistics_pipeline({"regularization_c": c, "seed": 0}).fit(features, features[:, 0] > 0)


def test_save_adds_a_version_without_serving_it(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    saved = store.save(toy_model(1.0), {"metrics": {"f1": 0.9}})
    assert store.served_version() is None
    with pytest.raises(NoModelError, match="no served model"):
        store.load()
    assert store.manifest(saved.version)["version"] == saved.version
    assert store.manifest(saved.version)["sha256"].startswith(saved.version)


def test_promote_moves_the_pointer(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    first = store.save(toy_model(1.0), {})
    second = store.save(toy_model(0.01), {})
    assert first.version != second.version
    store.promote(first.version)
    assert store.load().version == first.version
    store.promote(second.version)
    assert store.current_version() == second.version
    assert (tmp_path / CURRENT_FILE).read_text() == second.version
    with pytest.raises(NoModelError, match="no model version 'missing'"):
        store.promote("missing")
    assert store.current_version() == second.version


def test_promoting_the_served_version_again_moves_nothing_and_rollback_still_goes_back(
    tmp_path: Path,
) -> None:
    # served_model promotes its candidate on every run; a retrain that gives the same bytes gives the
    # same version, which must not become its own "previous".
    store = ModelStore(tmp_path)
    first, second = store.save(toy_model(1.0), {}), store.save(toy_model(0.01), {})
    store.promote(first.version)
    store.promote(second.version)
    store.promote(second.version)
    assert [(e["version"], e["previous"]) for e in store.history()] == [
        (first.version, None),
        (second.version, first.version),
    ]
    assert store.rollback() == (second.version, first.version)
    assert store.served_version() == first.version


def test_watcher_swaps_to_the_promoted_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    watcher = ModelWatcher(store)
    with pytest.raises(NoModelError):
        watcher.get()
    assert watcher.refresh() is False  # nothing served yet
    first = store.save(toy_model(1.0), {})
    store.promote(first.version)
    assert watcher.refresh() is True
    held = watcher.get()
    assert held.version == first.version
    assert watcher.refresh() is False  # unchanged pointer: nothing loaded
    second = store.save(toy_model(0.01), {})
    assert watcher.refresh() is False  # saved, not promoted
    store.promote(second.version)
    assert watcher.refresh() is True
    assert watcher.get().version == second.version
    assert held.version == first.version  # a request holding the old snapshot keeps it whole


def test_a_model_pickled_before_the_core_package_still_loads_and_scores(tmp_path: Path) -> None:
    # Pickled by the code before sms_core existed: its classes live under sms_assets.defs.training.
    fixture = FIXTURES / "models_before_core"
    assert b"sms_assets.defs.training.model" in next(fixture.glob("*/model.joblib")).read_bytes()
    shutil.copytree(fixture, tmp_path / "models")
    model = ModelStore(tmp_path / "models").load()
    assert type(model.model.named_steps["terms"].analyzer) is training.MessageTerms
    texts = ["WINNER!! Claim your prize now, call 09061701461", "see you at lunch tomorrow?"]
    inputs = training.model_input(["message_text"], {"message_text": texts})
    assert training.spam_scores(model.model, inputs).round(3).tolist() == [1.0, 0.0]


def test_an_on_demand_view_registered_before_the_core_package_still_computes_its_features() -> None:
    # The view's proto as the registry held it: Feast runs its stored source, which imports
    # compute_features from sms_assets.defs.features, where it lived then.
    from feast import OnDemandFeatureView
    from feast.protos.feast.core.OnDemandFeatureView_pb2 import OnDemandFeatureView as ViewProto

    from sms_core import moved
    from sms_core.features.compute import compute_features

    proto = ViewProto()
    proto.ParseFromString((FIXTURES / "registry_before_core" / "sms_text_features.pb").read_bytes())
    assert "from sms_assets.defs.features.compute import" in (
        proto.spec.feature_transformation.user_defined_function.body_text
    )
    moved.install()
    view = OnDemandFeatureView.from_proto(proto)
    texts = ["WINNER!! Claim your prize now, call 09061701461", "see you at lunch tomorrow?"]
    transformation = view.feature_transformation
    assert transformation is not None
    computed = transformation.transform({"text": texts})
    expected = compute_features(pd.Series(texts))
    assert {name: computed[name] for name in expected} == {name: expected[name].tolist() for name in expected}


HOLD_THEN_PROMOTE = """
import sys, time
from pathlib import Path
from sms_core.model.store import ModelStore
store = ModelStore(Path(sys.argv[1]))
with store.moving():
    print("holding", flush=True)
    time.sleep(1)
    store.promote(sys.argv[2])
"""


def test_a_rollback_waits_for_the_process_that_holds_the_pointer(tmp_path: Path) -> None:
    """served_model reads the served version, judges against it and promotes under the lock; a rollback
    by hand in between would make it replace a version it never judged against."""
    store = ModelStore(tmp_path)
    first, second, third = (store.save(toy_model(c), {}) for c in (1.0, 0.01, 0.1))
    store.promote(first.version)
    store.promote(second.version)
    command = [sys.executable, "-c", HOLD_THEN_PROMOTE, str(tmp_path), third.version]
    holder = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        # Without the lock this would roll back from `second`, and `third` would then be served over it.
        assert store.rollback() == (third.version, second.version)
    finally:
        assert holder.wait(timeout=60) == 0
    assert store.current_version() == second.version
