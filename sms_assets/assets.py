"""The asset graph: raw messages -> features -> Feast registry -> training set -> model, and Redis.

New messages and late labels join through `ingest_arrivals`. When each asset runs (sensors, automation
conditions, schedules, freshness policies) is decided in `automation.py`.
"""

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from feast import FeatureService
from pydantic import Field

from sms_assets import arrivals, feast_store, model_gate, online_sync, training
from sms_assets.features import FEATURE_COLUMNS, compute_features
from sms_assets.ingestion import DatasetError, count_lines, parse_messages, sha256
from sms_assets.postgres import count_rows, insert_new, query_frame, replace_table, replace_table_as
from sms_assets.resources import (
    DatasetResource,
    FeastResource,
    LandingResource,
    ModelStoreResource,
    PostgresResource,
)
from sms_assets.services import redact

RAW_TABLE = "raw_sms_messages"
FEATURE_TABLE = "sms_features"
TRAINING_TABLE = "sms_training_set"
FEATURE_CHUNK_ROWS = 50_000
PREVIEW_ROWS = 5

RAW_COLUMNS = (
    ("message_id", "bigint NOT NULL"),
    ("event_timestamp", "timestamptz NOT NULL"),
    ("label", "text NOT NULL"),
    ("text", "text NOT NULL"),
)
FEATURE_TABLE_COLUMNS = (
    ("message_id", "bigint NOT NULL"),
    ("event_timestamp", "timestamptz NOT NULL"),
    ("text_length", "bigint NOT NULL"),
    ("word_count", "bigint NOT NULL"),
    ("avg_word_length", "double precision NOT NULL"),
    ("digit_count", "bigint NOT NULL"),
    ("exclamation_count", "bigint NOT NULL"),
    ("uppercase_ratio", "double precision NOT NULL"),
)
# Every message, from the initial load and from the landing folder.
MESSAGES_SQL = (
    f"SELECT message_id, event_timestamp, text FROM {RAW_TABLE} "
    f"UNION ALL SELECT message_id, event_timestamp, text FROM {arrivals.MESSAGES_TABLE}"
)
# The labels Feast joins features to, as of each message's event time; md5(text) keeps duplicate
# texts on one side of the train/test split without carrying the text into the training set.
# Arrivals count only once their label has come.
TRAINING_ENTITY_SQL = (
    f"SELECT message_id, event_timestamp, label, md5(text) AS text_group FROM {RAW_TABLE} "
    f"UNION ALL SELECT message_id, event_timestamp, label, md5(text) AS text_group "
    f"FROM ({arrivals.LABELLED_ARRIVALS_SQL}) AS labelled_arrivals"
)


def _preview(frame: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(PREVIEW_ROWS).to_markdown(index=False) or "")


@dg.asset(
    group_name="ingestion",
    kinds={"postgres"},
    description="The SMS Spam Collection in Postgres: message_id, event_timestamp, label, text.",
)
def raw_sms_messages(
    context: dg.AssetExecutionContext, dataset: DatasetResource, postgres: PostgresResource
) -> dg.MaterializeResult:
    """The SMS Spam Collection in Postgres, one row per message with a stable message_id."""
    started = time.perf_counter()
    path = dataset.fetch()
    held_back = dataset.resolved_holdback()
    total = count_lines(path)
    if not 0 <= held_back < total:
        raise DatasetError(f"holdback {held_back} must be from 0 to {total - 1}: {path} has {total} lines")
    # Every line is still parsed, so a bad line anywhere fails the load; the tail is left for arrivals.
    rows = (
        (m.message_id, m.event_timestamp, m.label, m.text)
        for m in parse_messages(path)
        if m.message_id <= total - held_back
    )
    with postgres.connect() as conn:
        count = replace_table(conn, RAW_TABLE, RAW_COLUMNS, rows, primary_key="message_id")
        balance = dict(conn.execute(f"SELECT label, count(*) FROM {RAW_TABLE} GROUP BY label").fetchall())
        preview = query_frame(conn, f"SELECT * FROM {RAW_TABLE} ORDER BY message_id LIMIT {PREVIEW_ROWS}")
    context.log.info(f"loaded {count} messages from {path}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": count,
            "source": str(path),
            "source_sha256": sha256(path),
            "ham": int(balance.get("ham", 0)),
            "spam": int(balance.get("spam", 0)),
            "spam_share": round(balance.get("spam", 0) / count, 4) if count else 0.0,
            "held_back": held_back,
            "preview": _preview(preview),
            "seconds": round(time.perf_counter() - started, 3),
        }
    )


