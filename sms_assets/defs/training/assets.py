"""The training group: the point-in-time training set from Feast, and the spam model trained on it."""

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg

from sms_assets.defs.feature_store.assets import REGISTRY_CODE_VERSION, feast_registry, feature_names
from sms_assets.defs.features.table import newest_written
from sms_assets.defs.ingestion import batches
from sms_assets.defs.ingestion.assets import (
    LABELLED_MESSAGES_SQL,
    SMS_ARRIVAL_LABELS,
    SMS_ARRIVALS,
    raw_sms_messages,
)
from sms_assets.defs.resources import FeastResource, ModelStoreResource, PostgresResource
from sms_assets.defs.shared import (
    LONGEST_CHAIN_FIRST,
    PREVIEW_ROWS,
    STORES_POOL,
    TIMEZONE,
    code_version,
    live_quality,
    preview_table,
    table_metadata,
)
from sms_assets.defs.training import incremental, retraining
from sms_core.contracts import TEXT_TWINS, TRAINING_SERVICE
from sms_core.postgres import query_frame
from sms_core.tables import replace_table_as

if TYPE_CHECKING:
    from feast import FeatureStore

TRAINING_TABLE = "sms_training_set"
# The modules that train a model, read by name: scikit-learn is imported by the step that trains.
TRAINING_CODE_VERSION = code_version(
    *(f"sms_core.model.{name}" for name in ("pipelines", "fitting", "metrics"))
)


def training_features(store: "FeatureStore") -> list[str]:
    """Every feature of every feature service a model can be trained on, as Feast references."""
    refs = [
        f"{projection.name_to_use()}:{feature.name}"
        for name in TEXT_TWINS
        for projection in store.get_feature_service(name).feature_view_projections
        for feature in projection.features
    ]
    return list(dict.fromkeys(refs))


@dg.asset(
    deps=[feast_registry, raw_sms_messages, SMS_ARRIVALS, SMS_ARRIVAL_LABELS],
    group_name="training",
    kinds={"feast", "postgres"},
    description="Point-in-time training set: every feature service's features joined to labels as of "
    "event time, joined again for the messages whose label or features changed.",
    pool=STORES_POOL,
    op_tags=LONGEST_CHAIN_FIRST,
)
def training_set(
    config: incremental.TrainingSetConfig, feast: FeastResource, postgres: PostgresResource
) -> dg.MaterializeResult:
    """`get_historical_features` for the labelled messages whose label or features changed since the
    last build (every labelled message on the first, or when `full`), stored in Postgres."""
    started = time.perf_counter()
    store = feast.store()
    # All services' features in one point-in-time join: a candidate and the model it would replace,
    # trained on different services, are then judged on the very same held-out rows.
    features = training_features(store)
    join = incremental.Join(
        incremental.definition(features, REGISTRY_CODE_VERSION), LABELLED_MESSAGES_SQL, TRAINING_TABLE
    )
    with postgres.connect() as conn:
        batches.ensure_tables(conn)
        # Read before the join: a feature row written meanwhile is joined again by the next build.
        through = newest_written(conn)
        build = join.next_build(conn)
        last = None if config.full or through is None else join.last_build(conn)
        conn.commit()  # the reads end here: each step below commits on its own, Feast reading between
        if last is None:
            job = store.get_historical_features(entity_df=LABELLED_MESSAGES_SQL, features=features)
            # The point-in-time join runs inside Postgres; no row passes through Python.
            replaced = replace_table_as(
                conn,
                TRAINING_TABLE,
                job.to_sql(),
                primary_key="message_id",
                note=join.note(through, build),
                count_changed_rows=True,
            )
            join.forget_changed(conn)
        else:
            assert through is not None
            joined = None
            if join.mark_changed(conn, last.through, build):
                joined = store.get_historical_features(
                    entity_df=join.entity_sql(), features=features
                ).to_sql()
            replaced = join.apply(conn, joined, last, through, build)
        missing = query_frame(
            conn,
            f"SELECT count(*) AS n FROM {TRAINING_TABLE} WHERE "
            + " OR ".join(f"{ref.split(':')[1]} IS NULL" for ref in features),
        )["n"].iloc[0]
        arrived = query_frame(
            conn,
            f"SELECT count(*) AS n FROM {TRAINING_TABLE} WHERE message_id >= {batches.ARRIVAL_ID_FLAG:d}",
        )["n"].iloc[0]
        preview = query_frame(
            conn, f"SELECT * FROM {TRAINING_TABLE} ORDER BY message_id LIMIT {PREVIEW_ROWS}"
        )
        columns = table_metadata(conn, TRAINING_TABLE)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(replaced.fingerprint),
        metadata={
            **columns,
            "dagster/row_count": replaced.rows,
            # False: the join gave exactly the rows the table held, which was left as it was.
            "changed": bool(replaced.rows_changed),
            "build": "full: every labelled message joined"
            if last is None
            else "incremental: "
            f"{replaced.rows_changed:,} rows changed of the messages joined again since {last.through}",
            # Added, removed or changed against the table it replaced: spam_model's retrain policy.
            retraining.ROWS_CHANGED: replaced.rows_changed,
            "rows_missing_features": int(missing),
            "labelled_arrivals": int(arrived),
            "feature_services": dg.MetadataValue.json(list(TEXT_TWINS)),
            "preview": preview_table(preview.drop(columns=["text_group"])),
            "seconds": round(time.perf_counter() - started, 3),
        },
    )


