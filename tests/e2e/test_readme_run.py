"""The README's run command, end to end, as a newcomer runs it: the whole graph, then a prediction."""

import contextlib
import os
import random
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from sms_assets import feast_store, services
from sms_assets.features import FEATURE_COLUMNS
from sms_assets.postgres import connect, query_frame
from tests.conftest import (
    PROJECT_ROOT,
    Services,
    create_database,
    delete_feast_keys,
    drop_database,
    embedded_state_dir,
)
from tests.tcp_proxy import free_port

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
    slice_ = Services(
        postgres_url=create_database(server_urls[0]),
        redis_url=server_urls[1],
        feast_project=f"e2e_{os.urandom(5).hex()}",
        state_dir=tmp_path / "state",
    )
    yield slice_
    drop_database(slice_.postgres_url)
    delete_feast_keys(slice_.redis_url, slice_.feast_project)


def test_make_run_materializes_everything_then_predicts(fresh_slice: Services, tmp_path: Path) -> None:
    env = clean_env(**fresh_slice.env(), DAGSTER_HOME=str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    result = run(["make", "run"], env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "$ dagster asset materialize --select '*' -m sms_assets" in result.stdout
    assert PREDICTION.search(result.stdout), result.stdout[-2000:]
    for asset in ASSETS:
        assert f'Finished execution of step "{asset}"' in result.stderr

    # Online features for a sample of ids equal the offline feature table, value for value.
    sample = sorted(random.Random(7).sample(range(1, 5575), 200))
    store = feast_store.feature_store(
        fresh_slice.postgres_url, fresh_slice.redis_url, fresh_slice.feast_project
    )
    online = store.get_online_features(
        features=store.get_feature_service(feast_store.FEATURE_SERVICE),
        entity_rows=[{"message_id": i} for i in sample],
    ).to_df()
    with connect(fresh_slice.postgres_url) as conn:
        offline = query_frame(
            conn, f"SELECT * FROM sms_features WHERE message_id IN ({','.join(map(str, sample))})"
        )
    online = online.set_index("message_id").sort_index()[list(FEATURE_COLUMNS)]
    offline = offline.set_index("message_id").sort_index()[list(FEATURE_COLUMNS)]
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


@contextmanager
def serve(env: dict[str, str]) -> Iterator[httpx.Client]:
    """`sms-assets serve` on a free port, once it reports ready; stopped afterwards."""
    port = free_port()
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
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, process.communicate()[0][-3000:]
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/ready").status_code == 200:
                        break
                assert time.monotonic() < deadline, "sms-assets serve never became ready"
                time.sleep(0.2)
            yield client
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_unknown_message_id_is_a_clear_error(fresh_slice: Services) -> None:
    env = clean_env(**fresh_slice.env())
    result = run([".venv/bin/sms-assets", "predict", "--message-id", "42"], env)
    assert result.returncode == 2
    assert "no served model" in result.stderr
    assert "Traceback" not in result.stderr


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
        assert f"?host={state / 'postgres'}" in status.stdout
        assert re.search(r"SMS_REDIS_URL: redis://127\.0\.0\.1:\d+/0", status.stdout)
        unknown = run([".venv/bin/sms-assets", "predict", "--message-id", "999999"], env)
        assert unknown.returncode == 2
        assert "no online features for message_id 999999" in unknown.stderr
        assert "Traceback" not in unknown.stderr
    finally:
        down = run([".venv/bin/sms-assets", "services", "down"], env)
    assert down.returncode == 0, down.stderr
    assert "stopped redis" in down.stdout and "stopped postgres" in down.stdout
    with pytest.raises(services.ServiceUnavailable):
        services.check_redis(re.search(r"\((redis://[^)]+)\)", down.stdout).group(1))  # type: ignore[union-attr]


def test_missing_dataset_is_one_clear_line(fresh_slice: Services, tmp_path: Path) -> None:
    env = clean_env(**{**fresh_slice.env(), "SMS_DATASET_PATH": str(tmp_path / "missing.tsv")})
    result = run([".venv/bin/sms-assets", "run"], env)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: SMS_DATASET_PATH={tmp_path / 'missing.tsv'} does not name a file"
    assert "dagster asset materialize" not in result.stdout
