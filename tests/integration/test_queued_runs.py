"""A run waiting in the queue records its checks as planned; that must not hide the verdicts a run that
has already checked the data reached, or served_model refuses to promote in every busy hour."""

from typing import Any

import dagster as dg
import pytest

from sms_assets.defs.feature_store.checks import online_matches_offline
from sms_assets.defs.serving.assets import served_model
from tests.conftest import ALL_ASSETS
from tests.integration.conftest import slice_definitions

pytestmark = pytest.mark.integration


def test_a_waiting_run_does_not_hide_the_verdicts_that_let_served_model_promote(
    resources: dict[str, Any],
) -> None:
    with dg.instance_for_test() as instance:
        assert dg.materialize(ALL_ASSETS, resources=resources, instance=instance).success

        # The hourly reconciliation, created and not started yet (as in the queue): it plans
        # online_matches_offline.
        job = slice_definitions(resources).resolve_job_def("reconcile_online_store_job")
        waiting = instance.create_run_for_job(job)
        [key] = online_matches_offline.check_keys
        latest = instance.get_latest_asset_check_evaluation_record(key)
        assert latest is not None and latest.run_id == waiting.run_id and latest.status.value == "PLANNED"

        promoted = dg.materialize(
            [served_model], resources=resources, instance=instance, raise_on_error=False
        )
        assert promoted.success, [event.message for event in promoted.all_events if event.is_failure]
