"""`sms-assets dev` starts the arrivals worker: once it is ready, a landed batch is taken by a run of
arrivals_job that the worker runs on dev's instance (the sensor names the worker and leaves it the
batch), and SIGTERM to dev stops the worker with everything else."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from sms_assets.arrivals_worker import WORKER_TAG
from sms_assets.defs.ingestion.batches import MESSAGES_HEADER
from sms_assets.defs.ingestion.landing import LandingFolder
from sms_core.embedded import free_port, wait_until
from tests.conftest import Services, new_slice
from tests.processes import instance_of, project_env, started, stopped, wait_for_http

pytestmark = pytest.mark.e2e


@pytest.fixture
def fresh_slice(server_urls: tuple[str, str], tmp_path: Path) -> Iterator[Services]:
    with new_slice(server_urls, tmp_path / "state") as slice_:
        yield slice_


def worker_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return [run for run in instance.get_runs() if WORKER_TAG in run.tags]


def holds(condition: object, what: str) -> None:
    if not condition:
        raise AssertionError(f"not yet: {what}")


def test_dev_starts_the_worker_which_takes_a_landed_batch_in_a_run_of_its_own(
    fresh_slice: Services, tmp_path: Path
) -> None:
    env = project_env(fresh_slice)
    port, log = free_port(), tmp_path / "dev.log"
    folder = LandingFolder(Path(env["SMS_LANDING_DIR"]))
    with started(["dev", "--port", str(port)], env, log) as dev, instance_of(fresh_slice) as instance:
        wait_for_http(dev, f"http://127.0.0.1:{port}/server_info", log)

        def ready() -> None:
            pid = folder.watcher()
            holds(pid and f"arrivals worker (pid {pid}) ready" in log.read_text(), "the worker is ready")

        wait_until(ready, timeout_s=300)

        folder.land("first.tsv", MESSAGES_HEADER, [("worker-1", datetime.now(UTC), "see you at 5")])
        wait_until(lambda: holds(worker_runs(instance), "a run of the worker's"), timeout_s=300)
        [run] = worker_runs(instance)

        def finished_run() -> dg.DagsterRun:
            found = instance.get_run_by_id(run.run_id)
            holds(found and found.is_finished, f"run {run.run_id} has finished")
            assert found is not None
            return found

        wait_until(finished_run, timeout_s=300)
        finished = finished_run()
        assert finished is not None and finished.status == dg.DagsterRunStatus.SUCCESS
        assert finished.job_name == "arrivals_job"
        # Before the initial load there is nothing to carry a batch into: the run only ingests.
        assert {key.to_user_string() for key in finished.asset_selection or []} == {
            "sms_arrivals",
            "sms_arrival_labels",
        }
        assert (folder.processed / "first.tsv").exists()
        assert [run.run_id for run in instance.get_runs() if run.job_name == "arrivals_job"] == [run.run_id]

        assert stopped(dev, signal.SIGTERM, port, log) == []
    # The worker's lock went with it: the sensor takes the batches again.
    assert folder.watcher() is None