SMS_ARRIVALS = dg.AssetSpec(
    "sms_arrivals",
    group_name="ingestion",
    kinds={"postgres"},
    description="Messages that arrived after the initial load, from the landing folder.",
    # Materialized only when a run adds messages, so downstream automation wakes for real news only.
    skippable=True,
)
SMS_ARRIVAL_LABELS = dg.AssetSpec(
    "sms_arrival_labels",
    group_name="ingestion",
    kinds={"postgres"},
    description="Labels of arrived messages, which may come long after the message itself.",
    skippable=True,
)


class ArrivalsConfig(dg.Config):
    """Which landed batches a run ingests."""

    # File names in the landing folder; empty: every batch waiting there.
    batches: list[str] = Field(default_factory=list)


@dg.multi_asset(
    specs=[SMS_ARRIVALS, SMS_ARRIVAL_LABELS],
    description="Batches from the landing folder, each stored whole or quarantined whole.",
)
def ingest_arrivals(
    context: dg.AssetExecutionContext,
    config: ArrivalsConfig,
    landing: LandingResource,
    postgres: PostgresResource,
) -> Iterator[dg.MaterializeResult]:
    """New messages and late labels from the landing folder, stored once however often they land.

    A malformed batch is moved to quarantine/ and fails the run by name, after the good batches of the
    same run are stored and materialized, so one bad file never holds back the others.
    """
    started = time.perf_counter()
    folder = landing.folder()
    stored: list[str] = []
    rejected: list[str] = []
    added_messages = added_labels = 0
    with postgres.connect() as conn:
        # Each batch commits on its own, before its file moves to processed/.
        conn.autocommit = True
        arrivals.ensure_tables(conn)
        for path in _batches_to_ingest(folder, config.batches):
            if path.parent == folder.quarantined:
                rejected.append(folder.quarantine_reason(path))
                continue
            try:
                batch = arrivals.read_batch(path)
            except arrivals.BatchError as exc:
                folder.quarantine(path, str(exc))
                rejected.append(str(exc))
                context.log.error(f"quarantined {path.name}: {exc}")
                continue
            messages, labels = arrivals.store_batch(conn, batch)
            folder.archive(path)
            stored.append(path.name)
            added_messages += messages
            added_labels += labels
            context.log.info(f"{path.name}: {messages} new messages, {labels} new labels")
        summary = {
            "batches": dg.MetadataValue.json(stored),
            "rejected": dg.MetadataValue.json(rejected),
            "seconds": round(time.perf_counter() - started, 3),
        }
        if added_messages or _never_materialized(context, SMS_ARRIVALS.key):
            yield dg.MaterializeResult(
                asset_key=SMS_ARRIVALS.key,
                metadata={**summary, **_arrival_metadata(conn), "rows_added": added_messages},
            )
        if added_labels or _never_materialized(context, SMS_ARRIVAL_LABELS.key):
            yield dg.MaterializeResult(
                asset_key=SMS_ARRIVAL_LABELS.key,
                metadata={**summary, **_label_metadata(conn), "rows_added": added_labels},
            )
    if rejected:
        # A Failure's description is what the UI shows as the run's error, without a stack trace.
        raise dg.Failure(
            description=(
                f"{len(rejected)} malformed batch(es) rejected whole and moved to {folder.quarantined}; "
                f"{len(stored)} other batch(es) were stored. " + " | ".join(rejected)
            ),
            metadata={"rejected": dg.MetadataValue.json(rejected), "stored": dg.MetadataValue.json(stored)},
            allow_retries=False,
        )


def _batches_to_ingest(folder: arrivals.LandingFolder, names: Sequence[str]) -> list[Path]:
    if not names:
        return folder.pending()
    paths = []
    for name in names:
        path = folder.find(name)
        if path is None:
            raise arrivals.BatchError(f"batch {name} is in none of {folder.root}, processed/, quarantine/")
        paths.append(path)
    return paths


