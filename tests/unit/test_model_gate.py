"""The model gate on hand-made metrics: floors, and the tolerance below the served model."""

import pytest

from sms_core.model.gate import GateThresholds, evaluate_gate

GOOD = {"f1": 0.87, "roc_auc": 0.986}


@pytest.mark.parametrize(
    ("candidate", "served", "failed_metrics"),
    [
        (GOOD, None, []),  # the first model: floors only
        (GOOD, GOOD, []),  # the same model again
        ({"f1": 0.85, "roc_auc": 0.980}, GOOD, []),  # within the tolerance: noise, not a regression
        ({"f1": 0.95, "roc_auc": 0.999}, GOOD, []),  # better
        ({"f1": 0.79, "roc_auc": 0.986}, None, ["f1"]),  # below the F1 floor
        ({"f1": 0.87, "roc_auc": 0.94}, None, ["roc_auc"]),  # below the ROC AUC floor
        ({"f1": 0.82, "roc_auc": 0.986}, GOOD, ["f1"]),  # clearly below the served F1
        ({"f1": 0.87, "roc_auc": 0.970}, GOOD, ["roc_auc"]),  # clearly below the served ROC AUC
        ({"f1": 0.0, "roc_auc": 0.5}, GOOD, ["f1", "f1", "roc_auc", "roc_auc"]),  # everything fails
    ],
)
def test_gate(
    candidate: dict[str, float], served: dict[str, float] | None, failed_metrics: list[str]
) -> None:
    verdict = evaluate_gate(candidate, served)
    assert verdict.passed == (not failed_metrics)
    assert [failure.split()[0] for failure in verdict.failures] == failed_metrics


def test_failures_explain_themselves() -> None:
    verdict = evaluate_gate({"f1": 0.82, "roc_auc": 0.986}, GOOD)
    assert verdict.failures == ["f1 0.8200 is more than 0.0400 below the served model's 0.8700"]


def test_thresholds_are_configurable_and_reported() -> None:
    strict = GateThresholds(floors={"f1": 0.9, "roc_auc": 0.99}, tolerances={"f1": 0.0, "roc_auc": 0.0})
    assert not evaluate_gate(GOOD, None, strict).passed
    assert strict.as_metadata() == {
        "floors": {"f1": 0.9, "roc_auc": 0.99},
        "tolerances": {"f1": 0.0, "roc_auc": 0.0},
    }
