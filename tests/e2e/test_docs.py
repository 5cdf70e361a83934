"""Every ```console command in README.md and docs/ prints what the docs show (tests/doc_blocks.py).

In a fresh slice: the whole graph once (`sms-assets run`, which is also the README's example of what
`make run` prints), then `sms-assets serve` with a token for the API's examples (`$API`), then every
command in the order the pages give them, with the virtualenv's bin first on PATH as if activated.
Beside it, Dagster's own `dagster asset materialize` with nothing exported but the two URLs.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sms_assets.definitions import defs
from sms_core import embedded, settings
from tests import doc_blocks
from tests.conftest import PROJECT_ROOT, Services, new_slice
from tests.e2e.test_readme_run import ASSETS, clean_env, run_record

pytestmark = pytest.mark.e2e

COMMANDS = doc_blocks.all_commands()
# The README's example of `make run`: run once, first, and its output matched like any other.
GRAPH_RUN = "sms-assets run"
TOKEN = "docs-example-token-0123456789"
VENV_BIN = PROJECT_ROOT / ".venv" / "bin"
COMMAND_TIMEOUT_S = 600
# Every check the definitions declare runs in a whole-graph materialization.
DEFINED_CHECKS = {key.name for key in defs.resolve_asset_graph().asset_check_keys}


def user_env(slice_: Services, dataset: Path, **more: str) -> dict[str, str]:
    """What a reader has set: the two URLs and the dataset, plus the slice's own project and state
    folder (so nothing meets another test), and the virtualenv activated."""
    return clean_env(
        **{
            settings.POSTGRES_ENV: slice_.postgres_url,
            settings.REDIS_ENV: slice_.redis_url,
            settings.PROJECT_ENV: slice_.feast_project,
            settings.STATE_ENV: str(slice_.state_dir),
            settings.DATASET_ENV: str(dataset),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(VENV_BIN.parent),
            # Help texts and tables are as wide as an 80-column terminal, whoever runs the tests.
            "COLUMNS": "80",
            **more,
        }
    )


def shell(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


@dataclass(frozen=True)
class Ran:
    env: dict[str, str]
    graph_output: str


@pytest.fixture(scope="module")
def ran(
    server_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory, dataset_path: Path
) -> Iterator[Ran]:
    with new_slice(server_urls, tmp_path_factory.mktemp("docs") / "state") as slice_:
        env = user_env(slice_, dataset_path, **{settings.API_TOKEN_ENV: TOKEN})
        graph = shell(GRAPH_RUN, env)
        assert graph.returncode == 0, graph.stdout[-4000:]
        yield Ran(env, graph.stdout)


@pytest.fixture(scope="module")
def api(ran: Ran) -> Iterator[str]:
    """`sms-assets serve` on a free port with the token, once /ready says so."""
    port = embedded.free_port()
    process = subprocess.Popen(
        ["sms-assets", "serve", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=ran.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> None:
            assert process.poll() is None, "sms-assets serve exited"
            httpx.get(f"{url}/ready", timeout=5).raise_for_status()

        embedded.wait_until(ready, timeout_s=180, interval_s=0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: command.id)
def test_the_command_prints_what_the_docs_show(
    command: doc_blocks.Command, ran: Ran, request: pytest.FixtureRequest
) -> None:
    if command.command == GRAPH_RUN:
        printed = ran.graph_output
    else:
        env = dict(ran.env)
        if "$API" in command.command:
            env["API"] = request.getfixturevalue("api")
        printed = shell(command.command, env).stdout
    assert doc_blocks.matches(command.expected, printed), (
        f"{command.id}: $ {command.command}\n--- the docs show:\n"
        + "\n".join(command.expected)
        + f"\n--- it printed:\n{printed[-4000:]}"
    )


def test_dagsters_own_commands_need_nothing_but_the_two_urls(
    server_urls: tuple[str, str], tmp_path: Path, dataset_path: Path
) -> None:
    """The README's `dagster asset materialize --select '*'`: no setting exported but the two URLs, the
    dataset, and the slice's own project and state folder; every derived variable is computed inside
    Dagster's processes."""
    with new_slice(server_urls, tmp_path / "state") as slice_:
        home = tmp_path / "dagster_home"
        home.mkdir()
        env = user_env(slice_, dataset_path, DAGSTER_HOME=str(home))
        assert sorted(name for name in env if name.startswith("SMS_")) == sorted(
            [
                settings.POSTGRES_ENV,
                settings.REDIS_ENV,
                settings.PROJECT_ENV,
                settings.STATE_ENV,
                settings.DATASET_ENV,
            ]
        )
        result = shell("dagster asset materialize --select '*' -m sms_assets.definitions", env)
        assert result.returncode == 0, result.stdout[-4000:]
        assert "Traceback" not in result.stdout, result.stdout[-4000:]
        run_id, materialized, checks = run_record(home)
        assert set(ASSETS) <= materialized, (run_id, materialized)
        assert set(checks) == DEFINED_CHECKS and all(checks.values()), (run_id, checks)
