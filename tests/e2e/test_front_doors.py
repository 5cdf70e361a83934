"""Dagster's own commands, as a user whose CI types them: with nothing exported but the two service
URLs (and the dataset file), or nothing but where the embedded servers run; a bad setting is one line.

Each test has a database and a Redis of its own: the default Feast project is what is under test, so
it may not share a key space with anyone."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sms_core import embedded
from sms_core.postgres import connect
from tests.conftest import PROJECT_ROOT, create_database, drop_database, embedded_state_dir

pytestmark = pytest.mark.e2e

BIN = PROJECT_ROOT / ".venv" / "bin"
ASSETS = {
    "raw_sms_messages",
    "sms_features",
    "feast_registry",
    "online_store",
    "training_set",
    "spam_model",
    "served_model",
}


def bare_env(**settings: str) -> dict[str, str]:
    """This machine's environment without any SMS_* setting or DAGSTER_HOME, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMS_", "DAGSTER_"))}
    return {**env, **settings}


def command(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # From the project root, as a user types them: Dagster keeps the run in a temporary instance there.
    return subprocess.run(
        args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )


@pytest.fixture
def own_services(server_urls: tuple[str, str]) -> Iterator[tuple[str, str]]:
    """A database on the test Postgres and a Redis server of this test's own."""
    with embedded_state_dir() as folder:
        postgres = create_database(server_urls[0])
        try:
            yield postgres, embedded.redis_url(folder)
        finally:
            drop_database(postgres)


def materialized_tables(postgres_url: str) -> set[str]:
    with connect(postgres_url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {name for (name,) in rows}


def test_dg_launch_and_dagster_asset_materialize_need_only_the_two_urls(
    own_services: tuple[str, str], dataset_path: Path, tmp_path: Path
) -> None:
    postgres, redis = own_services
    env = bare_env(
        SMS_POSTGRES_URL=postgres,
        SMS_REDIS_URL=redis,
        SMS_DATASET_PATH=str(dataset_path),
        # The model store and the landing folder; every other setting takes its default.
        SMS_STATE_DIR=str(tmp_path / "state"),
    )
    launched = command([str(BIN / "dg"), "launch", "--assets", "*"], env)
    assert launched.returncode == 0, launched.stderr[-4000:]
    assert "Traceback" not in launched.stderr
    assert {"raw_sms_messages", "sms_features", "sms_training_set"} <= materialized_tables(postgres)
    assert (tmp_path / "state" / "models" / "CURRENT").is_file()

    again = command(
        [str(BIN / "dagster"), "asset", "materialize", "--select", "*", "-m", "sms_assets.definitions"], env
    )
    assert again.returncode == 0, again.stderr[-4000:]
    assert "Traceback" not in again.stderr
    for asset in ASSETS:
        assert f"Materialized value {asset}" in again.stderr, asset


def test_with_nothing_exported_the_embedded_servers_serve_every_command(
    dataset_path: Path, tmp_path: Path
) -> None:
    with embedded_state_dir() as state:
        env = bare_env(SMS_STATE_DIR=str(state), SMS_DATASET_PATH=str(dataset_path))
        started = command([str(BIN / "sms-assets"), "services", "status"], env)
        assert started.returncode == 0, started.stderr
        checked = command([str(BIN / "dg"), "check", "defs"], env)
        assert checked.returncode == 0, checked.stderr[-3000:]
        launched = command([str(BIN / "dg"), "launch", "--assets", "raw_sms_messages,sms_features"], env)
        assert launched.returncode == 0, launched.stderr[-4000:]
        # The same embedded Postgres `services status` started, found again by the run's own processes.
        url = next(line.split(": ", 1)[1] for line in started.stdout.splitlines() if "POSTGRES_URL" in line)
        assert {"raw_sms_messages", "sms_features"} <= materialized_tables(url)


@pytest.mark.parametrize(
    ("setting", "value", "line"),
    [
        ("SMS_MAX_CONCURRENT", "zero", "error: SMS_MAX_CONCURRENT='zero': Input should be a valid integer"),
        ("SMS_REDIS_URL", "redis://cache:6379/x", "error: SMS_REDIS_URL database must be a number, got 'x'"),
        ("SMS_EXECUTOR", "kubernetes", "error: SMS_EXECUTOR='kubernetes': Input should be 'multiprocess'"),
    ],
)
@pytest.mark.parametrize(
    "front_door",
    [
        ["dg", "check", "defs"],
        ["dg", "launch", "--assets", "raw_sms_messages"],
        ["dagster", "asset", "materialize", "--select", "*", "-m", "sms_assets.definitions"],
    ],
)
def test_a_bad_setting_is_one_line_naming_it_from_every_front_door(
    front_door: list[str], setting: str, value: str, line: str
) -> None:
    result = command([str(BIN / front_door[0]), *front_door[1:]], bare_env(**{setting: value}))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [error] = [text for text in result.stderr.splitlines() if text.startswith("error: ")]
    assert error.startswith(line)
