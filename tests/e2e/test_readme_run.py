"""The README's run command, end to end, as a newcomer runs it: the whole graph, then a prediction."""

import os
import random
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import httpx
import pytest

from sms_assets.launch import ASSET_JOB
from sms_core import embedded, feast_config, urls
from sms_core.contracts import VIEW_FEATURES
from sms_core.features.schema import FEATURE_NAMES
from sms_core.postgres import connect, query_frame
from tests.conftest import PROJECT_ROOT, Services, embedded_state_dir, new_slice
from tests.processes import materialized_assets

pytestmark = pytest.mark.e2e

ASSETS = (
    "raw_sms_messages",
    "sms_features",
    "feast_registry",
    "training_set",
    "spam_model",
    "online_store",
    "served_model",
)
UNKNOWN_ID = 999_999
PREDICTION = re.compile(r"^message 42: (ham|spam) \(p\(spam\)=(\d\.\d{3}), model ([0-9a-f]{16}),", re.M)


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def clean_env(**overrides: str) -> dict[str, str]:
    """The caller's environment without any SMS_* setting, plus the overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMS_") and k != "DAGSTER_HOME"}
    return {**env, **overrides}


@pytest.fixture
def fresh_slice(server_urls: tuple[str, str], tmp_path: Path) -> Iterator[Services]:
    with new_slice(server_urls, tmp_path / "state") as slice_:
        yield slice_


@dataclass(frozen=True)
class MadeRun:
    """A slice on which `make run` ran once, the environment it ran with, and what it printed."""

    slice_: Services
    env: dict[str, str]
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def made_run(server_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[MadeRun]:
    folder = tmp_path_factory.mktemp("make_run")
    with new_slice(server_urls, folder / "state") as slice_:
        (folder / "dagster_home").mkdir()
        env = clean_env(**slice_.env(), DAGSTER_HOME=str(folder / "dagster_home"))
        yield MadeRun(slice_, env, run(["make", "run"], env))


def test_make_run_materializes_everything_then_predicts(made_run: MadeRun) -> None:
    slice_, env, result = made_run.slice_, made_run.env, made_run.result
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "$ dg launch --assets '*'" in result.stdout
    assert PREDICTION.search(result.stdout), result.stdout[-2000:]
    # The run's record, not its console: step processes' output reaches the console through `tail`,
    # which can drop a step's last lines (dagster-io/dagster#23336).
    run_id, materialized, checks = run_record(Path(env["DAGSTER_HOME"]))
    assert set(ASSETS) <= materialized, (run_id, materialized)
    assert checks and all(checks.values()), (run_id, checks)

    # Online features for a sample of ids equal the offline feature table, value for value.
    sample = sorted(random.Random(7).sample(range(1, 5575), 200))
    store = feast_config.feature_store(slice_.postgres_url, slice_.redis_url, slice_.feast_project)
    online = store.get_online_features(
        features=VIEW_FEATURES,
        entity_rows=[{"message_id": i} for i in sample],
    ).to_df()
    with connect(slice_.postgres_url) as conn:
        offline = query_frame(
            conn, f"SELECT * FROM sms_features WHERE message_id IN ({','.join(map(str, sample))})"
        )
    online = online.set_index("message_id").sort_index()[list(FEATURE_NAMES)]
    offline = offline.set_index("message_id").sort_index()[list(FEATURE_NAMES)]
    assert online.index.tolist() == sample
    assert (online.to_numpy() == offline.to_numpy()).all()

    # The same command again converges: the registry is unchanged and the prediction is the same.
    again = run(["make", "run"], env)
    assert again.returncode == 0, again.stderr[-3000:]
    first, second = PREDICTION.search(result.stdout), PREDICTION.search(again.stdout)
    assert first and second and first.group(1, 2) == second.group(1, 2)

    # Then the prediction service answers both request forms with the model the run served.
    with serve(env) as api:
        known = api.post("/predict", json={"message_id": 42})
        assert known.status_code == 200, known.text
        assert (known.json()["label"], known.json()["model_version"]) == (second.group(1), second.group(3))
        new = api.post("/predict", json={"text": "Your a winner! Call 09061701461 to claim"})
        assert new.status_code == 200, new.text
        assert new.json()["model_version"] == second.group(3)


def run_record(dagster_home: Path) -> tuple[str, set[str], dict[str, bool]]:
    """The latest whole-graph run on the instance: its id, the assets it materialized, and whether each of
    its checks passed."""
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        [latest] = instance.get_runs(filters=dg.RunsFilter(job_name=ASSET_JOB), limit=1)
        assert latest.status == dg.DagsterRunStatus.SUCCESS, latest.status
        events = [log.dagster_event for log in instance.all_logs(latest.run_id) if log.dagster_event]
    finally:
        instance.dispose()
    checks = {
        event.asset_check_evaluation_data.check_name: event.asset_check_evaluation_data.passed
        for event in events
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }
    return latest.run_id, materialized_assets(events), checks


@contextmanager
def serve(env: dict[str, str]) -> Iterator[httpx.Client]:
    """`sms-assets serve` on a free port, once it reports ready; stopped afterwards."""
    port = embedded.free_port()
    process = subprocess.Popen(
        [".venv/bin/sms-assets", "serve", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

            def ready_or_exited() -> None:
                if process.poll() is None:
                    client.get("/ready").raise_for_status()

            embedded.wait_until(ready_or_exited, timeout_s=120, interval_s=0.2)
            assert process.poll() is None, process.communicate()[0][-3000:]
            yield client
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_unknown_message_id_is_a_clear_error(made_run: MadeRun) -> None:
    """On a slice with a served model and every message online, an id Redis does not hold."""
    assert made_run.result.returncode == 0, made_run.result.stderr[-3000:]
    result = run([".venv/bin/sms-assets", "predict", "--message-id", str(UNKNOWN_ID)], made_run.env)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout == ""
    # The README's words, one line naming the id.
    assert result.stderr.strip().splitlines() == [
        f"error: no online features for message_id {UNKNOWN_ID}: unknown id, or not materialized"
    ]


def test_embedded_services_when_urls_are_unset(dataset_path: Path) -> None:
    with embedded_state_dir() as state:
        check_embedded_run(state, dataset_path)


def check_embedded_run(state: Path, dataset_path: Path) -> None:
    env = clean_env(SMS_STATE_DIR=str(state), SMS_DATASET_PATH=str(dataset_path))
    try:
        result = run([".venv/bin/sms-assets", "run"], env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert PREDICTION.search(result.stdout), result.stdout[-2000:]
        status = run([".venv/bin/sms-assets", "services", "status"], env)
        [postgres] = re.findall(r"^SMS_POSTGRES_URL: (\S+)$", status.stdout, re.M)
        assert urls.postgres(postgres).query["host"] == str(state / "postgres"), postgres
        assert re.search(r"SMS_REDIS_URL: redis://127\.0\.0\.1:\d+/0", status.stdout)
        unknown = run([".venv/bin/sms-assets", "predict", "--message-id", str(UNKNOWN_ID)], env)
        assert unknown.returncode == 2
        assert f"no online features for message_id {UNKNOWN_ID}" in unknown.stderr
        assert "Traceback" not in unknown.stderr
    finally:
        down = run([".venv/bin/sms-assets", "services", "down"], env)
    assert down.returncode == 0, down.stderr
    assert "stopped redis" in down.stdout and "stopped postgres" in down.stdout
    with pytest.raises(urls.ServiceUnavailable):
        urls.check_redis(re.search(r"\((redis://[^)]+)\)", down.stdout).group(1))  # type: ignore[union-attr]


def test_missing_dataset_is_one_clear_line(fresh_slice: Services, tmp_path: Path) -> None:
    env = clean_env(**{**fresh_slice.env(), "SMS_DATASET_PATH": str(tmp_path / "missing.tsv")})
    result = run([".venv/bin/sms-assets", "run"], env)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: SMS_DATASET_PATH={tmp_path / 'missing.tsv'} does not name a file"
    assert "dg launch" not in result.stdout


def test_a_malformed_dataset_fails_the_run_naming_the_step_the_file_and_the_line(
    fresh_slice: Services, tmp_path: Path, dataset_path: Path
) -> None:
    dataset = tmp_path / "SMSSpamCollection"
    dataset.write_text("".join(dataset_path.read_text().splitlines(keepends=True)[:20]) + "no tab here\n")
    env = clean_env(**{**fresh_slice.env(), "SMS_DATASET_PATH": str(dataset)})
    result = run([".venv/bin/sms-assets", "run"], env)
    assert result.returncode == 1, result.stdout[-3000:]
    assert re.fullmatch(
        r"error: step raw_sms_messages failed: "
        r"sms_assets\.defs\.ingestion\.dataset\.DatasetError: "
        + re.escape(f"{dataset}:21: expected 2 tab-separated fields (label, text), found 1"),
        result.stderr.strip().splitlines()[-1],
    ), result.stderr[-3000:]
    assert "message 42" not in result.stdout
    # Nothing half-written: the raw table was never swapped in.
    with connect(fresh_slice.postgres_url) as conn:
        assert conn.execute("SELECT to_regclass('raw_sms_messages')").fetchone() == (None,)
