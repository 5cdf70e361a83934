"""The check that served traffic looks like the training data of the model that served it."""

from typing import TYPE_CHECKING, Any

import dagster as dg
import numpy as np
import pandas as pd

from sms_assets.defs.resources import ModelStoreResource, PostgresResource
from sms_assets.defs.serving.served_log import served_log
from sms_assets.defs.shared import SERVED_LOG_POOL
from sms_assets.defs.training.assets import TRAINING_TABLE
from sms_core.features.schema import FEATURES
from sms_core.postgres import query_frame
from sms_core.served_log import drift
from sms_core.served_log.intake import ANSWERS_TABLE

if TYPE_CHECKING:
    from sms_core.model.store import ModelVersion

WINDOW = "24 hours"  # answers older than this before the newest one are not judged
RECENT = 500  # each model version is judged on its latest answers: this many at most
REFERENCE_ROWS = 10_000  # training rows sampled (in a fixed order) as the reference


def served_window(postgres: PostgresResource) -> pd.DataFrame:
    """Each model version's latest RECENT answers within WINDOW: a sample of a size the thresholds were
    set on, as recent as the traffic allows, so a shift shows as soon as it makes up most of it."""
    with postgres.connect() as conn:
        return query_frame(
            conn,
            "SELECT model_version, features, spam_probability, text_chars, text FROM ("
            "SELECT *, row_number() OVER (PARTITION BY model_version ORDER BY served_at DESC, request_id) "
            f"AS recent FROM {ANSWERS_TABLE} "
            f"WHERE served_at > (SELECT max(served_at) FROM {ANSWERS_TABLE}) - interval '{WINDOW}'"
            f") latest WHERE recent <= {RECENT}",
        )


def references(
    postgres: PostgresResource, model: "ModelVersion", names: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fixed samples of the rows the model was trained on and of its held-out rows: the training set's
    rows from before it was trained, less (or only) its held-out messages. Both in one statement, so
    that a retrain swapping a new training table in meanwhile gives both from one table, not one each."""
    ids = f"ARRAY[{','.join(map(str, model.manifest['test_message_ids'])) or 'NULL'}]::bigint[]"
    trained_at = pd.Timestamp(model.manifest.get("trained_at") or pd.Timestamp.now(tz="UTC")).isoformat()
    columns = ", ".join(names)

    def sample(held_out: bool) -> str:
        side = f"message_id = ANY({ids})" if held_out else f"NOT (message_id = ANY({ids}))"
        return (
            f"(SELECT {held_out} AS held_out, {columns} FROM {TRAINING_TABLE} WHERE {side} "
            f"AND event_timestamp <= '{trained_at}'::timestamptz "
            f"ORDER BY hashtext(message_id::text) LIMIT {REFERENCE_ROWS})"
        )

    with postgres.connect() as conn:
        both = query_frame(conn, f"{sample(False)} UNION ALL {sample(True)}")
    held = both.pop("held_out").astype(bool)
    return both[~held].reset_index(drop=True), both[held].reset_index(drop=True)


def version_statistics(
    postgres: PostgresResource, model: "ModelVersion", served: pd.DataFrame
) -> list[drift.Statistic]:
    """Each served feature's statistic, and the score's, for one model version's answers.

    The features are compared with the rows the model was trained on; the score with its scores of its
    held-out rows, since a model scores the rows it learned from more surely than any new ones."""
    from sms_core.model.pipelines import model_input, spam_scores

    names = sorted({name for features in served["features"] for name in features})
    wanted = sorted({*names, *model.manifest["features"]})
    training, held_out = references(postgres, model, wanted)
    scores = spam_scores(model.model, model_input(model.manifest["features"], held_out))
    found = [drift.score_distance(scores, served["spam_probability"].to_numpy())]
    for name in names:
        if FEATURES[name].numeric:
            values = np.array([f.get(name) for f in served["features"]], dtype=np.float64)
            found.append(drift.distance(name, training[name].to_numpy(), values))
            continue
        lengths = training[name].str.len().to_numpy()
        found.append(drift.distance(f"{name} length", lengths, served["text_chars"].dropna().to_numpy()))
        texts = served["text"].dropna().tolist()
        if len(texts) >= drift.MIN_ANSWERS:
            found.append(drift.unseen_increase(name, training[name].tolist(), held_out[name].tolist(), texts))
    return found


@dg.asset_check(
    asset=served_log,
    pool=SERVED_LOG_POOL,
    description=(
        f"The latest {RECENT} answers of each model version (within 24 hours) are like the training "
        "data of the version that served them: per feature, the Jensen-Shannon distance on shared bins "
        f"(numbers, the score, a text's length) warns above {drift.WARN_DISTANCE} and errs above "
        f"{drift.ERROR_DISTANCE}; the share of a stored text's word n-grams unseen in training, above a "
        f"held-out message's, warns above {drift.WARN_UNSEEN} and errs above {drift.ERROR_UNSEEN}. "
        "Versions with fewer than "
        f"{drift.MIN_ANSWERS} answers are not judged."
    ),
)
def served_traffic_like_training(
    postgres: PostgresResource, model_store: ModelStoreResource
) -> dg.AssetCheckResult:
    from sms_core.model.store import ModelStoreError
    from sms_core.served_log.picture import overlay_markdown

    answers = served_window(postgres)
    store = model_store.model_store()
    judged: dict[str, list[drift.Statistic]] = {}
    skipped: dict[str, str] = {}
    for version, served in answers.groupby("model_version", sort=True):
        if len(served) < drift.MIN_ANSWERS:
            skipped[str(version)] = f"{len(served)} answers, fewer than {drift.MIN_ANSWERS}"
            continue
        try:
            model = store.load(str(version))
        except ModelStoreError as exc:
            skipped[str(version)] = f"not kept: {exc}"
            continue
        judged[str(version)] = version_statistics(postgres, model, served)
    rows = [
        {
            "model version": v,
            "feature": s.name,
            "statistic": s.statistic,
            "value": round(s.value, 4),
            "severity": s.severity,
        }
        for v, statistics in judged.items()
        for s in statistics
    ]
    table = pd.DataFrame(rows).sort_values("value", ascending=False) if rows else pd.DataFrame()
    verdict = drift.worst([s for statistics in judged.values() for s in statistics])
    metadata: dict[str, Any] = {
        "window": f"each version's latest {RECENT} answers within {WINDOW}",
        "answers": len(answers),
        "judged_versions": dg.MetadataValue.json(
            {v: int((answers["model_version"] == v).sum()) for v in judged}
        ),
        "not_judged": dg.MetadataValue.json(skipped),
        "verdict": verdict,
        "top_drifting": dg.MetadataValue.md(
            table.head(10).to_markdown(index=False) if rows else "nothing judged"
        ),
        "thresholds": dg.MetadataValue.json(
            {
                "jensen_shannon": {"warn": drift.WARN_DISTANCE, "error": drift.ERROR_DISTANCE},
                "unseen_share_increase": {"warn": drift.WARN_UNSEEN, "error": drift.ERROR_UNSEEN},
            }
        ),
    }
    if judged:
        # The version that drifted most: what a failure asks to see.
        worst = max(judged, key=lambda v: max(s.value for s in judged[v]))
        ranked = sorted(judged[worst], key=lambda s: s.value, reverse=True)
        metadata["histograms"] = dg.MetadataValue.md(
            overlay_markdown(
                [s for s in ranked if s.reference][:4], f"model {worst}: training data vs served"
            )
        )
    return dg.AssetCheckResult(
        passed=verdict == "ok",
        severity=dg.AssetCheckSeverity.ERROR if verdict == "error" else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
    )
