"""How well a model separates spam from ham on held-out messages, in the numbers a user asks for."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from sklearn.metrics import (
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

SPAM_THRESHOLD = 0.5  # a probability above it is spam, as a classifier's own `predict` decides
# The figures a model is judged and listed by; SUMMARY adds precision for the asset's metadata.
HEADLINE = ("f1", "mcc", "spam_caught", "ham_blocked", "roc_auc")
SUMMARY = ("f1", "mcc", "spam_caught", "ham_blocked", "precision", "roc_auc")
CURVE_POINTS = 60


def evaluate(is_spam: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """F1, MCC, the share of spam caught and of ham blocked, precision, ROC AUC, the confusion matrix
    and the precision-recall curve, for spam probabilities `scores` of held-out messages."""
    predicted = scores > SPAM_THRESHOLD
    (tn, fp), (fn, tp) = confusion_matrix(is_spam, predicted, labels=[False, True])
    precision, recall, _ = precision_recall_curve(is_spam, scores)
    keep = np.unique(np.linspace(0, len(recall) - 1, CURVE_POINTS).round().astype(int))
    return {
        "f1": float(f1_score(is_spam, predicted)),
        "mcc": float(matthews_corrcoef(is_spam, predicted)),
        "spam_caught": float(recall_score(is_spam, predicted)),
        "ham_blocked": float(fp / (fp + tn)) if fp + tn else 0.0,
        "precision": float(precision_score(is_spam, predicted)),
        "roc_auc": float(roc_auc_score(is_spam, scores)),
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        "pr_curve": {
            "recall": [round(float(r), 4) for r in recall[keep]],
            "precision": [round(float(p), 4) for p in precision[keep]],
        },
    }


def confusion_markdown(metrics: dict[str, Any]) -> str:
    m = metrics["confusion_matrix"]
    return (
        "| | predicted ham | predicted spam |\n|---|---|---|\n"
        f"| **ham** | {m['tn']} | {m['fp']} |\n"
        f"| **spam** | {m['fn']} | {m['tp']} |"
    )


def pr_curve_markdown(metrics: dict[str, Any], title: str) -> str:
    """The precision-recall curve as an SVG picture inside markdown, which the Dagster UI shows."""
    width, height, pad = 420, 300, 48
    curve = metrics["pr_curve"]

    def x(recall: float) -> float:
        return pad + recall * (width - 2 * pad)

    def y(precision: float) -> float:
        return height - pad - precision * (height - 2 * pad)

    points = " ".join(
        f"{x(r):.1f},{y(p):.1f}" for r, p in zip(curve["recall"], curve["precision"], strict=True)
    )
    caught, blocked = metrics["spam_caught"], metrics["ham_blocked"]
    ticks = "".join(
        f'<text x="{x(v):.0f}" y="{height - pad + 14}" font-size="10" text-anchor="middle">{v:g}</text>'
        f'<text x="{pad - 6}" y="{y(v) + 3:.0f}" font-size="10" text-anchor="end">{v:g}</text>'
        for v in (0, 0.5, 1)
    )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>'
        f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" '
        'fill="none" stroke="#999"/>'
        f'<polyline points="{points}" fill="none" stroke="#2563eb" stroke-width="2"/>'
        f'<circle cx="{x(caught):.1f}" cy="{y(metrics["precision"]):.1f}" r="4" fill="#dc2626"/>'
        f'<text x="{width / 2}" y="16" font-size="12" text-anchor="middle">{title}</text>'
        f'<text x="{width / 2}" y="32" font-size="11" text-anchor="middle" fill="#dc2626">at the '
        f"threshold {SPAM_THRESHOLD}: {caught:.1%} of spam caught, {blocked:.2%} of ham blocked</text>"
        f'<text x="{width / 2}" y="{height - 8}" font-size="11" text-anchor="middle">recall '
        "(share of spam caught)</text>"
        f'<text x="12" y="{height / 2}" font-size="11" transform="rotate(-90 12 {height / 2})" '
        'text-anchor="middle">precision</text>'
        f"{ticks}</svg>"
    )
    encoded = base64.b64encode(svg.encode()).decode()
    return f"![precision-recall curve](data:image/svg+xml;base64,{encoded})"