class TrainingConfig(retraining.RetrainPolicy):
    """Which model to train, its hyper-parameters, and when to retrain it (see retraining)."""

    # The feature service the model is trained on, which decides its kind (see model.PIPELINES).
    feature_service: str = TRAINING_SERVICE
    test_fraction: float = 0.25
    regularization_c: float = 1.0  # sms_service's logistic regression
    sgd_alpha: float = 1e-4  # sms_service_v2's linear model: its regularization,
    ham_weight: float = 1.5  # and how much more a blocked ham costs than a missed spam
    seed: int = 42


@dg.asset(
    deps=[training_set],
    group_name="training",
    kinds={"sklearn"},
    description=(
        "The spam classifier for the configured feature service (sms_service_v2: hashed word and "
        "character n-grams + linear model), judged on held-out texts, saved as a candidate."
    ),
    code_version=TRAINING_CODE_VERSION,
    pool=STORES_POOL,
    op_tags=LONGEST_CHAIN_FIRST,
    # Retrained at 02:00 every night; by 04:00 the model must be from after midnight.
    freshness_policy=dg.FreshnessPolicy.cron(
        deadline_cron="0 4 * * *", lower_bound_delta=timedelta(hours=4), timezone=TIMEZONE
    ),
)
def spam_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    feast: FeastResource,
    postgres: PostgresResource,
    model_store: ModelStoreResource,
) -> dg.MaterializeResult:
    """The spam classifier, trained on the training set and saved beside its manifest.

    It is saved as a candidate version: served_model promotes it once the model gate has passed. The
    served model is scored on the same held-out rows, which is what the gate compares against.
    """
    from sms_core.model import fitting, metrics

    started = time.perf_counter()
    service = config.feature_service
    if service not in TEXT_TWINS:
        raise dg.Failure(
            f"feature_service {service!r} is not one a model can be trained on: {list(TEXT_TWINS)}"
        )
    features = feature_names(feast.store().get_feature_service(service))
    store = model_store.model_store()
    hyperparameters = config.model_dump(exclude=retraining.POLICY_FIELDS)
    wanted = {
        "feature_service": service,
        "features": features,
        "hyperparameters": hyperparameters,
        "code_version": TRAINING_CODE_VERSION,
    }
    keys = (spam_model.key, training_set.key)
    standing = retraining.standing_candidate(context.instance, *keys, store, config, wanted)
    known = {path.name for path in store.root.iterdir()} if store.root.is_dir() else set()
    if standing is not None:
        saved, why = standing
    else:
        served = store.load() if store.served_version() else None
        trained = fitting.train_and_evaluate(
            postgres.connect, TRAINING_TABLE, service, features, hyperparameters, served
        )
        # Training is seeded: the same training set, code and hyper-parameters give the same model
        # bytes, so the same version, which the store already holds.
        saved = store.save(
            trained.model,
            {
                **wanted,
                "text_feature_service": TEXT_TWINS[service],
                "training_rows": trained.rows,
                "train_rows": trained.rows - trained.test_rows,
                "test_rows": trained.test_rows,
                "metrics": trained.metrics,
                # What the gate compares against: the served model on these same held-out rows.
                "served_on_same_split": trained.reference,
                "trained_at": datetime.now(UTC).isoformat(),
                # The held-out messages, so serving can be compared with offline scoring on them.
                "test_message_ids": trained.test_message_ids,
            },
        )
        why = "trained on this run's training set"
    manifest = saved.manifest
    summary = {name: manifest["metrics"][name] for name in metrics.SUMMARY}
    return dg.MaterializeResult(
        # A model's version is the hash of its bytes: the same training gives the same version.
        data_version=dg.DataVersion(saved.version),
        metadata={
            "version": saved.version,
            "changed": saved.version not in known,
            # Whether this run trained, or why the candidate saved before stands (see retraining).
            "retrain": why,
            "feature_service": service,
            **{name: round(value, 4) for name, value in summary.items()},
            "precision_recall": dg.MetadataValue.md(
                metrics.pr_curve_markdown(manifest["metrics"], f"model {saved.version}, {service}")
            ),
            "confusion_matrix": dg.MetadataValue.md(metrics.confusion_markdown(manifest["metrics"])),
            "served_on_same_split": dg.MetadataValue.json(manifest["served_on_same_split"]),
            # The served model's live quality on labelled traffic when this one was trained (serving's
            # served_quality_holds): "failed" means the model it may replace dropped in live use.
            "live_quality_of_served": live_quality(context.instance),
            "training_rows": manifest["training_rows"],
            "test_rows": manifest["test_rows"],
            "features": dg.MetadataValue.json(features),
            "path": dg.MetadataValue.path(str(store.root / saved.version)),
            "seconds": round(time.perf_counter() - started, 3),
        },
    )


def candidate_version(instance: dg.DagsterInstance) -> str:
    """The model version spam_model's latest materialization saved."""
    event = instance.get_latest_materialization_event(spam_model.key)
    materialization = event.asset_materialization if event else None
    if materialization is None or "version" not in materialization.metadata:
        raise dg.Failure("spam_model has not been materialized: there is no candidate to promote")
    return str(materialization.metadata["version"].value)