def _never_materialized(context: dg.AssetExecutionContext, key: dg.AssetKey) -> bool:
    # The first run records the (possibly empty) tables, so that automation waiting for every parent
    # of sms_features to exist is not held up until the first message arrives.
    return context.instance.get_latest_materialization_event(key) is None


def _arrival_metadata(conn: Any) -> dict[str, Any]:
    newest = query_frame(
        conn,
        f"SELECT sms_id, message_id, event_timestamp, text FROM {arrivals.MESSAGES_TABLE} "
        f"ORDER BY event_timestamp DESC, message_id LIMIT {PREVIEW_ROWS}",
    )
    return {
        "dagster/row_count": count_rows(conn, arrivals.MESSAGES_TABLE),
        "newest_event_timestamp": newest["event_timestamp"].iloc[0].isoformat() if len(newest) else "",
        "preview": _preview(newest),
    }


def _label_metadata(conn: Any) -> dict[str, Any]:
    row = conn.execute(
        f"SELECT count(*) FILTER (WHERE l.label = 'ham'), count(*) FILTER (WHERE l.label = 'spam'), "
        f"count(*) FILTER (WHERE a.message_id IS NOT NULL AND l.message_id IS NULL) "
        f"FROM {arrivals.LABELS_TABLE} l FULL JOIN {arrivals.MESSAGES_TABLE} a USING (message_id)"
    ).fetchone()
    ham, spam, awaiting = row
    return {
        "dagster/row_count": count_rows(conn, arrivals.LABELS_TABLE),
        "ham": int(ham),
        "spam": int(spam),
        "messages_awaiting_label": int(awaiting),
    }


@dg.asset(
    deps=[raw_sms_messages, SMS_ARRIVALS],
    group_name="features",
    kinds={"postgres", "pandas"},
    description="Text statistics per message, the table Feast reads as its offline source.",
)
def sms_features(postgres: PostgresResource) -> dg.MaterializeResult:
    """Engineered features per message, computed by `compute_features` for messages that have none yet.

    A message never changes, so its features are computed once: a run adds the new messages' rows and
    drops rows whose message is gone, and a run with nothing new changes nothing.
    """
    started = time.perf_counter()
    with postgres.connect() as conn:
        arrivals.ensure_tables(conn)
        conn.execute(FEATURE_TABLE_DDL)  # type: ignore[arg-type]
    with postgres.connect() as source, postgres.connect() as target:
        with target.transaction():
            removed = target.execute(DROP_ORPHAN_FEATURES_SQL).rowcount  # type: ignore[arg-type]
            added = insert_new(
                target,
                FEATURE_TABLE,
                [name for name, _ in FEATURE_TABLE_COLUMNS],
                _feature_rows(source, NEW_MESSAGES_SQL),
            )
        count = count_rows(target, FEATURE_TABLE)
        means = query_frame(
            target,
            "SELECT "
            + ", ".join(f"avg({c})::float8 AS {c}" for c in FEATURE_COLUMNS)
            + f" FROM {FEATURE_TABLE}",
        )
        preview = query_frame(
            target,
            f"SELECT * FROM {FEATURE_TABLE} ORDER BY event_timestamp DESC, message_id LIMIT {PREVIEW_ROWS}",
        )
    seconds = time.perf_counter() - started
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": count,
            "rows_added": added,
            "rows_removed": removed,
            "feature_means": _preview(means.round(4)),
            "preview": _preview(preview),
            "seconds": round(seconds, 3),
            "rows_per_second": round(added / seconds) if seconds else 0,
        }
    )


FEATURE_TABLE_DDL = (
    f"CREATE TABLE IF NOT EXISTS {FEATURE_TABLE} ("
    + ", ".join(f"{name} {type_}" for name, type_ in FEATURE_TABLE_COLUMNS)
    + ", PRIMARY KEY (message_id))"
)
NEW_MESSAGES_SQL = (
    f"SELECT m.message_id, m.event_timestamp, m.text FROM ({MESSAGES_SQL}) AS m "
    f"WHERE NOT EXISTS (SELECT 1 FROM {FEATURE_TABLE} f WHERE f.message_id = m.message_id)"
)
DROP_ORPHAN_FEATURES_SQL = (
    f"DELETE FROM {FEATURE_TABLE} f "
    f"WHERE NOT EXISTS (SELECT 1 FROM {RAW_TABLE} r WHERE r.message_id = f.message_id) "
    f"AND NOT EXISTS (SELECT 1 FROM {arrivals.MESSAGES_TABLE} a WHERE a.message_id = f.message_id)"
)


