"""Served against offline, answer by answer: each logged feature value beside the value the offline
store held for that message at the moment it was served, and each score beside the model's score of it.

Answers by id are compared with a point-in-time retrieval through the same feature service, at each
answer's log timestamp (`get_historical_features`, the training path). An edited message's row is
recomputed in place with its event time unchanged, so the retrieval gives today's values: a value that
differs where the offline row was written (or removed) after the answer is "changed since served", not
skew. Answers by text are compared with the on-demand path run again on the stored text; without a
stored text they cannot be checked, and are counted as such. Texts not stored are compared by sha256.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from sms_core.contracts import REQUEST_CHUNK
from sms_core.features.comparison import RATIO_RTOL
from sms_core.features.schema import FEATURES
from sms_core.served_log.rows import text_sha256

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

    from sms_core.model.store import ModelVersion

SCORE_ATOL = 1e-9  # the model's own arithmetic: a version scores the same features the same way
FIRST = 10


@dataclass(frozen=True)
class Difference:
    request_id: str
    message_id: int | None
    feature: str
    served: Any
    offline: Any

    def as_metadata(self) -> dict[str, Any]:
        shown = {k: (v[:60] if isinstance(v, str) else v) for k, v in vars(self).items()}
        return shown


@dataclass
class SkewReport:
    compared: int = 0  # answers whose every feature was compared
    matched: int = 0
    changed_since_served: int = 0
    unverifiable: int = 0  # text answers whose text was not stored
    differences: list[Difference] = field(default_factory=list)  # the first FIRST differing values
    mismatched_answers: int = 0
    scores_compared: int = 0
    scores_mismatched: int = 0
    by_form: Counter[str] = field(default_factory=Counter)

    def note(self, difference: Difference) -> None:
        if len(self.differences) < FIRST:
            self.differences.append(difference)


def differing(
    features: Iterable[str], served: dict[str, Any], offline: dict[str, Any], sha256: str | None
) -> list[tuple[str, Any, Any]]:
    """The features whose served value is not the offline one, by the schema's rules: integers and texts
    exactly, ratios within float32 rounding; a text not stored is compared by its sha256."""
    found = []
    for name in features:
        kind, s, o = FEATURES[name], served.get(name), offline.get(name)
        if not kind.numeric:
            if s is None and sha256 is not None:
                same = o is not None and text_sha256(o) == sha256
                s = f"sha256:{sha256[:12]}"
            else:
                same = s == o
        elif s is None or o is None or _missing(o):
            same = s is None and (o is None or _missing(o))
        else:
            rtol = 0.0 if kind.exact else RATIO_RTOL
            same = bool(np.isclose(float(s), float(o), rtol=rtol, atol=0.0))
        if not same:
            found.append((name, s, None if o is None or _missing(o) else o))
    return found


def _missing(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)


def compare_by_id(
    report: SkewReport,
    store: FeatureStore,
    service: FeatureService,
    answers: pd.DataFrame,
    changed_at: Callable[[list[int]], pd.Series],
    score: Callable[[str, dict[str, list]], np.ndarray | None],
) -> None:
    """Answers by id of one service against the offline store as of each answer's log timestamp.

    `changed_at(message_ids)` gives, per message_id, when its offline row was last written or removed;
    `score(version, features)` the version's scores of feature columns (None when the version is not
    kept). A sync may write the table while this runs: `changed_at` is read after the retrieval, so
    every row version the retrieval saw, committed before it began, is there with its time."""
    names = [f.name for projection in service.feature_view_projections for f in projection.features]
    entity = pd.DataFrame(
        {
            "request_id": answers["request_id"],
            "message_id": answers["message_id"].astype("int64"),
            "event_timestamp": pd.to_datetime(answers["served_at"], utc=True),
        }
    )
    offline = store.get_historical_features(entity_df=entity, features=service).to_df()
    offline = offline.set_index("request_id").reindex(answers["request_id"])
    records = cast(list[dict[str, Any]], offline[names].to_dict("records"))
    moved = changed_at(sorted({int(i) for i in answers["message_id"]}))
    _judge(report, answers, records, names, moved, score)


def compare_by_text(
    report: SkewReport,
    store: FeatureStore,
    service: FeatureService,
    answers: pd.DataFrame,
    score: Callable[[str, dict[str, list]], np.ndarray | None],
) -> None:
    """Answers by text of one service against the on-demand path run again on each stored text."""
    from sms_core import prediction

    names = [f.name for projection in service.feature_view_projections for f in projection.features]
    stored = answers["text"].notna() & (
        answers["text"].map(lambda t: text_sha256(t) if isinstance(t, str) else None)
        == answers["text_sha256"]
    )
    report.unverifiable += int((~stored).sum())
    answers = answers[stored]
    if answers.empty:
        return
    texts = answers["text"].tolist()
    offline = []
    for start in range(0, len(texts), REQUEST_CHUNK):  # calls of a size one request could carry
        again = prediction.text_features(store, texts[start : start + REQUEST_CHUNK], service)
        offline += [{name: again[name][row] for name in names} for row in range(len(again[names[0]]))]
    _judge(report, answers, offline, names, None, score)


def _judge(
    report: SkewReport,
    answers: pd.DataFrame,
    offline: list[dict[str, Any]],
    names: list[str],
    changed_at: pd.Series | None,
    score: Callable[[str, dict[str, list]], np.ndarray | None],
) -> None:
    records = cast(list[dict[str, Any]], answers.to_dict("records"))
    matched: dict[str, list[int]] = {}  # by model version, the rows whose features all matched
    for row, answer in enumerate(records):
        report.compared += 1
        report.by_form[answer["request_form"]] += 1
        found = differing(names, answer["features"], offline[row], answer["text_sha256"])
        if not found:
            report.matched += 1
            matched.setdefault(answer["model_version"], []).append(row)
            continue
        message_id = _message_id(answer)
        changed = changed_at.get(message_id) if changed_at is not None else None
        if changed is not None and changed > answer["served_at"]:
            report.changed_since_served += 1
            continue
        report.mismatched_answers += 1
        for name, served, held in found:
            report.note(Difference(answer["request_id"], message_id, name, served, held))
    for version, rows in matched.items():
        expected = score(version, {name: [offline[row][name] for row in rows] for name in names})
        if expected is None:
            continue
        report.scores_compared += len(rows)
        for row, value in zip(rows, expected, strict=True):
            answer = records[row]
            if not np.isclose(answer["spam_probability"], value, rtol=0.0, atol=SCORE_ATOL):
                report.scores_mismatched += 1
                report.note(
                    Difference(
                        answer["request_id"],
                        _message_id(answer),
                        "spam_probability",
                        answer["spam_probability"],
                        float(value),
                    )
                )


def _message_id(answer: dict[str, Any]) -> int | None:
    value = answer["message_id"]
    return None if value is None or _missing(value) else int(value)


def scorer(load: Callable[[str], ModelVersion]) -> Callable[[str, dict[str, list]], np.ndarray | None]:
    """Scores by model version, each version loaded once; None for a version the store no longer keeps."""
    from sms_core.model.store import ModelStoreError
    from sms_core.prediction import spam_probabilities

    loaded: dict[str, ModelVersion | None] = {}

    def score(version: str, columns: dict[str, list]) -> np.ndarray | None:
        if version not in loaded:
            try:
                loaded[version] = load(version)
            except ModelStoreError:
                loaded[version] = None
        model = loaded[version]
        return spam_probabilities(model, columns) if model is not None else None

    return score
