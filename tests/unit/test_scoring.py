"""The serving path's probabilities equal predict_proba's, for the project's model and any other."""

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sms_assets.serving import probabilities


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    features = rng.normal(size=(400, 6)) * [50, 10, 2, 5, 1, 0.1] + [80, 15, 4, 3, 1, 0.1]
    return features, features[:, 3] + rng.normal(size=400) > 3


def test_linear_pipeline_matches_predict_proba() -> None:
    features, labels = _data()
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(features, labels)
    expected = model.predict_proba(features)[:, 1]
    np.testing.assert_allclose(probabilities(model, features), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(probabilities(model, features[:1]), expected[:1], rtol=0, atol=1e-12)


def test_other_models_go_through_predict_proba() -> None:
    features, labels = _data()
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(features, labels)
    np.testing.assert_array_equal(probabilities(model, features), model.predict_proba(features)[:, 1])
