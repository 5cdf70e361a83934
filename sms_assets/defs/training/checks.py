"""Checks of the training group: no feature from the future, and the model gate."""

from typing import Any

import dagster as dg

from sms_assets.defs.features.assets import FEATURE_TABLE
from sms_assets.defs.features.comparison import first_ids
from sms_assets.defs.features.schema import FEATURE_NAMES
from sms_assets.defs.resources import ModelStoreResource, PostgresResource
from sms_assets.defs.shared import STORES_POOL
from sms_assets.defs.training import gate
from sms_assets.defs.training.assets import TRAINING_TABLE, candidate_version, spam_model, training_set
from sms_assets.lib.postgres import query_frame


@dg.asset_check(
    asset=training_set,
    blocking=True,
    pool=STORES_POOL,
    description=(
        "Every training row holds the feature values of the latest feature row at or before its "
        "label's event time: no value from the future reaches the model."
    ),
)
def no_future_features(postgres: PostgresResource) -> dg.AssetCheckResult:
    def same_values(row: str) -> str:
        return " AND ".join(f"t.{c} IS NOT DISTINCT FROM {row}.{c}" for c in FEATURE_NAMES)

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
            "first_future_ids": dg.MetadataValue.json(first_ids(from_future)),
            "rows_not_as_of_label": len(not_as_of),
            "first_not_as_of_ids": dg.MetadataValue.json(first_ids(not_as_of)),
        },
    )


@dg.asset_check(
    asset=spam_model,
    blocking=True,
    pool=STORES_POOL,
    description=(
        "The candidate's held-out F1 and ROC AUC reach the floors and are not clearly below the served "
        "model's; a failure stops served_model, so the previous model keeps serving."
    ),
)
def model_beats_floor_and_served(
    context: dg.AssetCheckExecutionContext, model_store: ModelStoreResource
) -> dg.AssetCheckResult:
    judgement = gate.judge(model_store.model_store(), candidate_version(context.instance))
    metadata: dict[str, Any] = {
        "candidate_version": candidate_version(context.instance),
        "served_version": judgement.served_version or "",
        "compared_with": judgement.basis,
        "thresholds": dg.MetadataValue.json(gate.DEFAULT_THRESHOLDS.as_metadata()),
        "failures": dg.MetadataValue.json(judgement.verdict.failures),
    }
    for name in gate.GATED_METRICS:
        metadata[f"candidate_{name}"] = judgement.candidate[name]
        if judgement.served:
            metadata[f"served_{name}"] = judgement.served[name]
    return dg.AssetCheckResult(passed=judgement.verdict.passed, metadata=metadata)
