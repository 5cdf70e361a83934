"""When the graph runs by itself: sensors, declarative automation, schedules and freshness policies.

- `arrivals_sensor`: a batch lands in the landing folder -> a run of `arrivals_job` ingests it.
- `sms_automation`: sms_features, feast_registry and online_store follow their parents (`eager`), so new
  messages reach Redis in the next automation run, with no schedule tick.
- `feature_store_catch_up`: Postgres holds arrivals without features, or features newer than Redis's
  watermark (a failed run, a Redis outage) -> a run of the steps that close the gap.
- `nightly_retrain` (training set, then model) and `online_store_reconciliation` (every row, not only
  those after the watermark) on cron schedules in an explicit time zone.
- Freshness: online_store synced within the hour, spam_model retrained every night.

Sensors, schedules and automation start switched on: `dagster dev` (and the daemon of the compose
stack) run them as soon as the code location loads.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

import dagster as dg
import psycopg

from sms_assets import arrivals, online_sync
from sms_assets.assets import (
    FEATURE_TABLE,
    SMS_ARRIVAL_LABELS,
    SMS_ARRIVALS,
    ArrivalsConfig,
    OnlineStoreConfig,
    feast_registry,
    ingest_arrivals,
    online_store,
    sms_features,
    spam_model,
    training_set,
)
from sms_assets.postgres import table_exists
from sms_assets.resources import FeastResource, LandingResource

# Schedules and cron freshness read their cron strings in this zone. UTC has no daylight-saving gaps;
# set the team's zone here to run the nightly retrain at their night.
TIMEZONE = "UTC"
RETRAIN_CRON = "0 2 * * *"
RECONCILE_CRON = "30 * * * *"
ARRIVALS_INTERVAL_S = 5
AUTOMATION_INTERVAL_S = 10
CATCH_UP_INTERVAL_S = 30

RUNNING = dg.DefaultSensorStatus.RUNNING
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]

# Each asset follows its parents: a new materialization upstream requests it in the same automation
# run as everything between. sms_features does not wait for ingestions in progress: under a steady
# stream one nearly always is, and the features would starve. Each run computes features for every
# message without them, so an ingestion that ends while the run is under way (which eager counts as
# handled) is covered by the next run, or by the catch-up sensor once the stream stops.
FOLLOW_NEW_MESSAGES = (
    dg.AutomationCondition.eager()
    .without(~dg.AutomationCondition.any_deps_in_progress())
    .with_label("eager, even while arrivals are being ingested")
)
AUTOMATION_CONDITIONS: dict[dg.AssetKey, dg.AutomationCondition] = {
    sms_features.key: FOLLOW_NEW_MESSAGES,
    feast_registry.key: dg.AutomationCondition.eager(),
    online_store.key: dg.AutomationCondition.eager(),
}
FRESHNESS_POLICIES: dict[dg.AssetKey, dg.FreshnessPolicy] = {
    # Synced by every arrival and at least hourly by the reconciliation, so two hours without a sync
    # means the automation or the daemon is stuck.
    online_store.key: dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=2), warn_window=timedelta(minutes=75)
    ),
    # Retrained at 02:00 every night; by 04:00 the model must be from after midnight.
    spam_model.key: dg.FreshnessPolicy.cron(
        deadline_cron="0 4 * * *", lower_bound_delta=timedelta(hours=4), timezone=TIMEZONE
    ),
}


def with_automation(assets: Iterable[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The assets with the automation conditions and freshness policies above attached."""
    return [asset.map_asset_specs(_automated) for asset in assets]


def _automated(spec: dg.AssetSpec) -> dg.AssetSpec:
    return spec.replace_attributes(
        automation_condition=AUTOMATION_CONDITIONS.get(spec.key, spec.automation_condition),
        freshness_policy=FRESHNESS_POLICIES.get(spec.key, spec.freshness_policy),
    )


arrivals_job = dg.define_asset_job(
    "arrivals_job",
    selection=[SMS_ARRIVALS.key, SMS_ARRIVAL_LABELS.key],
    description="Ingest the batches waiting in the landing folder.",
)
retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=[training_set, spam_model],
    description="Rebuild the training set from every labelled message, then retrain the model.",
)
reconcile_online_store_job = dg.define_asset_job(
    "reconcile_online_store_job",
    selection=[online_store],
    config=dg.RunConfig(ops={online_store.op.name: OnlineStoreConfig(full_refresh=True)}),
    description="Materialize every offline row into Redis, whatever the watermark says.",
)

nightly_retrain = dg.ScheduleDefinition(
    name="nightly_retrain",
    job=retrain_job,
    cron_schedule=RETRAIN_CRON,
    execution_timezone=TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The training set and the model, rebuilt with the labels that came in during the day.",
)
online_store_reconciliation = dg.ScheduleDefinition(
    name="online_store_reconciliation",
    job=reconcile_online_store_job,
    cron_schedule=RECONCILE_CRON,
    execution_timezone=TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every offline row re-checked against Redis, for rows later than the sync's overlap.",
)

