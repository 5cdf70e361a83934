"""Redis catches up by itself after a failed run, an outage or lost keys, and is reconciled in full every
hour."""

from __future__ import annotations

import dagster as dg
import psycopg

from sms_assets.defs.feature_store import online_sync
from sms_assets.defs.feature_store.assets import OnlineStoreConfig, feast_registry, online_store
from sms_assets.defs.features import table
from sms_assets.defs.features.assets import sms_features
from sms_assets.defs.features.table import FEATURE_TABLE, rebuild_reason
from sms_assets.defs.ingestion import batches
from sms_assets.defs.ingestion.sensors import INGESTING
from sms_assets.defs.resources import FeastResource
from sms_assets.defs.shared import TIMEZONE, runs_in_flight
from sms_core.postgres import table_exists
from sms_core.urls import ServiceUnavailable, postgres_unavailable

CATCH_UP_INTERVAL_S = 30
OUTAGE = "cannot tell, a store is down: "  # how a tick's skip during an outage begins
RECONCILE_CRON = "30 * * * *"

# Every offline row written to Redis again, whatever the watermark says.
FULL_SYNC = dg.RunConfig(ops={online_store.node_def.name: OnlineStoreConfig(full_refresh=True)})

reconcile_online_store_job = dg.define_asset_job(
    "reconcile_online_store_job",
    selection=[online_store],
    config=FULL_SYNC,
    description="Materialize every offline row into Redis, whatever the watermark says.",
)
FULL_SYNC_JOB = reconcile_online_store_job.name
FULL_SYNC_TAG = "sms_assets/full_sync"
online_store_reconciliation = dg.ScheduleDefinition(
    name="online_store_reconciliation",
    job=reconcile_online_store_job,
    cron_schedule=RECONCILE_CRON,
    execution_timezone=TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every offline row written to Redis again; whatever Redis holds beyond the table deleted.",
)

_CATCH_UP_KEYS = [*INGESTING, sms_features.key, feast_registry.key, online_store.key]


@dg.sensor(
    asset_selection=[sms_features, feast_registry, online_store],
    minimum_interval_seconds=CATCH_UP_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Requests the features, then Redis, when Postgres holds arrivals without features, features "
        "of other feature code, or changes newer than what Redis holds, on two ticks in a row: the "
        "way back after a failed run, a Redis outage or a deploy, which eager automation does not retry. "
        "When Redis holds fewer messages than it must (a FLUSHDB, a restart, lost keys), a full sync "
        "at once."
    ),
)
def feature_store_catch_up(
    context: dg.SensorEvaluationContext, feast: FeastResource
) -> dg.RunRequest | dg.SkipReason:
    if context.instance.get_latest_materialization_event(online_store.key) is None:
        return dg.SkipReason("online_store has never been materialized: run the initial load first")
    redis_url = feast.redis.resolved_url()
    try:
        with feast.postgres.connect() as conn:
            if not table_exists(conn, FEATURE_TABLE):
                return dg.SkipReason(f"{FEATURE_TABLE} does not exist yet")
            stale = rebuild_reason(conn)
            unfeatured = 0 if stale else arrivals_without_features(conn)
            newest = None if stale else table.newest_change(conn)
            held = None if stale or unfeatured else online_sync.holding(conn, redis_url, feast.project_name())
    except ServiceUnavailable as exc:
        # An outage is the tick's news in one line; the tick after it answers acts on what it finds.
        return dg.SkipReason(f"{OUTAGE}{exc}")
    except psycopg.OperationalError as exc:
        return dg.SkipReason(f"{OUTAGE}{postgres_unavailable(feast.postgres.resolved_url(), exc)}")
    full_refresh = False
    if stale:
        # After a deploy that changed the feature code: every row is computed again.
        gap = f"{FEATURE_TABLE} must be computed again: {stale}"
    elif unfeatured:
        gap = f"{unfeatured} arrived message(s) without features"
    elif held is not None and held.lost:
        # Keys were lost; an incremental sync would not write them again, and nothing else will.
        gap, full_refresh = f"{held.describe()}: {held.lost:,} lost", True
    elif held is not None and newest is not None and (held.watermark is None or newest > held.watermark):
        gap = f"{FEATURE_TABLE} changed at {newest}, Redis holds its changes up to {held.watermark}"
    else:
        context.update_cursor(None)
        return dg.SkipReason(f"up to date: {held.describe() if held else 'nothing to sync'}")
    busy = runs_in_flight(context.instance, _CATCH_UP_KEYS)
    if full_refresh:
        # Only a full sync writes lost keys again; under a steady stream of arrivals some other run is
        # nearly always in flight, and the one requested here queues behind it (the stores' pool).
        busy = [run for run in busy if run.tags.get(FULL_SYNC_TAG) or run.job_name == FULL_SYNC_JOB]
    if busy:
        context.update_cursor(None)
        return dg.SkipReason(f"behind ({gap}), and run {busy[0].run_id} may close the gap")
    # Right after an ingestion the gap is expected, and the automation run that closes it may not be
    # submitted yet: only a gap seen on the previous tick too, with no run in between, is a real one.
    # Lost keys are nobody else's to restore: they are synced at once.
    if not context.cursor and not full_refresh:
        context.update_cursor(gap)
        return dg.SkipReason(f"behind ({gap}); leaving one interval for automation to close it")
    context.update_cursor(None)
    context.log.info(f"catching up: {gap}")
    tags = {"sms_assets/catch_up": gap[:200]}
    if full_refresh:
        return dg.RunRequest(
            asset_selection=[online_store.key], run_config=FULL_SYNC, tags={**tags, FULL_SYNC_TAG: "true"}
        )
    # New feature code may declare other fields: the registry is applied again with it.
    if stale:
        selection = [sms_features.key, feast_registry.key, online_store.key]
    else:
        selection = [sms_features.key, online_store.key] if unfeatured else [online_store.key]
    return dg.RunRequest(asset_selection=selection, tags=tags)


def arrivals_without_features(conn: psycopg.Connection) -> int:
    if not table_exists(conn, batches.MESSAGES_TABLE):
        return 0
    row = conn.execute(
        f"SELECT count(*) FROM {batches.MESSAGES_TABLE} a "
        f"WHERE NOT EXISTS (SELECT 1 FROM {FEATURE_TABLE} f WHERE f.message_id = a.message_id)"
    ).fetchone()
    return int(row[0]) if row else 0
