"""What runs by itself, as the code location declares it: schedules, sensors, conditions, freshness."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from sms_assets.definitions import defs
from sms_assets.defs.feature_store.assets import FOLLOW_FEATURE_REPO
from sms_assets.defs.features.assets import FOLLOW_NEW_MESSAGES
from sms_assets.defs.resources import project_resources
from sms_assets.defs.serving.assets import served_model
from sms_assets.defs.serving.checks import served_predictions_match_offline
from sms_assets.defs.shared import STORES_POOL
from sms_assets.defs.training.assets import spam_model, training_set
from sms_assets.defs.training.checks import model_beats_floor_and_served, no_future_features
from sms_core import settings

EAGER = dg.AutomationCondition.eager()
# The assets that follow their parents, and how; every other asset waits for a schedule or a person.
CONDITIONS = {
    "sms_features": FOLLOW_NEW_MESSAGES,
    "feast_registry": FOLLOW_FEATURE_REPO,
    "online_store": EAGER,
}
FRESHNESS = {
    # Synced by every arrival and at least hourly by the reconciliation.
    "online_store": dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=2), warn_window=timedelta(minutes=75)
    ),
    # Retrained at 02:00; by 04:00 the model must be from after midnight.
    "spam_model": dg.FreshnessPolicy.cron(
        deadline_cron="0 4 * * *", lower_bound_delta=timedelta(hours=4), timezone="UTC"
    ),
    # Taken in every quarter of an hour.
    "served_log": dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=1), warn_window=timedelta(minutes=35)
    ),
}


# Settings given as values, so that a run config can be validated with no environment variable set.
SETTINGS = {
    settings.POSTGRES_ENV: "postgresql://postgres@127.0.0.1:5432/sms",
    settings.REDIS_ENV: "redis://127.0.0.1:6379/0",
    settings.PROJECT_ENV: "sms_assets",
    settings.STATE_ENV: "/var/lib/sms-assets/state",
    settings.MODEL_DIR_ENV: "/var/lib/sms-assets/models",
    settings.LANDING_ENV: "/var/lib/sms-assets/state/landing",
    settings.DATASET_ENV: "",
    settings.HOLDBACK_ENV: "0",
}


def job_with_resources(name: str) -> dg.JobDefinition:
    """The job as the code location defines it, its resources given as values instead of dg.EnvVars."""
    resolved = dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        resources=project_resources(settings.load(SETTINGS)),
    )
    return resolved.resolve_job_def(name)


def selected(selection: dg.AssetSelection | None) -> set[str]:
    assert selection is not None
    return {key.to_user_string() for key in selection.resolve(defs.resolve_asset_graph())}


@pytest.mark.parametrize(
    ("name", "job", "cron"),
    [
        ("nightly_retrain", "retrain_job", "0 2 * * *"),
        ("online_store_reconciliation", "reconcile_online_store_job", "30 * * * *"),
        ("full_checks", "full_checks_job", "15 3 * * *"),
        ("served_log_intake", "served_log_job", "*/15 * * * *"),
    ],
)
def test_schedules_run_their_job_on_cron_in_an_explicit_time_zone(name: str, job: str, cron: str) -> None:
    schedule = defs.resolve_schedule_def(name)
    assert (schedule.job_name, schedule.cron_schedule, schedule.execution_timezone) == (job, cron, "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.build_schedule_context(scheduled_execution_time=datetime(2026, 5, 1, 2, tzinfo=UTC)) as context:
        [request] = schedule.evaluate_tick(context).run_requests or []
    # The run config a tick produces is one the job accepts.
    dg.validate_run_config(job_with_resources(job), request.run_config)


def test_the_only_schedules_are_the_nightly_retrain_and_checks_the_reconciliation_and_the_served_log() -> (
    None
):
    assert {schedule.name for schedule in defs.schedules or []} == {
        "nightly_retrain",
        "full_checks",
        "online_store_reconciliation",
        "served_log_intake",
    }


def test_reconciliation_materializes_every_row() -> None:
    schedule = defs.resolve_schedule_def("online_store_reconciliation")
    with dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 5, 1, 2, 30, tzinfo=UTC)
    ) as context:
        [request] = schedule.evaluate_tick(context).run_requests or []
    resolved = dg.validate_run_config(job_with_resources("reconcile_online_store_job"), request.run_config)
    # The graph's config reaches its planning step, which decides what is written.
    assert resolved["ops"]["online_store.plan_online_sync"]["config"]["full_refresh"] is True


def test_the_nightly_checks_verify_every_row() -> None:
    schedule = defs.resolve_schedule_def("full_checks")
    with dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 5, 1, 3, 15, tzinfo=UTC)
    ) as context:
        [request] = schedule.evaluate_tick(context).run_requests or []
    resolved = dg.validate_run_config(job_with_resources("full_checks_job"), request.run_config)
    assert {op: config["config"]["full"] for op, config in resolved["ops"].items()} == {
        "online_store_online_matches_offline": True,
        "feast_registry_request_features_match_batch": True,
        "served_model_served_predictions_match_offline": True,
        "training_set_no_future_features": True,
    }


def test_sensors_start_switched_on_and_target_what_they_should() -> None:
    sensors = {sensor.name: sensor for sensor in defs.sensors or []}
    assert set(sensors) == {"arrivals_sensor", "feature_store_catch_up", "sms_automation"}
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in sensors.values())

    arrivals = defs.resolve_sensor_def("arrivals_sensor")
    assert arrivals.job_name == "arrivals_job"
    assert arrivals.minimum_interval_seconds == 5

    catch_up = defs.resolve_sensor_def("feature_store_catch_up")
    assert selected(catch_up.asset_selection) == {"sms_features", "feast_registry", "online_store"}
    assert catch_up.minimum_interval_seconds == 30

    automation = defs.resolve_sensor_def("sms_automation")
    assert isinstance(automation, dg.AutomationConditionSensorDefinition)
    assert selected(automation.asset_selection) == {
        key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()
    }
    assert automation.minimum_interval_seconds == 10


def test_features_and_redis_follow_their_parents_and_nothing_else_does() -> None:
    graph = defs.resolve_asset_graph()
    conditions = {
        key.to_user_string(): graph.get(key).automation_condition for key in graph.get_all_asset_keys()
    }
    assert {name: c for name, c in conditions.items() if c is not None} == CONDITIONS
    # Retraining is the nightly schedule's job, not a reaction to every arrival.
    assert conditions["training_set"] is None and conditions["spam_model"] is None


def test_features_follow_new_messages_even_while_an_ingestion_is_in_progress() -> None:
    assert FOLLOW_NEW_MESSAGES.get_label() == "eager, even while arrivals are being ingested"
    in_progress_guard = ~dg.AutomationCondition.any_deps_in_progress()
    # eager() less exactly its wait for runs of the parents in progress: the features do not starve
    # under a steady stream of arrivals.
    assert in_progress_guard in EAGER.children
    assert [c for c in EAGER.children if c not in FOLLOW_NEW_MESSAGES.children] == [in_progress_guard]
    assert all(c in EAGER.children for c in FOLLOW_NEW_MESSAGES.children)
    # Still never run on top of a parent that has never been materialized.
    assert ~dg.AutomationCondition.any_deps_missing() in FOLLOW_NEW_MESSAGES.children


def test_each_asset_declares_its_own_automation_condition_and_freshness_policy() -> None:
    # What the graph shows is what the asset objects declare: nothing is added when the domains merge.
    graph = defs.resolve_asset_graph()
    for asset in defs.assets or []:
        assert isinstance(asset, dg.AssetsDefinition)
        for spec in asset.specs:
            node = graph.get(spec.key)
            assert spec.automation_condition == node.automation_condition, spec.key
            assert spec.freshness_policy == node.freshness_policy, spec.key


def test_freshness_policies() -> None:
    graph = defs.resolve_asset_graph()
    policies = {key.to_user_string(): graph.get(key).freshness_policy for key in graph.get_all_asset_keys()}
    assert {name: p for name, p in policies.items() if p is not None} == FRESHNESS


def test_online_store_retries_a_redis_outage() -> None:
    graph = defs.resolve_assets_def("online_store").node_def
    assert isinstance(graph, dg.GraphDefinition)
    # Every step of the sync: the plan, each piece and the finish.
    assert {node.name for node in graph.nodes} == {
        "plan_online_sync",
        "write_online_piece",
        "finish_online_sync",
    }
    for node in graph.nodes:
        op = node.definition
        assert isinstance(op, dg.OpDefinition)
        policy = op.retry_policy
        assert policy is not None and policy.max_retries == 3, op.name
        assert policy.backoff == dg.Backoff.EXPONENTIAL
        assert op.pool == STORES_POOL, op.name
        # Behind the training branch when both wait for the executor: it is the longer chain.
        assert "dagster/priority" not in op.tags, op.name
    chain = [training_set, no_future_features, spam_model, model_beats_floor_and_served, served_model]
    for step in [*chain, served_predictions_match_offline]:
        assert step.op.tags["dagster/priority"] == "1", step.op.name
