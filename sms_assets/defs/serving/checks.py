"""Checks of the serving group: the API's answers equal offline scoring of the held-out messages."""

import functools

import dagster as dg
import numpy as np

from sms_assets.defs import check_passes
from sms_assets.defs.resources import FeastResource, ModelStoreResource, PostgresResource
from sms_assets.defs.serving.assets import served_model
from sms_assets.defs.shared import LONGEST_CHAIN_FIRST, STORES_POOL
from sms_assets.defs.training.assets import TRAINING_TABLE
from sms_core.features.comparison import first_ids
from sms_core.postgres import query_chunks

# Held-out rows read, served and scored this many at a time (a chunk of a pass, sms_core.pool).
SCORE_CHUNK = 50_000


@dg.asset_check(
    asset=served_model,
    pool=STORES_POOL,
    op_tags=LONGEST_CHAIN_FIRST,
    description=(
        "On the served model's held-out messages, the serving path (features from Redis through the "
        "feature service the model names) gives the same spam probabilities as scoring the training "
        "set offline: every held-out message on a full pass, else (check_passes) those changed since the "
        "last passing one and a seeded sample of the others."
    ),
)
def served_predictions_match_offline(
    context: dg.AssetCheckExecutionContext,
    config: check_passes.PassConfig,
    feast: FeastResource,
    postgres: PostgresResource,
    model_store: ModelStoreResource,
) -> dg.AssetCheckResult:
    # Feast and scikit-learn are imported by the check that uses them, not when the definitions load.
    from sms_core import served_scoring

    models = model_store.model_store()
    model = models.load()
    held_out: list[int] = model.manifest["test_message_ids"]
    features: list[str] = model.manifest["features"]
    with postgres.connect() as conn:
        pass_ = check_passes.plan(context, config, conn)
        ids, changed, sampled = held_out, len(held_out), 0
        if not pass_.full:
            changed_ids = np.intersect1d(pass_.changed_ids(conn), np.array(held_out, dtype=np.int64))
            sample = pass_.sample_of(np.setdiff1d(np.array(held_out, dtype=np.int64), changed_ids).tolist())
            ids, changed, sampled = sorted(changed_ids.tolist() + sample), len(changed_ids), len(sample)
        query = (
            f"SELECT message_id, {', '.join(features)} FROM {TRAINING_TABLE} "
            "WHERE message_id = ANY(%s) ORDER BY message_id"
        )
        scorer = served_scoring.scorer(feast.store(), model)
        make = functools.partial(
            served_scoring.scorer_for,
            feast.postgres.resolved_url(),
            feast.redis.resolved_url(),
            feast.project_name(),
            str(models.root),
            model.version,
        )
        chunks = query_chunks(conn, query, SCORE_CHUNK, [ids])
        parts = list(pass_.map(served_scoring.both_scores, chunks, scorer, make))
    compared_ids, served, expected = (
        np.concatenate([part[i] for part in parts]) if parts else np.array([]) for i in range(3)
    )
    differs = ~np.isclose(served, expected, rtol=0.0, atol=1e-12)
    return dg.AssetCheckResult(
        # A held-out message the training set no longer holds was removed since the model was trained
        # (or lost its label): nothing to compare. All of them gone is a failure, not a vacuous pass.
        passed=not differs.any() and (len(compared_ids) > 0 or not ids),
        metadata={
            "model_version": model.version,
            "feature_service": scorer.service.name,
            "held_out_messages": len(held_out),
            "compared": len(compared_ids),
            "held_out_gone": len(ids) - len(compared_ids),
            "mismatched": int(differs.sum()),
            "first_mismatched_ids": dg.MetadataValue.json(first_ids(compared_ids[differs])),
            "max_difference": float(np.max(np.abs(served - expected))) if len(compared_ids) else 0.0,
            **pass_.metadata(changed, sampled),
        },
    )
