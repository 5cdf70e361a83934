"""The check that what was served is what the offline store held: on live traffic, answer by answer."""

from functools import partial
from typing import Any

import dagster as dg
import pandas as pd

from sms_assets.defs.features.table import FEATURE_TABLE, REMOVED_TABLE
from sms_assets.defs.resources import FeastResource, ModelStoreResource, PostgresResource
from sms_assets.defs.serving.served_log import served_log
from sms_assets.defs.shared import SERVED_LOG_POOL
from sms_core.postgres import query_frame
from sms_core.served_log.intake import ANSWERS_TABLE

ANSWER_COLUMNS = (
    "request_id, batch_id, served_at, feature_service, model_version, request_form, message_id, "
    "text_sha256, text, spam_probability, features"
)


def latest_intake(context: dg.AssetCheckExecutionContext) -> str | None:
    """When the latest materialization of served_log took its answers in (they carry that stamp)."""
    event = context.instance.get_latest_materialization_event(served_log.key)
    materialization = event.asset_materialization if event else None
    stamp = materialization.metadata.get("taken_in_at") if materialization else None
    return str(stamp.value) if stamp is not None else None


def answers_taken_in(postgres: PostgresResource, stamp: str | None) -> pd.DataFrame:
    """The answers one intake took in (none before the first)."""
    if stamp is None:
        return pd.DataFrame(columns=[c.strip() for c in ANSWER_COLUMNS.split(",")])
    with postgres.connect() as conn:
        # `stamp` is the asset's own timestamp, read back from its metadata, not input.
        return query_frame(
            conn, f"SELECT {ANSWER_COLUMNS} FROM {ANSWERS_TABLE} WHERE taken_in_at = '{stamp}'::timestamptz"
        )


def changed_at(postgres: PostgresResource, message_ids: list[int]) -> pd.Series:
    """When each message's offline row was last written, or removed, by message_id."""
    if not message_ids:
        return pd.Series(dtype=object)
    ids = f"ARRAY[{','.join(map(str, message_ids))}]::bigint[]"
    with postgres.connect() as conn:
        frame = query_frame(
            conn,
            f"SELECT message_id, computed_at AS at FROM {FEATURE_TABLE} WHERE message_id = ANY({ids}) "
            f"UNION ALL SELECT message_id, removed_at FROM {REMOVED_TABLE} WHERE message_id = ANY({ids})",
        )
    return frame.groupby("message_id")["at"].max() if len(frame) else pd.Series(dtype=object)


@dg.asset_check(
    asset=served_log,
    blocking=True,
    pool=SERVED_LOG_POOL,
    description=(
        "Each logged answer of the latest intake served what the offline store held: by id, every "
        "feature equals a point-in-time retrieval through the same feature service at the answer's log "
        "timestamp (a row recomputed after the answer is counted as changed since served); by text, the "
        "on-demand path run again on the stored text; and the score is the served model version's score "
        "of those features. No batch request mixes two model versions."
    ),
)
def served_features_match_offline(
    context: dg.AssetCheckExecutionContext,
    feast: FeastResource,
    postgres: PostgresResource,
    model_store: ModelStoreResource,
) -> dg.AssetCheckResult:
    from sms_core.served_log import skew

    stamp = latest_intake(context)
    answers = answers_taken_in(postgres, stamp)
    store = feast.store()
    report = skew.SkewReport()
    score = skew.scorer(model_store.model_store().load)
    for name, rows in answers.groupby("feature_service", sort=True):
        service = store.get_feature_service(str(name))
        ids, texts = rows[rows["request_form"] == "id"], rows[rows["request_form"] == "text"]
        if len(ids):
            skew.compare_by_id(report, store, service, ids, partial(changed_at, postgres), score)
        if len(texts):
            skew.compare_by_text(report, store, service, texts, score)
    versions = (
        answers.groupby("batch_id")["model_version"].nunique() if len(answers) else pd.Series(dtype=int)
    )
    mixing = versions[versions > 1].index.tolist()
    differences: list[dict[str, Any]] = [d.as_metadata() for d in report.differences]
    return dg.AssetCheckResult(
        passed=report.mismatched_answers == 0 and report.scores_mismatched == 0 and not mixing,
        metadata={
            "taken_in_at": stamp or "",
            "answers": len(answers),
            "answers_compared": report.compared,
            "by_form": dg.MetadataValue.json(dict(report.by_form)),
            "matched": report.matched,
            "mismatched_answers": report.mismatched_answers,
            "changed_since_served": report.changed_since_served,
            "text_answers_without_stored_text": report.unverifiable,
            "scores_compared": report.scores_compared,
            "scores_mismatched": report.scores_mismatched,
            "first_differences": dg.MetadataValue.json(differences),
            "first_mismatched_ids": dg.MetadataValue.json(
                sorted({d["message_id"] for d in differences if d["message_id"] is not None})
            ),
            "first_mismatched_features": dg.MetadataValue.json(sorted({d["feature"] for d in differences})),
            "batches_mixing_versions": dg.MetadataValue.json(mixing[:10]),
        },
    )
