"""Runs launched on top of each other through a real Dagster instance and daemon (`sms-assets dev`, the
local instance it writes, its queue): the whole graph, the two schedules' runs queued behind it, the
arrivals sensor's run and the whole graph again queued behind that (the sensor's way, without the
arrivals worker; tests/e2e/test_arrivals_worker.py has the worker's). The concurrency pools keep every two
runs that share a store apart; afterwards every run has succeeded, every check has passed and Redis
holds exactly what the offline table holds."""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from dagster_graphql import DagsterGraphQLClient

from sms_assets.definitions import defs
from sms_assets.defs.ingestion.batches import MESSAGES_HEADER, message_id_for
from sms_assets.defs.ingestion.landing import LandingFolder
from sms_assets.defs.shared import IN_FLIGHT
from sms_core import feast_config, online_keys
from sms_core.contracts import VIEW_FEATURES
from sms_core.embedded import free_port, wait_until
from sms_core.features.comparison import mismatches
from sms_core.features.schema import FEATURE_NAMES
from sms_core.postgres import connect, query_frame
from tests.conftest import Services, new_slice
from tests.processes import instance_of, project_env, started, stopped, wait_for_http, wait_for_step

pytestmark = pytest.mark.e2e

SETTLE_TIMEOUT_S = 1200
ARRIVING_TEXTS = ("Meeting moved to 3pm, see you there", "FREE entry!! Text WIN to 80086 now", "ok")


@pytest.fixture
def fresh_slice(server_urls: tuple[str, str], tmp_path: Path) -> Iterator[Services]:
    with new_slice(server_urls, tmp_path / "state") as slice_:
        yield slice_


def schedule_tick(client: DagsterGraphQLClient, name: str) -> str:
    """Submits the run a schedule's tick requests (its job, run config and tags), as the daemon would."""
    schedule = defs.resolve_schedule_def(name)
    with dg.build_schedule_context(scheduled_execution_time=datetime.now(UTC)) as context:
        [request] = schedule.evaluate_tick(context).run_requests or []
    return client.submit_job_execution(
        schedule.job_name,
        run_config=request.run_config,
        tags={**request.tags, "dagster/schedule_name": name},
    )


def whole_graph(client: DagsterGraphQLClient) -> str:
    """What "Materialize all" in the UI submits: every asset, with its checks."""
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    return client.submit_job_execution(
        "__ASSET_JOB", asset_selection=sorted(k.to_user_string() for k in keys)
    )


@dataclass(frozen=True)
class RunSpan:
    """When a finished run was queued, started and ended, and the pools its steps name."""

    run_id: str
    job: str
    status: dg.DagsterRunStatus
    pools: frozenset[str]
    created: float
    start: float
    end: float

    @staticmethod
    def of(record: dg.RunRecord) -> RunSpan:
        run = record.dagster_run
        assert record.start_time is not None and record.end_time is not None, run
        concurrency = run.run_op_concurrency
        return RunSpan(
            run.run_id,
            run.job_name,
            run.status,
            frozenset(concurrency.all_pools or ()) if concurrency else frozenset(),
            record.create_timestamp.timestamp(),
            record.start_time,
            record.end_time,
        )


def sensor_runs(instance: dg.DagsterInstance, sensor: str) -> Sequence[dg.DagsterRun]:
    return instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": sensor}))


def failures(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    events = instance.all_logs(
        run.run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}
    )
    return f"{run.run_id} {run.job_name} {run.status.value}: " + " | ".join(e.message[:500] for e in events)


