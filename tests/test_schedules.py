"""What runs by itself, as the code location declares it: jobs, schedules, sensors, conditions, freshness."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from sms_assets import automation
from sms_assets.definitions import defs


def job_assets(name: str) -> set[str]:
    job = defs.resolve_job_def(name)
    return {key.to_user_string() for key in job.asset_layer.selected_asset_keys}


def test_jobs_select_the_assets_they_are_named_for() -> None:
    assert job_assets("arrivals_job") == {"sms_arrivals", "sms_arrival_labels"}
    assert job_assets("retrain_job") == {"training_set", "spam_model"}
    assert job_assets("reconcile_online_store_job") == {"online_store"}


@pytest.mark.parametrize(
    ("name", "job", "cron"),
    [
        ("nightly_retrain", "retrain_job", "0 2 * * *"),
        ("online_store_reconciliation", "reconcile_online_store_job", "30 * * * *"),
    ],
)
def test_schedules_run_their_job_on_cron_in_an_explicit_time_zone(name: str, job: str, cron: str) -> None:
    schedule = defs.resolve_schedule_def(name)
    assert (schedule.job_name, schedule.cron_schedule, schedule.execution_timezone) == (job, cron, "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.build_schedule_context(scheduled_execution_time=datetime(2026, 5, 1, 2, tzinfo=UTC)) as context:
        [request] = schedule.evaluate_tick(context).run_requests or []
    # The run config a tick produces is one the job accepts.
    dg.validate_run_config(defs.resolve_job_def(job), request.run_config)


def test_reconciliation_materializes_every_row() -> None:
    schedule = defs.resolve_schedule_def("online_store_reconciliation")
    with dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 5, 1, 2, 30, tzinfo=UTC)
    ) as context:
        [request] = schedule.evaluate_tick(context).run_requests or []
    job = defs.resolve_job_def("reconcile_online_store_job")
    resolved = dg.validate_run_config(job, request.run_config)
    assert resolved["ops"]["online_store"]["config"]["full_refresh"] is True


def test_sensors_start_switched_on() -> None:
    sensors = {sensor.name: sensor for sensor in defs.sensors or []}
    assert set(sensors) == {"arrivals_sensor", "feature_store_catch_up", "sms_automation"}
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in sensors.values())
    assert isinstance(sensors["sms_automation"], dg.AutomationConditionSensorDefinition)
    assert defs.resolve_sensor_def("arrivals_sensor").job_name == "arrivals_job"


def test_features_and_redis_follow_their_parents_and_nothing_else_does() -> None:
    graph = defs.resolve_asset_graph()
    conditions = {
        key.to_user_string(): graph.get(key).automation_condition for key in graph.get_all_asset_keys()
    }
    eager = dg.AutomationCondition.eager()
    assert conditions["feast_registry"] == conditions["online_store"] == eager
    # The features follow new messages even while another ingestion is in progress.
    assert conditions["sms_features"] == automation.FOLLOW_NEW_MESSAGES
    assert "any_deps_in_progress" not in str(automation.FOLLOW_NEW_MESSAGES)
    assert "any_deps_missing" in str(automation.FOLLOW_NEW_MESSAGES)
    # Retraining is the nightly schedule's job, not a reaction to every arrival.
    followers = {key.to_user_string() for key in automation.AUTOMATION_CONDITIONS}
    assert all(condition is None for name, condition in conditions.items() if name not in followers)


def test_freshness_policies() -> None:
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("online_store")).freshness_policy == dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=2), warn_window=timedelta(minutes=75)
    )
    assert graph.get(dg.AssetKey("spam_model")).freshness_policy == dg.FreshnessPolicy.cron(
        deadline_cron="0 4 * * *", lower_bound_delta=timedelta(hours=4), timezone="UTC"
    )


def test_online_store_retries_a_redis_outage() -> None:
    policy = defs.resolve_assets_def("online_store").op.retry_policy
    assert policy is not None and policy.max_retries == 3
