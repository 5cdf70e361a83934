"""The feature_store group: the Feast registry, and Redis kept in step with the offline table."""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg
import redis
from pydantic import Field

from sms_assets.defs.fan_out import PieceWritten, fan_out_asset, planned, summary
from sms_assets.defs.feature_store import online_sync
from sms_assets.defs.features.assets import sms_features
from sms_assets.defs.features.table import FEATURE_TABLE, rebuild_reason
from sms_assets.defs.resources import FeastResource, ModelStoreResource, PostgresResource
from sms_assets.defs.shared import STORES_POOL, code_version
from sms_core import urls
from sms_core.contracts import FEATURE_VIEW
from sms_core.features import compute, schema

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
    from sms_core import registry

    kept = registry.services_named_by(model_store.model_store())
    declared = {service.name for service in repo.FEATURE_SERVICES}
    dropped = {name: versions for name, versions in kept.items() if name not in declared}
    if dropped:
        raise dg.Failure(
            "feature_repo/ no longer declares feature services that kept models are served through: "
            + "; ".join(f"{name} (models {', '.join(v)})" for name, v in sorted(dropped.items()))
            + ". Keep them, or delete those model versions first."
        )
    from sms_core.served_log.offline_store import ensure_log_tables

    store = feast.store()
    changes = registry.apply_repo(store, repo)
    services = {service.name: feature_names(service) for service in store.list_feature_services()}
    # Each service's log table (docs/served-log.md), in step with the services just applied.
    log_tables = ensure_log_tables(store)
    return dg.MaterializeResult(
        # What the registry holds is the feature repo at this code version, applied.
        data_version=dg.DataVersion(REGISTRY_CODE_VERSION),
        metadata={
            "project": store.project,
            "registry": feast.postgres.redacted(),
            "changed": any(k in changes for k in ("create", "update", "delete")),
            "changes": dg.MetadataValue.json(changes),
            "feature_services": dg.MetadataValue.json(services),
            "named_by_kept_models": dg.MetadataValue.json(kept),
            "log_tables": dg.MetadataValue.json(log_tables),
        },
    )


def feature_names(service: "FeatureService") -> list[str]:
    """The features a feature service serves, in its order."""
    return [f.name for view in service.feature_view_projections for f in view.features]


class OnlineStoreConfig(dg.Config):
    """How much of the offline feature table a run writes to Redis, and in how many pieces."""

    # True: every row, and away with whatever Redis holds beyond the table, whatever the watermark says
    # (what the hourly reconciliation runs).
    full_refresh: bool = False
    # Rows per piece: a sync of more rows fans out over steps that the executor runs side by side.
    piece_rows: int = Field(default=online_sync.PIECE_ROWS, gt=0)


