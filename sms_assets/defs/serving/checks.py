"""Checks of the serving group: the API's answers equal offline scoring of the held-out messages."""

from typing import TYPE_CHECKING

import dagster as dg
import numpy as np

from sms_assets.defs import check_passes
from sms_assets.defs.resources import FeastResource, ModelStoreResource, PostgresResource
from sms_assets.defs.serving.assets import served_model
from sms_assets.defs.shared import LONGEST_CHAIN_FIRST, STORES_POOL
from sms_assets.defs.training.assets import TRAINING_TABLE
from sms_core.features.comparison import first_ids
from sms_core.postgres import query_frame

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

    from sms_core.model.store import ModelVersion

# Redis is read through Feast in calls of a size one request could carry: in one call, the 250,000
# held-out messages of a million peaked at 2.4 GiB of Feast protos.
REQUEST_CHUNK = 1_000
# The answers are scored by the serving path's own function, this many at a time: a text that repeats
# within a call is turned into n-grams once, which is most of scoring's cost.
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
    from sms_core import prediction
    from sms_core.model.pipelines import model_input, spam_scores

    model = model_store.model_store().load()
    held_out: list[int] = model.manifest["test_message_ids"]
    features: list[str] = model.manifest["features"]
    with postgres.connect() as conn:
        pass_ = check_passes.plan(context, config, conn)
        ids, changed, sampled = held_out, len(held_out), 0
        if not pass_.full:
            changed_ids = np.intersect1d(pass_.changed_ids(conn), np.array(held_out, dtype=np.int64))
            sample = pass_.sample_of(np.setdiff1d(np.array(held_out, dtype=np.int64), changed_ids).tolist())
            ids, changed, sampled = sorted(changed_ids.tolist() + sample), len(changed_ids), len(sample)
        offline = query_frame(
            conn,
            f"SELECT message_id, {', '.join(features)} FROM {TRAINING_TABLE} "
            f"WHERE message_id = ANY(ARRAY[{','.join(map(str, ids))}]::bigint[]) ORDER BY message_id",
        )
    expected = spam_scores(model.model, model_input(features, offline))
    store = feast.store()
    service = store.get_feature_service(prediction.served_through(model)[0])
    ids_in_order = offline["message_id"].tolist()
    served = np.concatenate(
        [
            served_probabilities(store, model, service, ids_in_order[start : start + SCORE_CHUNK])
            for start in range(0, len(ids_in_order), SCORE_CHUNK)
        ]
        or [np.array([])]
    )
    differs = ~np.isclose(served, expected, rtol=0.0, atol=1e-12)
    return dg.AssetCheckResult(
        # A held-out message the training set no longer holds was removed since the model was trained
        # (or lost its label): nothing to compare. All of them gone is a failure, not a vacuous pass.
        passed=not differs.any() and (len(offline) > 0 or not ids),
        metadata={
            "model_version": model.version,
            "feature_service": service.name,
            "held_out_messages": len(held_out),
            "compared": len(offline),
            "held_out_gone": len(ids) - len(offline),
            "mismatched": int(differs.sum()),
            "first_mismatched_ids": dg.MetadataValue.json(first_ids(offline.loc[differs, "message_id"])),
            "max_difference": float(np.max(np.abs(served - expected))) if len(offline) else 0.0,
            **pass_.metadata(changed, sampled),
        },
    )


def served_probabilities(
    store: "FeatureStore", model: "ModelVersion", service: "FeatureService", message_ids: list[int]
) -> np.ndarray:
    """The spam probability the API gives each message: its features read from Redis through the
    service, then the model's scoring of them."""
    from sms_core import prediction

    responses = [
        prediction.online_features(store, message_ids[start : start + REQUEST_CHUNK], service)
        for start in range(0, len(message_ids), REQUEST_CHUNK)
    ]
    merged = {name: [v for response in responses for v in response[name]] for name in responses[0]}
    return prediction.spam_probabilities(model, merged)
