"""The served log: what the prediction service answered, taken in from each feature service's log table,
and Feast's own statistics of it (docs/served-log.md).

The API writes every answer (its features in Feast's logging schema, the model version, the score) to
the log table of the feature service it read. `served_log` takes the new ones into `served_answers`,
once each however often it runs; its checks (serving/served_checks.py) judge them. `served_feature_metrics`
has Feast's MonitoringService profile the logs and the batch view, in Postgres, where `feast monitor`
and Feast's UI read them too.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd

from sms_assets.defs.feature_store.assets import feast_registry
from sms_assets.defs.resources import FeastResource, PostgresResource
from sms_assets.defs.serving.assets import served_model
from sms_assets.defs.shared import SERVED_LOG_POOL
from sms_core.contracts import FEATURE_VIEW
from sms_core.postgres import count_rows, query_frame, table_exists
from sms_core.served_log import intake

INTAKE_CRON = "*/15 * * * *"
REFRESHED_DAYS = 7  # a run computes the log statistics of the last week at most
METRIC_COLUMNS = (
    "feature_view_name",
    "feature_name",
    "metric_date",
    "row_count",
    "null_rate",
    "mean",
    "p50",
    "p95",
)


@dg.asset(
    # The registry declares which services log, and to which tables; the log holds the served model's
    # answers (the API writes it, outside Dagster).
    deps=[feast_registry, served_model],
    group_name="serving",
    kinds={"postgres", "feast"},
    # A pool of its own, so that the quarter-hourly intake holds back no arrival, sync or retrain. This
    # job writes only served_answers and Feast's monitoring tables, which no other job writes; the
    # whole graph, which materializes these assets too, holds this pool as well, and so does a second
    # intake, which waits. What it reads, the runs beside it may write, each in one transaction:
    # - sms_features: rows added, edited in place, removed, or a new table swapped in after a feature
    #   change. Each read is one statement (one snapshot), and the skew check reads when a row last
    #   changed after its point-in-time retrieval (skew.compare_by_id), so an answer whose message
    #   was edited after it was served is "changed since served", never skew, even when the edit
    #   commits while the check runs; new rows are new messages, served after them.
    # - the arrival labels: read in one statement; a label that lands later is judged next time.
    # - the training table: a retrain swaps a new one in; the drift check reads its two reference
    #   samples in one statement, bounded by the model's manifest (its trained_at, its held-out ids).
    # - the model versions: a retrain adds one, a promotion moves the pointer; the checks load the
    #   version each answer logged, saved whole before it could serve, never the current one.
    # - the registry: it changes only when a deploy changes feature_repo/, and a step reads it through
    #   Feast's cache, as an intake after the deploy would.
    pool=SERVED_LOG_POOL,
    description="Every answer the prediction service logged, taken in once each from the feature "
    "services' log tables (Feast's logging schema, plus the model version and score).",
    # Taken in every quarter of an hour (served_log_intake): an hour without means the schedule is stuck.
    freshness_policy=dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=1), warn_window=timedelta(minutes=35)
    ),
)
def served_log(
    context: dg.AssetExecutionContext, feast: FeastResource, postgres: PostgresResource
) -> dg.MaterializeResult:
    """The answers logged since the last intake, added to served_answers; a re-run adds nothing twice."""
    sources = intake.sources(feast.store())
    with postgres.connect() as conn:
        conn.execute(intake.ANSWERS_DDL)  # type: ignore[arg-type]
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        stamp = row[0]
        taken = [intake.take_in(conn, source, stamp) for source in sources]
        conn.commit()
        summary = query_frame(
            conn,
            "SELECT model_version, feature_service, request_form, count(*) AS answers, "
            "min(served_at) AS first_served, max(served_at) AS last_served "
            f"FROM {intake.ANSWERS_TABLE} GROUP BY 1, 2, 3 ORDER BY first_served",
        )
        mixed = query_frame(
            conn,
            "SELECT batch_id, array_agg(DISTINCT model_version) AS versions "
            f"FROM {intake.ANSWERS_TABLE} WHERE taken_in_at = '{stamp.isoformat()}' "
            "GROUP BY batch_id HAVING count(DISTINCT model_version) > 1 LIMIT 10",
        )
        drops = (
            query_frame(
                conn,
                "SELECT count(*) AS writers, coalesce(sum(queue_full), 0) AS queue_full, "
                f"coalesce(sum(write_failed), 0) AS write_failed FROM {intake.WRITERS_TABLE}",
            )
            if table_exists(conn, intake.WRITERS_TABLE)
            else None
        )
        total = count_rows(conn, intake.ANSWERS_TABLE)
    added = sum(t.rows for t in taken)
    context.log.info(f"took in {added} answers: " + ", ".join(f"{t.service} {t.rows}" for t in taken))
    last = summary["last_served"].max() if len(summary) else None
    dropped = (
        {k: int(drops[k].iloc[0]) for k in ("writers", "queue_full", "write_failed")}
        if drops is not None
        else {}
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(f"{total}:{last.isoformat() if last is not None else 'empty'}"),
        metadata={
            "dagster/table_name": intake.ANSWERS_TABLE,
            "dagster/row_count": total,
            "changed": added > 0,
            "rows_taken_in": added,
            "taken_in_at": stamp.isoformat(),
            "by_service": dg.MetadataValue.json({t.service: t.rows for t in taken}),
            "read_from": dg.MetadataValue.json(
                {t.service: t.since.isoformat() if t.since else None for t in taken}
            ),
            "answers_by_version": dg.MetadataValue.md(summary.to_markdown(index=False) or "no answers yet"),
            "first_served_at": summary["first_served"].min().isoformat() if len(summary) else "",
            "last_served_at": last.isoformat() if last is not None else "",
            "batches_mixing_versions": len(mixed),
            "first_batches_mixing_versions": dg.MetadataValue.json(mixed["batch_id"].tolist()),
            # What the API's writers could not log (counted by each, kept once Postgres answered).
            "answers_dropped_by_writers": dg.MetadataValue.json(dropped),
        },
    )


@dg.asset(
    deps=[served_log],
    group_name="serving",
    kinds={"feast", "postgres"},
    pool=SERVED_LOG_POOL,
    description="Feast's data-quality statistics of the served log (per logged feature service) and the "
    "batch baseline of sms_base_features, computed by Feast's MonitoringService inside Postgres.",
)
def served_feature_metrics(
    context: dg.AssetExecutionContext, feast: FeastResource, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Feast's log statistics for each day the intake covered, and the batch baseline where missing."""
    from feast.monitoring.monitoring_service import MonitoringService

    store = feast.store()
    monitoring = MonitoringService(store)
    # Computed once per feature and kept: the batch view's statistics, `feast monitor`'s reference. Never
    # a log baseline: Feast keeps one baseline per feature, and a log one would clear the batch one.
    baseline = monitoring.compute_baseline(project=store.project, feature_view_name=FEATURE_VIEW)
    today = datetime.now(UTC).date()
    event = context.instance.get_latest_materialization_event(served_log.key)
    materialization = event.asset_materialization if event else None
    first = materialization.metadata.get("first_served_at") if materialization else None
    start = datetime.fromisoformat(str(first.value)).date() if first and first.value else today
    days = [today - timedelta(days=n) for n in range(min((today - start).days, REFRESHED_DAYS - 1), -1, -1)]
    taken = materialization.metadata.get("rows_taken_in") if materialization else None
    computed: dict[str, int] = {}
    with postgres.connect() as conn:
        logged = [source for source in intake.sources(store) if intake.logged_yet(conn, source)]
    for source, day in ((source, day) for source in logged for day in days):
        # One day a call: Feast windows a call on [start 00:00, end 23:59:59] and files it under start.
        result = monitoring.compute_log_metrics(
            project=store.project, feature_service_name=source.service, start_date=day, end_date=day
        )
        computed[source.service] = computed.get(source.service, 0) + int(result.get("computed_features", 0))
    metrics = pd.DataFrame(
        monitoring.get_feature_metrics(
            project=store.project, data_source_type="log", granularity="daily", start_date=days[0]
        ),
        columns=list(METRIC_COLUMNS),
    )
    baselines = monitoring.get_baseline(
        project=store.project, feature_view_name=FEATURE_VIEW, data_source_type="batch"
    )
    return dg.MaterializeResult(
        metadata={
            # New statistics when new answers came in, or a baseline was computed for the first time.
            "changed": bool(taken and taken.value) or bool(baseline.get("computed_features")),
            "days": dg.MetadataValue.json([day.isoformat() for day in days]),
            "log_features_computed": dg.MetadataValue.json(computed),
            "baseline_features_computed_now": int(baseline.get("computed_features", 0)),
            "baseline_features": len(baselines),
            "log_metrics": dg.MetadataValue.md(metrics.to_markdown(index=False) or ""),
            "read_with": 'eval "$(sms-assets feast-env)" && feast -c feature_repo monitor run '
            "--source-type log",
        },
    )
