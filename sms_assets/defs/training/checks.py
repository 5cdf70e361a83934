"""Checks of the training group: no feature from the future, and the model gate."""

from typing import Any

import dagster as dg

from sms_assets.defs.features.table import FEATURE_TABLE
from sms_assets.defs.resources import ModelStoreResource, PostgresResource
from sms_assets.defs.shared import LONGEST_CHAIN_FIRST, STORES_POOL
from sms_assets.defs.training.assets import TRAINING_TABLE, candidate_version, spam_model, training_set
from sms_core.features.comparison import FIRST_IDS
from sms_core.features.schema import FEATURE_NAMES
from sms_core.model import gate


@dg.asset_check(
    asset=training_set,
    blocking=True,
    pool=STORES_POOL,
    op_tags=LONGEST_CHAIN_FIRST,
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
    # Counted in Postgres, which returns one row however large the training set is.
    query = f"""
        WITH verdict AS (
            SELECT t.message_id,
                   {same_values("asof")} AS as_of,
                   EXISTS (SELECT 1 FROM {FEATURE_TABLE} later
                           WHERE later.message_id = t.message_id
                             AND later.event_timestamp > t.event_timestamp
                             AND {same_values("later")}) AS later_row
            FROM {TRAINING_TABLE} t
            LEFT JOIN LATERAL (
                SELECT * FROM {FEATURE_TABLE} f
                WHERE f.message_id = t.message_id AND f.event_timestamp <= t.event_timestamp
                ORDER BY f.event_timestamp DESC LIMIT 1
            ) asof ON true
        )
        SELECT count(*),
               count(*) FILTER (WHERE NOT as_of),
               count(*) FILTER (WHERE NOT as_of AND later_row),
               (array_agg(message_id ORDER BY message_id) FILTER (WHERE NOT as_of))[:{FIRST_IDS}],
               (array_agg(message_id ORDER BY message_id)
                    FILTER (WHERE NOT as_of AND later_row))[:{FIRST_IDS}]
        FROM verdict
    """
    with postgres.connect() as conn:
        found = conn.execute(query).fetchone()  # type: ignore[arg-type]
    checked, not_as_of, from_future, first_not_as_of, first_future = found or (0, 0, 0, None, None)
    return dg.AssetCheckResult(
        passed=checked > 0 and not_as_of == 0,
        metadata={
            "rows_checked": checked,
            "rows_from_future": from_future,
            "first_future_ids": dg.MetadataValue.json(first_future or []),
            "rows_not_as_of_label": not_as_of,
            "first_not_as_of_ids": dg.MetadataValue.json(first_not_as_of or []),
        },
    )


@dg.asset_check(
    asset=spam_model,
    blocking=True,
    pool=STORES_POOL,
    op_tags=LONGEST_CHAIN_FIRST,
    description=(
        "The candidate's held-out F1, spam caught, ham blocked and ROC AUC meet the targets and none is "
        "clearly worse than the served model's on the same rows; a failure stops served_model, so the "
        "previous model keeps serving."
    ),
)
def model_beats_floor_and_served(
    context: dg.AssetCheckExecutionContext, model_store: ModelStoreResource
) -> dg.AssetCheckResult:
    candidate = candidate_version(context.instance)
    thresholds = gate.DEFAULT_THRESHOLDS
    judgement = gate.judge(model_store.model_store(), candidate, thresholds)
    metadata: dict[str, Any] = {
        "candidate_version": candidate,
        "served_version": judgement.served_version or "",
        "compared_with": judgement.basis,
        "comparison": dg.MetadataValue.md(gate.comparison(judgement.candidate, judgement.served, thresholds)),
        "thresholds": dg.MetadataValue.json(thresholds.as_metadata()),
        "failures": dg.MetadataValue.json(judgement.verdict.failures),
    }
    for name in gate.GATED_METRICS:
        metadata[f"candidate_{name}"] = judgement.candidate[name]
        if judgement.served and name in judgement.served:
            metadata[f"served_{name}"] = judgement.served[name]
    return dg.AssetCheckResult(passed=judgement.verdict.passed, metadata=metadata)