automation_sensor = dg.AutomationConditionSensorDefinition(
    "sms_automation",
    target=dg.AssetSelection.all(),
    default_status=RUNNING,
    minimum_interval_seconds=AUTOMATION_INTERVAL_S,
    description="Evaluates the assets' automation conditions: features and Redis follow new messages.",
)


def runs_in_flight(instance: dg.DagsterInstance, keys: Iterable[dg.AssetKey]) -> list[dg.DagsterRun]:
    """Queued or running runs that may materialize any of `keys` (a run without a subset may)."""
    wanted = set(keys)
    return [
        run
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT))
        if run.asset_selection is None or run.asset_selection & wanted
    ]


# One ingestion at a time: a second would find the first one's batches half moved.
_INGESTING = [SMS_ARRIVALS.key, SMS_ARRIVAL_LABELS.key]


@dg.sensor(
    job=arrivals_job,
    minimum_interval_seconds=ARRIVALS_INTERVAL_S,
    default_status=RUNNING,
    description="Starts a run of arrivals_job for the batches waiting in the landing folder.",
)
def arrivals_sensor(
    context: dg.SensorEvaluationContext, landing: LandingResource
) -> dg.RunRequest | dg.SkipReason:
    folder = landing.folder()
    waiting = folder.pending()
    if not waiting:
        return dg.SkipReason(f"no batch waiting in {folder.root}")
    busy = runs_in_flight(context.instance, _INGESTING)
    if busy:
        return dg.SkipReason(f"{len(waiting)} batch(es) wait for run {busy[0].run_id} to finish")
    names = [path.name for path in waiting]
    return dg.RunRequest(
        run_config=dg.RunConfig(ops={ingest_arrivals.op.name: ArrivalsConfig(batches=names)}),
        tags={"sms_assets/batches": str(len(names)), "sms_assets/first_batch": names[0]},
    )


_CATCH_UP_KEYS = [*_INGESTING, sms_features.key, feast_registry.key, online_store.key]


@dg.sensor(
    asset_selection=[sms_features, feast_registry, online_store],
    minimum_interval_seconds=CATCH_UP_INTERVAL_S,
    default_status=RUNNING,
    description=(
        "Requests the features, then Redis, when Postgres holds arrivals without features or features "
        "newer than what Redis holds, on two ticks in a row: the way back after a failed run or a "
        "Redis outage, which eager automation does not retry."
    ),
)
def feature_store_catch_up(
    context: dg.SensorEvaluationContext, feast: FeastResource
) -> dg.RunRequest | dg.SkipReason:
    if context.instance.get_latest_materialization_event(online_store.key) is None:
        return dg.SkipReason("online_store has never been materialized: run the initial load first")
    with feast.postgres.connect() as conn:
        if not table_exists(conn, FEATURE_TABLE):
            return dg.SkipReason(f"{FEATURE_TABLE} does not exist yet")
        unfeatured = arrivals_without_features(conn)
        bounds = online_sync.offline_range(conn, FEATURE_TABLE)
    watermark = online_sync.read_watermark(feast.redis.resolved_url(), feast.resolved_project())
    if unfeatured:
        gap = f"{unfeatured} arrived message(s) without features"
    elif bounds is not None and (watermark is None or bounds[1] > watermark):
        gap = f"{FEATURE_TABLE} holds rows up to {bounds[1]}, Redis up to {watermark}"
    else:
        context.update_cursor(None)
        return dg.SkipReason(f"up to date: Redis holds {FEATURE_TABLE} up to {watermark}")
    busy = runs_in_flight(context.instance, _CATCH_UP_KEYS)
    if busy:
        context.update_cursor(None)
        return dg.SkipReason(f"behind ({gap}), and run {busy[0].run_id} may close the gap")
    # Right after an ingestion the gap is expected, and the automation run that closes it may not be
    # submitted yet: only a gap seen on the previous tick too, with no run in between, is a real one.
    if not context.cursor:
        context.update_cursor(gap)
        return dg.SkipReason(f"behind ({gap}); leaving one interval for automation to close it")
    context.update_cursor(None)
    context.log.info(f"catching up: {gap}")
    selection = [sms_features.key, feast_registry.key, online_store.key] if unfeatured else [online_store.key]
    return dg.RunRequest(asset_selection=selection, tags={"sms_assets/catch_up": gap[:200]})


def arrivals_without_features(conn: psycopg.Connection) -> int:
    if not table_exists(conn, arrivals.MESSAGES_TABLE):
        return 0
    row = conn.execute(
        f"SELECT count(*) FROM {arrivals.MESSAGES_TABLE} a "
        f"WHERE NOT EXISTS (SELECT 1 FROM {FEATURE_TABLE} f WHERE f.message_id = a.message_id)"
    ).fetchone()
    return int(row[0]) if row else 0


JOBS = [arrivals_job, retrain_job, reconcile_online_store_job]
SCHEDULES = [nightly_retrain, online_store_reconciliation]
SENSORS = [arrivals_sensor, feature_store_catch_up, automation_sensor]