def wait_until_settled(
    instance: dg.DagsterInstance, landing: LandingFolder, arrived: list[int], slice_: Services
) -> None:
    """Until no run is queued or in progress, the batch has left the landing folder and Redis serves
    its messages; fails at once, naming it, when a run fails."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        runs = instance.get_runs()
        failed = [run for run in runs if run.status == dg.DagsterRunStatus.FAILURE]
        assert not failed, "\n".join(failures(instance, run) for run in failed)
        in_flight = [run for run in runs if run.status in IN_FLIGHT]
        if not in_flight and not landing.pending() and set(arrived) <= online_ids(slice_):
            return
        assert time.monotonic() < deadline, f"not settled after {SETTLE_TIMEOUT_S} s: {in_flight}"
        time.sleep(2)


def online_ids(slice_: Services) -> set[int]:
    return set(online_keys.online_ids(slice_.redis_url, slice_.feast_project).tolist())


def offline_features(slice_: Services) -> pd.DataFrame:
    with connect(slice_.postgres_url) as conn:
        frame = query_frame(conn, f"SELECT message_id, {', '.join(FEATURE_NAMES)} FROM sms_features")
    return frame.set_index("message_id").sort_index()


def online_features(slice_: Services, ids: list[int]) -> pd.DataFrame:
    store = feast_config.feature_store(slice_.postgres_url, slice_.redis_url, slice_.feast_project)
    frame = store.get_online_features(
        features=VIEW_FEATURES, entity_rows=[{"message_id": i} for i in ids]
    ).to_df()
    return frame.set_index("message_id").sort_index()[list(FEATURE_NAMES)]


@pytest.mark.timeout(2400)
def test_overlapping_runs_are_serialized_by_their_pools_and_leave_the_stores_consistent(
    fresh_slice: Services, tmp_path: Path
) -> None:
    env = project_env(fresh_slice)
    port, log = free_port(), tmp_path / "dev.log"
    landing = LandingFolder(Path(env["SMS_LANDING_DIR"]))
    command = ["dev", "--port", str(port), "--without-arrivals-worker"]
    with started(command, env, log) as dev, instance_of(fresh_slice) as instance:
        wait_for_http(dev, f"http://127.0.0.1:{port}/server_info", log)
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)

        # The initial load, and both schedules' runs right behind it: run before the load, the
        # reconciliation and the retrain would find no feature table, no registry and no training data.
        first = whole_graph(client)
        reconcile = schedule_tick(client, "online_store_reconciliation")
        retrain = schedule_tick(client, "nightly_retrain")

        # Once the load has ingested (else it would take the batch itself), a batch lands and
        # arrivals_sensor asks for an ingestion; the whole graph again, right behind it.
        wait_for_step(instance, "ingest_arrivals", first, dg.DagsterEventType.STEP_SUCCESS)
        at = datetime.now(UTC)
        rows = [(f"overlap-{i}", at, text) for i, text in enumerate(ARRIVING_TEXTS)]
        landing.land("overlap.tsv", MESSAGES_HEADER, rows)
        arrived = [message_id_for(sms_id) for sms_id, _, _ in rows]
        wait_until(
            lambda: sensor_runs(instance, "arrivals_sensor")[0], timeout_s=SETTLE_TIMEOUT_S, interval_s=1
        )
        second = whole_graph(client)

        wait_until_settled(instance, landing, arrived, fresh_slice)
        spans = {span.run_id: span for span in map(RunSpan.of, instance.get_run_records())}

        # Every run succeeded: the two whole graphs, both schedules' and the sensor's (and any the
        # automation or the catch-up sensor added).
        assert {span.status for span in spans.values()} == {dg.DagsterRunStatus.SUCCESS}
        [ingestion] = [run.run_id for run in sensor_runs(instance, "arrivals_sensor")]
        assert spans[ingestion].job == "arrivals_job"
        assert {first, second, reconcile, retrain} <= set(spans)

        # Every run holds a pool, and no two runs that hold a common pool ran at the same time.
        assert all(span.pools for span in spans.values()), spans
        for a, b in itertools.combinations(spans.values(), 2):
            if a.pools & b.pools:
                assert a.end <= b.start or b.end <= a.start, f"{a} and {b} overlapped"

        # The pools are what held runs back: the schedules' behind the load (sms_stores), the second
        # whole graph behind the ingestion (sms_landing). Each was queued before the run ahead of it
        # had ended, started after it, and the daemon logged why.
        daemon_log = log.read_text()
        for ahead, held in ((first, reconcile), (first, retrain), (ingestion, second)):
            assert spans[held].created < spans[ahead].end <= spans[held].start, (spans[ahead], spans[held])
            assert f"Run {held} is blocked by global concurrency limits" in daemon_log

        # Every check of every run passed.
        evaluations = [
            event.asset_check_evaluation
            for run_id in spans
            for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        ]
        assert evaluations and all(e is not None and e.passed for e in evaluations)

        # The stores agree: Redis holds exactly the offline table's messages, the arrivals among them,
        # with the offline values.
        offline = offline_features(fresh_slice)
        assert online_ids(fresh_slice) == set(offline.index)
        assert set(arrived) <= set(offline.index)
        online = online_features(fresh_slice, offline.index.tolist())
        differs, max_difference = mismatches(online, offline)
        assert not differs.any(), max_difference

        assert stopped(dev, signal.SIGTERM, port, log) == []