def _feature_rows(conn: Any, query: str) -> Iterator[Sequence[Any]]:
    """Feature rows for the messages `query` selects, read through a server-side cursor in chunks."""
    with conn.cursor(name="raw_messages") as cursor:
        cursor.execute(query)
        while chunk := cursor.fetchmany(FEATURE_CHUNK_ROWS):
            frame = pd.DataFrame(chunk, columns=["message_id", "event_timestamp", "text"])
            features = compute_features(frame["text"])
            yield from zip(
                frame["message_id"].tolist(),
                frame["event_timestamp"].tolist(),
                *(features[c].tolist() for c in FEATURE_COLUMNS),
                strict=True,
            )


@dg.asset(
    deps=[sms_features],
    group_name="feature_store",
    kinds={"feast", "postgres"},
    description="feature_repo/ applied to Feast's SQL registry in Postgres (what `feast apply` does).",
)
def feast_registry(feast: FeastResource) -> dg.MaterializeResult:
    """The Feast registry holding entity `message`, view `sms_base_features`, service `sms_service`."""
    store = feast.store()
    changes = feast_store.apply_repo(store)
    service = store.get_feature_service(feast_store.FEATURE_SERVICE)
    return dg.MaterializeResult(
        metadata={
            "project": store.project,
            "registry": redact(feast.postgres.resolved_url()),
            "changed": any(k in changes for k in ("create", "update", "delete")),
            "changes": dg.MetadataValue.json(changes),
            "feature_service": feast_store.FEATURE_SERVICE,
            "features": dg.MetadataValue.json(feature_names(service)),
        }
    )


