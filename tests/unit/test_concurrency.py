"""Runs that share a store are kept apart by Dagster's concurrency pools: every asset and check names
its pool, and both instance configurations the project ships give each pool one slot per run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import yaml

from sms_assets import local_instance
from sms_assets.definitions import defs
from sms_assets.defs.ingestion.arrivals import ingest_arrivals
from sms_assets.defs.shared import LANDING_POOL, POOLS, SERVED_LOG_POOL, STORES_POOL
from tests.conftest import PROJECT_ROOT


def test_every_asset_and_check_names_the_pool_of_what_it_writes_or_compares() -> None:
    nodes = [*(defs.assets or []), *(defs.asset_checks or [])]
    # Every op, the steps of a graph-backed asset (online_store's plan, pieces and finish) included.
    pools = {op.name: op.pool for node in nodes for op in node.node_def.iterate_op_defs()}
    assert set(pools.values()) == set(POOLS)
    # Only the ingestion moves files in the landing folder and writes the arrival tables.
    assert {name for name, pool in pools.items() if pool == LANDING_POOL} == {ingest_arrivals.op.name}
    # Only the served log's intake, its statistics and its three checks write the served log's tables.
    served = {name for name, pool in pools.items() if pool == SERVED_LOG_POOL}
    assert served == {
        "served_log",
        "served_feature_metrics",
        "served_log_served_features_match_offline",
        "served_log_served_traffic_like_training",
        "served_log_served_quality_holds",
    }
    others = {ingest_arrivals.op.name, *served}
    assert all(pool == STORES_POOL for name, pool in pools.items() if name not in others)


def job_pools(name: str) -> set[str]:
    return {op.pool for op in defs.resolve_job_def(name).graph.iterate_op_defs() if op.pool}


def test_the_served_log_job_holds_a_pool_no_other_scheduled_job_takes() -> None:
    # Its own pool only: an arrivals run, a sync, a reconciliation or a retrain goes beside it...
    assert job_pools("served_log_job") == {SERVED_LOG_POOL}
    for job in ("arrivals_job", "reconcile_online_store_job", "retrain_job", "full_checks_job"):
        assert SERVED_LOG_POOL not in job_pools(job), job
    # ...and one slot per run: a second intake waits for the first, and the whole graph, which takes
    # the served log in too, waits for it (or it for the graph).
    assert SERVED_LOG_POOL in job_pools(defs.resolve_implicit_global_asset_job_def().name)


def concurrency_section(text: str) -> dict[str, object]:
    return yaml.safe_load(text)["concurrency"]


def test_the_local_instance_has_the_same_pools_section_as_the_compose_one() -> None:
    compose = concurrency_section((PROJECT_ROOT / "deploy" / "compose" / "dagster.yaml").read_text())
    assert compose == concurrency_section(local_instance.DAGSTER_YAML)
    assert compose == {"pools": {"granularity": "run", "default_limit": 1}}


def assert_one_slot_per_pool_per_run(instance: dg.DagsterInstance) -> None:
    config = instance.get_concurrency_config()
    assert config.pool_config.pool_granularity is not None
    assert config.pool_config.pool_granularity.value == "run"
    assert config.pool_config.default_pool_limit == 1


def test_sms_assets_writes_the_local_instance_config_where_there_is_none(tmp_path: Path) -> None:
    home = local_instance.home({"DAGSTER_HOME": str(tmp_path / "home")})
    assert (home / "dagster.yaml").read_text() == local_instance.DAGSTER_YAML
    # Dagster reads it through its own config schema.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert_one_slot_per_pool_per_run(instance)
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert instance.run_coordinator.dequeue_interval_seconds == 1
    local_instance.set_pool_limits(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        limits = {pool.name: pool.limit for pool in instance.event_log_storage.get_pool_limits()}
    assert limits == dict.fromkeys(POOLS, 1)


def test_an_instance_config_an_earlier_sms_assets_wrote_is_brought_up_to_date(tmp_path: Path) -> None:
    earlier = local_instance.DAGSTER_YAML.split("run_coordinator:")[0]
    (tmp_path / "dagster.yaml").write_text(earlier)
    local_instance.home({"DAGSTER_HOME": str(tmp_path)})
    assert (tmp_path / "dagster.yaml").read_text() == local_instance.DAGSTER_YAML


def test_an_instance_config_of_ones_own_is_left_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    local_instance.home({"DAGSTER_HOME": str(tmp_path)})
    assert (tmp_path / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"


OPEN_AS_RUN_DOES = """
import sys
from sms_assets import local_instance
local_instance.set_pool_limits(local_instance.home({"DAGSTER_HOME": sys.argv[1]}))
"""
OPEN_ONCE_CONFIG_APPEARS = """
import sys, time
import subprocess
import sys
from pathlib import Path
import dagster as dg
while not (Path(sys.argv[1]) / "dagster.yaml").exists():
    time.sleep(0.001)
dg.DagsterInstance.from_config(sys.argv[1]).dispose()
"""


def test_processes_opening_a_new_instance_at_once_all_get_it(tmp_path: Path) -> None:
    """`sms-assets run`, `dev` and a watcher of the folder (the tests') start on a new instance together."""
    home = tmp_path / "home"
    scripts = [OPEN_AS_RUN_DOES, OPEN_AS_RUN_DOES, OPEN_ONCE_CONFIG_APPEARS, OPEN_ONCE_CONFIG_APPEARS]
    started = [
        subprocess.Popen([sys.executable, "-c", script, str(home)], stderr=subprocess.PIPE, text=True)
        for script in scripts
    ]
    failed = [process.communicate(timeout=120)[1] for process in started if process.wait(timeout=120)]
    assert failed == [], failed[0][-2000:]
    assert (home / "dagster.yaml").read_text() == local_instance.DAGSTER_YAML