# A short Redis outage is retried inside the run; a longer one fails it, and the catch-up sensor
# (sensors.py) starts the next run once Redis answers again.
ONLINE_STORE_RETRY = dg.RetryPolicy(
    max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


@dataclass(frozen=True)
class PlannedSync:
    """What the planning step hands the last one: the plan, the watermark it started from, and when."""

    plan: online_sync.Plan
    watermark_before: datetime | None
    started: float  # time.time(): the steps run in processes of their own


@dg.op(
    ins={"feast_registry": dg.In(dg.Nothing), "sms_features": dg.In(dg.Nothing)},
    out={"planned": dg.Out(PlannedSync), "pieces": dg.DynamicOut(online_sync.Piece)},
    retry_policy=ONLINE_STORE_RETRY,
    pool=STORES_POOL,
)
def plan_online_sync(
    config: OnlineStoreConfig, feast: FeastResource, postgres: PostgresResource
) -> Iterator[dg.Output | dg.DynamicOutput]:
    """Reads the watermark and splits the changes since then into pieces of about equal row counts."""
    started = time.time()
    redis_url = feast.redis.resolved_url()
    urls.check_redis(redis_url)
    watermark = online_sync.read_watermark(redis_url, feast.project_name())
    with postgres.connect() as conn:
        stale = rebuild_reason(conn)
        if stale:
            # Redis would take in rows of other feature code than the registry's.
            raise dg.Failure(
                f"{FEATURE_TABLE} is not current ({stale}): materialize sms_features first",
                allow_retries=False,
            )
        plan = online_sync.plan(
            conn, None if config.full_refresh else watermark, redis_url, feast.project_name()
        )
        pieces = online_sync.pieces(conn, plan, config.piece_rows)
    yield from planned(PlannedSync(plan, watermark, started), pieces, lambda piece: piece.name)


@dg.op(retry_policy=ONLINE_STORE_RETRY, pool=STORES_POOL)
def write_online_piece(
    piece: online_sync.Piece, feast: FeastResource, postgres: PostgresResource
) -> PieceWritten:
    """Writes one piece's rows to Redis through Feast."""
    started = time.time()
    redis_url = feast.redis.resolved_url()
    with postgres.connect() as conn:
        try:
            rows = online_sync.write_piece(feast.store(), conn, redis_url, piece)
        except redis.ResponseError as exc:
            # Redis answered, refusing (WRONGTYPE: a key holds a value Feast did not write): no outage to
            # wait out, so no retry.
            raise dg.Failure(
                f"Redis at {urls.redact(redis_url)} refused piece {piece.name}: {urls.first_line(exc)}; "
                "a key of the online store holds a value Feast did not write",
                allow_retries=False,
            ) from None
    return PieceWritten(rows, started, time.time())


@dg.op(out=dg.Out(dg.Nothing), retry_policy=ONLINE_STORE_RETRY, pool=STORES_POOL)
def finish_online_sync(
    context: dg.OpExecutionContext,
    synced: PlannedSync,
    written: list[PieceWritten],
    feast: FeastResource,
    postgres: PostgresResource,
) -> None:
    """Deletes the removed messages and moves the watermark: it runs only when every piece succeeded."""
    plan = synced.plan
    with postgres.connect() as conn:
        online_sync.finish(conn, feast.redis.resolved_url(), feast.project_name(), plan)
    rows = sum(piece.rows for piece in written)
    # Redis holds the offline table's changes up to this moment: the watermark is the data version.
    context.set_data_version(
        context.assets_def.key, dg.DataVersion(plan.through.isoformat() if plan.through else "empty")
    )
    context.add_output_metadata(
        {
            "changed": bool(rows or plan.removed),
            "rows_written": rows,
            "entities_removed": len(plan.removed),
            "first_removed_ids": dg.MetadataValue.json(plan.removed[:10]),
            "full_refresh": plan.full,
            "watermark_before": synced.watermark_before.isoformat() if synced.watermark_before else "",
            "watermark": plan.through.isoformat() if plan.through else "",
            "feature_view": FEATURE_VIEW,
            **summary(written, synced.started, time.time(), rows),
        }
    )


online_store = fan_out_asset(
    name="online_store",
    plan=plan_online_sync,
    piece=write_online_piece,
    finish=finish_online_sync,
    config=OnlineStoreConfig,
    # It reads the rows of sms_features, through the views the registry declares.
    ins={
        "feast_registry": dg.AssetIn(dagster_type=dg.Nothing),
        "sms_features": dg.AssetIn(dagster_type=dg.Nothing),
    },
    group_name="feature_store",
    kinds={"feast", "redis"},
    description="Redis holding every message's sms_base_features row, and nothing else, synced from a "
    "watermark: planned once, written in pieces side by side, finished (removals, watermark) when all "
    "succeeded.",
    automation_condition=dg.AutomationCondition.eager(),
)


# Synced by every arrival and at least hourly by the reconciliation, so two hours without a sync means
# the automation or the daemon is stuck.
online_store = online_store.map_asset_specs(
    lambda spec: dg.apply_freshness_policy(
        spec,
        dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=2), warn_window=timedelta(minutes=75)),
    )
)