def feature_names(service: FeatureService) -> list[str]:
    """The features a feature service serves, in its order."""
    return [f.name for view in service.feature_view_projections for f in view.features]


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
        arrivals.ensure_tables(conn)
    store = feast.store()
    service = store.get_feature_service(feast_store.FEATURE_SERVICE)
    job = store.get_historical_features(entity_df=TRAINING_ENTITY_SQL, features=service)
    with postgres.connect() as conn:
        # The point-in-time join runs inside Postgres; no row passes through Python.
        count = replace_table_as(conn, TRAINING_TABLE, job.to_sql(), primary_key="message_id")
        missing = query_frame(
            conn,
            f"SELECT count(*) AS n FROM {TRAINING_TABLE} WHERE "
            + " OR ".join(f"{name} IS NULL" for name in feature_names(service)),
        )["n"].iloc[0]
        arrived = query_frame(
            conn,
            f"SELECT count(*) AS n FROM {TRAINING_TABLE} WHERE message_id >= {arrivals.ARRIVAL_ID_FLAG:d}",
        )["n"].iloc[0]
        preview = query_frame(
            conn, f"SELECT * FROM {TRAINING_TABLE} ORDER BY message_id LIMIT {PREVIEW_ROWS}"
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": count,
            "rows_missing_features": int(missing),
            "labelled_arrivals": int(arrived),
            "feature_service": feast_store.FEATURE_SERVICE,
            "preview": _preview(preview.drop(columns=["text_group"])),
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
    features = feature_names(feast.store().get_feature_service(feast_store.FEATURE_SERVICE))
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
    saved = model_store.model_store().save(
        model,
        {
            "feature_service": feast_store.FEATURE_SERVICE,
            "features": features,
            "training_rows": len(frame),
            "train_rows": len(split.train),
            "test_rows": len(split.test),
            "hyperparameters": config.model_dump(),
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
            **{name: round(metrics[name], 4) for name in ("precision", "recall", "f1", "roc_auc")},
            "confusion_matrix": dg.MetadataValue.md(
                "| | predicted ham | predicted spam |\n|---|---|---|\n"
                f"| **ham** | {matrix['tn']} | {matrix['fp']} |\n"
                f"| **spam** | {matrix['fn']} | {matrix['tp']} |"
            ),
            "training_rows": len(frame),
            "test_rows": len(split.test),
            "features": dg.MetadataValue.json(features),
            "path": dg.MetadataValue.path(str(model_store.model_store().root / saved.version)),
            "seconds": round(time.perf_counter() - started, 3),
        }
    )


class OnlineStoreConfig(dg.Config):
    """How much of the offline feature table a run writes to Redis."""

    # True: every row, whatever the watermark says (what the periodic reconciliation runs).
    full_refresh: bool = False
    # How far before the watermark a run reaches back, for rows that landed after newer ones.
    overlap_minutes: float = online_sync.DEFAULT_OVERLAP.total_seconds() / 60


# A short Redis outage is retried inside the run; a longer one fails it, and the catch-up sensor
# (automation.py) starts the next run once Redis answers again.
ONLINE_STORE_RETRY = dg.RetryPolicy(
    max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


@dg.asset(
    deps=[feast_registry],
    group_name="feature_store",
    kinds={"feast", "redis"},
    description="sms_base_features materialized from Postgres into Redis for online serving.",
    retry_policy=ONLINE_STORE_RETRY,
)
def online_store(
    config: OnlineStoreConfig, feast: FeastResource, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Redis holding the latest `sms_base_features` row of every message, synced from a watermark."""
    started = time.perf_counter()
    store = feast.store()
    redis_url = feast.redis.resolved_url()
    watermark = online_sync.read_watermark(redis_url, store.project)
    with postgres.connect() as conn:
        window = online_sync.plan_window(
            conn,
            FEATURE_TABLE,
            None if config.full_refresh else watermark,
            timedelta(minutes=config.overlap_minutes),
        )
    if window is None:
        raise ValueError(f"{FEATURE_TABLE} is empty: materialize sms_features first")
    new_watermark = online_sync.sync(store, redis_url, window, watermark)
    seconds = time.perf_counter() - started
    return dg.MaterializeResult(
        metadata={
            "rows_written": window.rows,
            "full_window": window.full,
            "window_start": window.start.isoformat(),
            "window_end": window.end.isoformat(),
            "watermark_before": watermark.isoformat() if watermark else "",
            "watermark": new_watermark.isoformat(),
            "feature_view": feast_store.FEATURE_VIEW,
            "seconds": round(seconds, 3),
            "rows_per_second": round(window.rows / seconds) if seconds else 0,
        }
    )


def candidate_version(instance: dg.DagsterInstance) -> str:
    """The model version spam_model's latest materialization saved."""
    event = instance.get_latest_materialization_event(spam_model.key)
    materialization = event.asset_materialization if event else None
    if materialization is None or "version" not in materialization.metadata:
        raise dg.Failure("spam_model has not been materialized: there is no candidate to promote")
    return str(materialization.metadata["version"].value)


@dg.asset(
    deps=[spam_model],
    group_name="serving",
    kinds={"sklearn"},
    description="The model version the prediction service serves: spam_model, once it passed the gate.",
)
def served_model(context: dg.AssetExecutionContext, model_store: ModelStoreResource) -> dg.MaterializeResult:
    """spam_model's candidate promoted to CURRENT; running services pick it up without a restart."""
    store = model_store.model_store()
    candidate = candidate_version(context.instance)
    previous = store.served_version()
    manifest = store.manifest(candidate)
    # The blocking gate check stops this step in the run that trained the candidate; judging again here
    # keeps a failed candidate out when served_model is materialized on its own in a later run.
    served_metrics = store.manifest(previous)["metrics"] if previous else None
    verdict = model_gate.evaluate_gate(manifest["metrics"], served_metrics)
    if not verdict.passed:
        raise dg.Failure(
            f"model {candidate} failed the model gate ({'; '.join(verdict.failures)}); "
            f"{previous or 'no model'} stays served"
        )
    store.promote(candidate)
    context.log.info(f"serving model {candidate} (was {previous or 'none'})")
    return dg.MaterializeResult(
        metadata={
            "version": candidate,
            "previous_version": previous or "",
            "changed": candidate != previous,
            "f1": manifest["metrics"]["f1"],
            "roc_auc": manifest["metrics"]["roc_auc"],
            "path": dg.MetadataValue.path(str(store.root / candidate)),
        }
    )


ALL_ASSETS = [
    raw_sms_messages,
    ingest_arrivals,
    sms_features,
    feast_registry,
    training_set,
    spam_model,
    online_store,
    served_model,
]
