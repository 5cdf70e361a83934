"""The training group: the point-in-time training set from Feast, and the spam model trained on it."""

import time
from datetime import UTC, datetime, timedelta

import dagster as dg

from sms_assets.defs.feature_store.assets import feast_registry, feature_names
from sms_assets.defs.ingestion import batches
from sms_assets.defs.ingestion.assets import (
    LABELLED_MESSAGES_SQL,
    SMS_ARRIVAL_LABELS,
    SMS_ARRIVALS,
    raw_sms_messages,
)
from sms_assets.defs.resources import FeastResource, ModelStoreResource, PostgresResource
from sms_assets.defs.shared import PREVIEW_ROWS, TIMEZONE, code_version, markdown_table
from sms_assets.defs.training import model as training
from sms_assets.lib.feast_config import FEATURE_SERVICE
from sms_assets.lib.postgres import query_frame, replace_table_as

TRAINING_TABLE = "sms_training_set"
TRAINING_CODE_VERSION = code_version(training)


@dg.asset(
    deps=[feast_registry, raw_sms_messages, SMS_ARRIVALS, SMS_ARRIVAL_LABELS],
    group_name="training",
    kinds={"feast", "postgres"},
    description="Point-in-time training set: sms_service features joined to labels as of event time.",
)
def training_set(feast: FeastResource, postgres: PostgresResource) -> dg.MaterializeResult:
    """`get_historical_features(sms_service)` for every labelled message, stored in Postgres."""
    started = time.perf_counter()
    with postgres.connect() as conn:
        batches.ensure_tables(conn)
    store = feast.store()
    service = store.get_feature_service(FEATURE_SERVICE)
    job = store.get_historical_features(entity_df=LABELLED_MESSAGES_SQL, features=service)
    with postgres.connect() as conn:
        # The point-in-time join runs inside Postgres; no row passes through Python.
        replaced = replace_table_as(conn, TRAINING_TABLE, job.to_sql(), primary_key="message_id")
        missing = query_frame(
            conn,
            f"SELECT count(*) AS n FROM {TRAINING_TABLE} WHERE "
            + " OR ".join(f"{name} IS NULL" for name in feature_names(service)),
        )["n"].iloc[0]
        arrived = query_frame(
            conn,
            f"SELECT count(*) AS n FROM {TRAINING_TABLE} WHERE message_id >= {batches.ARRIVAL_ID_FLAG:d}",
        )["n"].iloc[0]
        preview = query_frame(
            conn, f"SELECT * FROM {TRAINING_TABLE} ORDER BY message_id LIMIT {PREVIEW_ROWS}"
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": replaced.rows,
            # False: the join gave exactly the rows the table held, which was left as it was.
            "changed": replaced.changed,
            "rows_missing_features": int(missing),
            "labelled_arrivals": int(arrived),
            "feature_service": FEATURE_SERVICE,
            "preview": markdown_table(preview.drop(columns=["text_group"])),
            "seconds": round(time.perf_counter() - started, 3),
        }
    )


class TrainingConfig(dg.Config):
    """Hyper-parameters of the spam model."""

    test_fraction: float = 0.25
    regularization_c: float = 1.0
    seed: int = 42


@dg.asset(
    deps=[training_set],
    group_name="training",
    kinds={"sklearn"},
    description="StandardScaler + LogisticRegression, evaluated on held-out texts, saved as a candidate.",
    code_version=TRAINING_CODE_VERSION,
    # Retrained at 02:00 every night; by 04:00 the model must be from after midnight.
    freshness_policy=dg.FreshnessPolicy.cron(
        deadline_cron="0 4 * * *", lower_bound_delta=timedelta(hours=4), timezone=TIMEZONE
    ),
)
def spam_model(
    config: TrainingConfig,
    feast: FeastResource,
    postgres: PostgresResource,
    model_store: ModelStoreResource,
) -> dg.MaterializeResult:
    """The spam classifier, trained on the training set and saved beside its manifest.

    It is saved as a candidate version: served_model promotes it once the model gate has passed.
    """
    started = time.perf_counter()
    features = feature_names(feast.store().get_feature_service(FEATURE_SERVICE))
    with postgres.connect() as conn:
        frame = query_frame(conn, f"SELECT * FROM {TRAINING_TABLE} ORDER BY message_id")
    if frame[features].isna().any(axis=None):
        raise ValueError(
            f"{TRAINING_TABLE} has rows without features (first message_id "
            f"{int(frame.loc[frame[features].isna().any(axis=1), 'message_id'].iloc[0])}): "
            "re-materialize sms_features and training_set"
        )
    split = training.split_by_text(frame, "text_group", config.test_fraction, config.seed)
    model = training.train(
        split.train[features], split.train["label"] == "spam", config.regularization_c, config.seed
    )
    metrics = training.evaluate(model, split.test[features], split.test["label"] == "spam")
    store = model_store.model_store()
    # Training is seeded: the same training set, code and hyper-parameters give the same model bytes,
    # so the same version, which the store already holds.
    known = {path.name for path in store.root.iterdir()} if store.root.is_dir() else set()
    saved = store.save(
        model,
        {
            "feature_service": FEATURE_SERVICE,
            "features": features,
            "training_rows": len(frame),
            "train_rows": len(split.train),
            "test_rows": len(split.test),
            "hyperparameters": config.model_dump(),
            "code_version": TRAINING_CODE_VERSION,
            "metrics": metrics,
            "trained_at": datetime.now(UTC).isoformat(),
            # The held-out messages, so serving can be compared with offline scoring on them.
            "test_message_ids": sorted(int(i) for i in split.test["message_id"]),
        },
    )
    matrix = metrics["confusion_matrix"]
    return dg.MaterializeResult(
        metadata={
            "version": saved.version,
            "changed": saved.version not in known,
            **{name: round(metrics[name], 4) for name in ("precision", "recall", "f1", "roc_auc")},
            "confusion_matrix": dg.MetadataValue.md(
                "| | predicted ham | predicted spam |\n|---|---|---|\n"
                f"| **ham** | {matrix['tn']} | {matrix['fp']} |\n"
                f"| **spam** | {matrix['fn']} | {matrix['tp']} |"
            ),
            "training_rows": len(frame),
            "test_rows": len(split.test),
            "features": dg.MetadataValue.json(features),
            "path": dg.MetadataValue.path(str(store.root / saved.version)),
            "seconds": round(time.perf_counter() - started, 3),
        }
    )


def candidate_version(instance: dg.DagsterInstance) -> str:
    """The model version spam_model's latest materialization saved."""
    event = instance.get_latest_materialization_event(spam_model.key)
    materialization = event.asset_materialization if event else None
    if materialization is None or "version" not in materialization.metadata:
        raise dg.Failure("spam_model has not been materialized: there is no candidate to promote")
    return str(materialization.metadata["version"].value)
