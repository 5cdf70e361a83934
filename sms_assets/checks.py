"""Asset checks, each named as the claim it proves on every run, with metadata that explains a failure."""

from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from sms_assets import model_gate, serving
from sms_assets.assets import (
    FEATURE_TABLE,
    RAW_TABLE,
    TRAINING_TABLE,
    candidate_version,
    feast_registry,
    online_store,
    served_model,
    spam_model,
    training_set,
)
from sms_assets.feast_store import FEATURE_SERVICE, TEXT_FEATURE_SERVICE
from sms_assets.features import FEATURE_COLUMNS
from sms_assets.postgres import query_frame
from sms_assets.resources import FeastResource, ModelStoreResource, PostgresResource

ONLINE_SAMPLE_SIZE = 1_000
REQUEST_CHUNK = 1_000
FIRST_IDS = 10
# Request-time and batch values may differ by float32 rounding at most (the contract); with
# both sides in float64 from one function they are in practice identical, which `max_difference` shows.
RATIO_RTOL = float(np.finfo(np.float32).eps)
INTEGER_FEATURES = ("text_length", "word_count", "digit_count", "exclamation_count")
# Latest feature row per message: the value Redis must hold after materialization.
LATEST_FEATURES_SQL = (
    f"SELECT DISTINCT ON (message_id) * FROM {FEATURE_TABLE} ORDER BY message_id, event_timestamp DESC"
)


def _mismatches(left: pd.DataFrame, right: pd.DataFrame) -> tuple[pd.Series, dict[str, float]]:
    """Per row, whether any feature differs (integers exactly, ratios within float32 precision)."""
    differs = pd.Series(False, index=left.index)
    max_difference = {}
    for column in FEATURE_COLUMNS:
        a, b = left[column].to_numpy(dtype=np.float64), right[column].to_numpy(dtype=np.float64)
        rtol = 0.0 if column in INTEGER_FEATURES else RATIO_RTOL
        differs |= ~np.isclose(a, b, rtol=rtol, atol=0.0)
        max_difference[column] = float(np.max(np.abs(a - b))) if len(a) else 0.0
    return differs, max_difference


def _first(ids: pd.Index | pd.Series) -> list[int]:
    return [int(i) for i in list(ids)[:FIRST_IDS]]


@dg.asset_check(
    asset=online_store,
    description="For a random sample of message ids, Redis holds exactly the latest offline feature row.",
)
def online_matches_offline(feast: FeastResource, postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.connect() as conn:
        offline = query_frame(
            conn, f"SELECT * FROM ({LATEST_FEATURES_SQL}) latest ORDER BY random() LIMIT {ONLINE_SAMPLE_SIZE}"
        ).set_index("message_id")
    ids = [int(i) for i in offline.index]
    store = feast.store()
    online = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE), entity_rows=[{"message_id": i} for i in ids]
    ).to_df()
    online = online.set_index("message_id").loc[ids]
    absent = online.index[online[list(FEATURE_COLUMNS)].isna().all(axis=1)]
    present = online.drop(index=absent)
    differs, max_difference = _mismatches(present, offline.loc[present.index])
    mismatched = present.index[differs.to_numpy()]
    return dg.AssetCheckResult(
        passed=len(absent) == 0 and len(mismatched) == 0,
        metadata={
            "sampled_ids": len(ids),
            "missing_online": len(absent),
            "first_missing_ids": dg.MetadataValue.json(_first(absent)),
            "mismatched": len(mismatched),
            "first_mismatched_ids": dg.MetadataValue.json(_first(mismatched)),
            "max_difference": dg.MetadataValue.json(max_difference),
        },
    )


