"""The feature_store group: the Feast registry, and Redis kept in step with the offline table."""

import time
from datetime import timedelta
from typing import TYPE_CHECKING

import dagster as dg

from sms_assets.defs.feature_store import online_sync
from sms_assets.defs.features import compute, schema
from sms_assets.defs.features.assets import FEATURE_TABLE, rebuild_reason, sms_features
from sms_assets.defs.resources import FeastResource, ModelStoreResource, PostgresResource
from sms_assets.defs.shared import STORES_POOL, code_version
from sms_assets.lib.feast_config import FEATURE_VIEW

if TYPE_CHECKING:
    from feast import FeatureService


# What the registry is made of: the feature repo, and the schema and feature code it is built from.
FEATURE_REPO = (
    "repo",
    "entities",
    "data_sources",
    "feature_views",
    "on_demand_feature_views",
    "feature_services",
)
REGISTRY_CODE_VERSION = code_version(
    *(f"feature_repo.{name}" for name in FEATURE_REPO), schema.__name__, compute.__name__
)
# The registry follows the feature repo, not the rows of sms_features: new rows change nothing Feast
# declares, so an arrival does not apply the repo again. A deploy that changes the repo does.
FOLLOW_FEATURE_REPO = (
    dg.AutomationCondition.eager().ignore(dg.AssetSelection.assets(sms_features))
    | dg.AutomationCondition.code_version_changed()
).with_label("when missing, or when the feature repo changed")


@dg.asset(
    deps=[sms_features],
    group_name="feature_store",
    kinds={"feast", "postgres"},
    description="feature_repo/ applied to Feast's SQL registry in Postgres (what `feast apply` does).",
    automation_condition=FOLLOW_FEATURE_REPO,
    code_version=REGISTRY_CODE_VERSION,
    pool=STORES_POOL,
)
def feast_registry(feast: FeastResource, model_store: ModelStoreResource) -> dg.MaterializeResult:
    """The Feast registry: entity `message`, views `sms_base_features` and `sms_text_features`, and
    the feature services, version 1 and 2, each by id and by text.

    A feature service that a kept model names stays: a repo that drops one is refused, naming the
    models, so a rollback always finds the features its model reads.
    """
    # Feast is imported by the steps that use it, so a run that only ingests does not pay for it.
    from feature_repo import repo
    from sms_assets.defs.feature_store import registry

    kept = registry.services_named_by(model_store.model_store())
    declared = {service.name for service in repo.FEATURE_SERVICES}
    dropped = {name: versions for name, versions in kept.items() if name not in declared}
    if dropped:
        raise dg.Failure(
            "feature_repo/ no longer declares feature services that kept models are served through: "
            + "; ".join(f"{name} (models {', '.join(v)})" for name, v in sorted(dropped.items()))
            + ". Keep them, or delete those model versions first."
        )
    store = feast.store()
    changes = registry.apply_repo(store)
    services = {service.name: feature_names(service) for service in store.list_feature_services()}
    return dg.MaterializeResult(
        metadata={
            "project": store.project,
            "registry": feast.postgres.redacted(),
            "changed": any(k in changes for k in ("create", "update", "delete")),
            "changes": dg.MetadataValue.json(changes),
            "feature_services": dg.MetadataValue.json(services),
            "named_by_kept_models": dg.MetadataValue.json(kept),
        }
    )


def feature_names(service: "FeatureService") -> list[str]:
    """The features a feature service serves, in its order."""
    return [f.name for view in service.feature_view_projections for f in view.features]


class OnlineStoreConfig(dg.Config):
    """How much of the offline feature table a run writes to Redis."""

    # True: every row, and away with whatever Redis holds beyond the table, whatever the watermark says
    # (what the hourly reconciliation runs).
    full_refresh: bool = False


# A short Redis outage is retried inside the run; a longer one fails it, and the catch-up sensor
# (sensors.py) starts the next run once Redis answers again.
ONLINE_STORE_RETRY = dg.RetryPolicy(
    max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


@dg.asset(
    # It reads the rows of sms_features, through the views the registry declares.
    deps=[feast_registry, sms_features],
    group_name="feature_store",
    kinds={"feast", "redis"},
    description="sms_base_features written from Postgres into Redis for online serving, removals too.",
    retry_policy=ONLINE_STORE_RETRY,
    pool=STORES_POOL,
    automation_condition=dg.AutomationCondition.eager(),
    # Synced by every arrival and at least hourly by the reconciliation, so two hours without a sync
    # means the automation or the daemon is stuck.
    freshness_policy=dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=2), warn_window=timedelta(minutes=75)
    ),
)
def online_store(
    config: OnlineStoreConfig, feast: FeastResource, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Redis holding every message's `sms_base_features` row, and nothing else, synced from a watermark."""
    started = time.perf_counter()
    store = feast.store()
    redis_url = feast.redis.url
    watermark = online_sync.read_watermark(redis_url, store.project)
    with postgres.connect() as conn:
        stale = rebuild_reason(conn)
        if stale:
            # Redis would take in rows of other feature code than the registry's.
            raise dg.Failure(
                f"{FEATURE_TABLE} is not current ({stale}): materialize sms_features first",
                allow_retries=False,
            )
        plan = online_sync.plan(conn, None if config.full_refresh else watermark, redis_url, store.project)
        written = online_sync.sync(store, conn, redis_url, plan)
    seconds = time.perf_counter() - started
    return dg.MaterializeResult(
        metadata={
            "changed": bool(written or plan.removed),
            "rows_written": written,
            "entities_removed": len(plan.removed),
            "first_removed_ids": dg.MetadataValue.json(plan.removed[:10]),
            "full_refresh": plan.full,
            "watermark_before": watermark.isoformat() if watermark else "",
            "watermark": plan.through.isoformat() if plan.through else "",
            "feature_view": FEATURE_VIEW,
            "seconds": round(seconds, 3),
            "rows_per_second": round(written / seconds) if seconds else 0,
        }
    )