@dg.asset_check(
    asset=feast_registry,
    description=(
        "For every message, the features Feast computes from its text at request time "
        "(sms_text_service) equal its row in the batch feature table."
    ),
)
def request_features_match_batch(feast: FeastResource, postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.connect() as conn:
        batch = query_frame(
            conn,
            f"SELECT message_id, r.text, {', '.join(f'f.{c}' for c in FEATURE_COLUMNS)} "
            f"FROM {RAW_TABLE} r JOIN ({LATEST_FEATURES_SQL}) f USING (message_id) ORDER BY message_id",
        ).set_index("message_id")
    store = feast.store()
    texts = batch["text"].tolist()
    # The serving path itself, in chunks of a size one request could carry.
    chunks = [
        pd.DataFrame(serving.text_features(store, texts[start : start + REQUEST_CHUNK]))
        for start in range(0, len(texts), REQUEST_CHUNK)
    ]
    request = (
        pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame({c: [] for c in FEATURE_COLUMNS})
    )
    request.index = batch.index
    differs, max_difference = _mismatches(request, batch)
    mismatched = batch.index[differs.to_numpy()]
    return dg.AssetCheckResult(
        passed=len(batch) > 0 and len(mismatched) == 0,
        metadata={
            "messages_compared": len(batch),
            "mismatched": len(mismatched),
            "first_mismatched_ids": dg.MetadataValue.json(_first(mismatched)),
            "max_difference": dg.MetadataValue.json(max_difference),
            "feature_service": TEXT_FEATURE_SERVICE,
        },
    )


@dg.asset_check(
    asset=training_set,
    blocking=True,
    description=(
        "Every training row holds the feature values of the latest feature row at or before its "
        "label's event time: no value from the future reaches the model."
    ),
)
def no_future_features(postgres: PostgresResource) -> dg.AssetCheckResult:
    def same_values(row: str) -> str:
        return " AND ".join(f"t.{c} IS NOT DISTINCT FROM {row}.{c}" for c in FEATURE_COLUMNS)

    # For each training row: does it hold the as-of feature row (the latest at or before its label;
    # all NULL when there is none), and do its values match a feature row stamped after the label?
    query = f"""
        SELECT t.message_id,
               {same_values("asof")} AS matches_as_of,
               EXISTS (SELECT 1 FROM {FEATURE_TABLE} later
                       WHERE later.message_id = t.message_id
                         AND later.event_timestamp > t.event_timestamp
                         AND {same_values("later")}) AS matches_later_row
        FROM {TRAINING_TABLE} t
        LEFT JOIN LATERAL (
            SELECT * FROM {FEATURE_TABLE} f
            WHERE f.message_id = t.message_id AND f.event_timestamp <= t.event_timestamp
            ORDER BY f.event_timestamp DESC LIMIT 1
        ) asof ON true
        ORDER BY t.message_id
    """
    with postgres.connect() as conn:
        rows = query_frame(conn, query)
    not_as_of = rows.loc[~rows["matches_as_of"].astype(bool), "message_id"]
    from_future = rows.loc[~rows["matches_as_of"].astype(bool) & rows["matches_later_row"], "message_id"]
    return dg.AssetCheckResult(
        passed=len(rows) > 0 and len(not_as_of) == 0,
        metadata={
            "rows_checked": len(rows),
            "rows_from_future": len(from_future),
            "first_future_ids": dg.MetadataValue.json(_first(from_future)),
            "rows_not_as_of_label": len(not_as_of),
            "first_not_as_of_ids": dg.MetadataValue.json(_first(not_as_of)),
        },
    )


@dg.asset_check(
    asset=spam_model,
    blocking=True,
    description=(
        "The candidate's held-out F1 and ROC AUC reach the floors and are not clearly below the served "
        "model's; a failure stops served_model, so the previous model keeps serving."
    ),
)
def model_beats_floor_and_served(
    context: dg.AssetCheckExecutionContext, model_store: ModelStoreResource
) -> dg.AssetCheckResult:
    store = model_store.model_store()
    candidate = candidate_version(context.instance)
    served = store.served_version()
    candidate_metrics = store.manifest(candidate)["metrics"]
    served_metrics = store.manifest(served)["metrics"] if served else None
    verdict = model_gate.evaluate_gate(candidate_metrics, served_metrics)
    metadata: dict[str, Any] = {
        "candidate_version": candidate,
        "served_version": served or "",
        "thresholds": dg.MetadataValue.json(model_gate.DEFAULT_THRESHOLDS.as_metadata()),
        "failures": dg.MetadataValue.json(verdict.failures),
    }
    for name in model_gate.GATED_METRICS:
        metadata[f"candidate_{name}"] = candidate_metrics[name]
        if served_metrics:
            metadata[f"served_{name}"] = served_metrics[name]
    return dg.AssetCheckResult(passed=verdict.passed, metadata=metadata)


@dg.asset_check(
    asset=served_model,
    description=(
        "On the served model's held-out messages, the serving path (features from Redis through "
        "sms_service) gives the same spam probabilities as scoring the training set offline."
    ),
)
def served_predictions_match_offline(
    feast: FeastResource, postgres: PostgresResource, model_store: ModelStoreResource
) -> dg.AssetCheckResult:
    model = model_store.model_store().load()
    ids: list[int] = model.manifest["test_message_ids"]
    features: list[str] = model.manifest["features"]
    with postgres.connect() as conn:
        offline = query_frame(
            conn,
            f"SELECT message_id, {', '.join(features)} FROM {TRAINING_TABLE} "
            f"WHERE message_id = ANY(ARRAY[{','.join(map(str, ids))}]::bigint[]) ORDER BY message_id",
        )
    expected = model.model.predict_proba(offline[features].to_numpy(dtype=np.float64))[:, 1]
    # The serving path in chunks of a size one request could carry: in one call, the 250,000
    # held-out messages of a million peaked at 2.4 GiB of Feast protos.
    store, ids_in_order = feast.store(), offline["message_id"].tolist()
    served = np.array(
        [
            p.spam_probability
            for start in range(0, len(ids_in_order), REQUEST_CHUNK)
            for p in serving.predict_ids(store, model, ids_in_order[start : start + REQUEST_CHUNK])
        ]
    )
    differs = ~np.isclose(served, expected, rtol=0.0, atol=1e-12)
    return dg.AssetCheckResult(
        passed=len(offline) == len(ids) and not differs.any(),
        metadata={
            "model_version": model.version,
            "held_out_messages": len(ids),
            "compared": len(offline),
            "mismatched": int(differs.sum()),
            "first_mismatched_ids": dg.MetadataValue.json(_first(offline.loc[differs, "message_id"])),
            "max_difference": float(np.max(np.abs(served - expected))) if len(offline) else 0.0,
        },
    )


ALL_CHECKS = [
    online_matches_offline,
    request_features_match_batch,
    no_future_features,
    model_beats_floor_and_served,
    served_predictions_match_offline,
]
