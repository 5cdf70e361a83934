"""Shared fixtures: real Postgres and Redis, isolated per test session.

The servers are SMS_POSTGRES_URL / SMS_REDIS_URL when set (CI points them at the machine's services),
else the project's embedded servers. Each session gets its own database, Feast project and state folder,
so concurrent runs never see each other's data. An unreachable server fails the tests; nothing skips.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from sms_assets.definitions import defs
from sms_core import embedded, settings, urls

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Every asset and check of the code location, as the definitions merge them.
ALL_ASSETS = [*(defs.assets or []), *(defs.asset_checks or [])]
SHARED_DATASET = PROJECT_ROOT.parent / "shared" / "data" / "SMSSpamCollection"
# Set by `make test-fast`: a test that asks for the servers fails, naming where it belongs.
NO_SERVICES_ENV = "SMS_TESTS_WITHOUT_SERVICES"


@dataclass(frozen=True)
class Services:
    """The isolated slice of the servers a test session works in."""

    postgres_url: str
    redis_url: str
    feast_project: str
    state_dir: Path

    def env(self) -> dict[str, str]:
        """The environment that points the project's commands (child processes) at this slice."""
        return settings.resolve(
            {
                settings.POSTGRES_ENV: self.postgres_url,
                settings.REDIS_ENV: self.redis_url,
                settings.PROJECT_ENV: self.feast_project,
                settings.STATE_ENV: str(self.state_dir),
                settings.DATASET_ENV: str(dataset_file()),
            }
        )


def dataset_file() -> Path:
    path = Path(os.environ.get("SMS_DATASET_PATH") or SHARED_DATASET)
    if not path.is_file():
        pytest.fail(f"the SMS Spam Collection is not at {path}: set SMS_DATASET_PATH")
    return path


@pytest.fixture(scope="session")
def dataset_path() -> Path:
    return dataset_file()


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@contextmanager
def embedded_state_dir() -> Iterator[Path]:
    """A state folder for embedded servers, stopped and removed afterwards.

    Not under pytest's tmp_path: pytest resets its base folder to mode 0700, which locks out the
    unprivileged user the embedded Postgres runs as when the tests run as root.
    """
    folder = Path(tempfile.mkdtemp(prefix="sms-assets-test-"))
    try:
        yield folder
    finally:
        embedded.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def server_urls() -> Iterator[tuple[str, str]]:
    """The Postgres and Redis servers: from the environment, else embedded ones for this session."""
    if os.environ.get(NO_SERVICES_ENV):
        pytest.fail(
            "this test talks to Postgres and Redis: it belongs under tests/integration/ (or tests/e2e/), "
            "which `make test-fast` leaves out"
        )
    with ExitStack() as stack:
        postgres, redis = os.environ.get(settings.POSTGRES_ENV), os.environ.get(settings.REDIS_ENV)
        if not (postgres and redis):
            if os.environ.get("CI"):
                pytest.fail(
                    f"CI must name its services: set {settings.POSTGRES_ENV} and {settings.REDIS_ENV}"
                )
            folder = stack.enter_context(embedded_state_dir())
            postgres, redis = embedded.postgres_url(folder), embedded.redis_url(folder)
        urls.check_postgres(postgres)
        urls.check_redis(redis)
        yield postgres, redis


def create_database(admin_url: str) -> str:
    """A new empty database on the server of `admin_url`; returns its URL."""
    name = _unique("sms_test")
    with psycopg.connect(urls.libpq_conninfo(admin_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urls.postgres(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    name = urls.postgres(url).database
    assert name, url
    admin = urls.postgres(url).set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(urls.libpq_conninfo(admin), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def scratch_database(server_urls: tuple[str, str]) -> Iterator[str]:
    """A database of its own on the test Postgres, dropped afterwards."""
    url = create_database(server_urls[0])
    try:
        yield url
    finally:
        drop_database(url)


def delete_feast_keys(redis_url: str, project: str) -> None:
    """Remove the online rows of one Feast project (its keys end with the project name)."""
    client = urls.redis_client(redis_url)
    try:
        for key in client.scan_iter(match=f"*{project}", count=1000):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture(scope="session")
def isolated(server_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """A database, Feast project and state folder of this session's own."""
    admin_postgres, redis_url = server_urls
    slice_ = Services(
        postgres_url=create_database(admin_postgres),
        redis_url=redis_url,
        feast_project=_unique("t"),
        state_dir=tmp_path_factory.mktemp("state"),
    )
    yield slice_
    drop_database(slice_.postgres_url)
    delete_feast_keys(redis_url, slice_.feast_project)


@contextmanager
def new_slice(
    server_urls: tuple[str, str], state_dir: Path, redis_url: str | None = None
) -> Iterator[Services]:
    """A slice of its own (database, Feast project, state folder) for tests that change shared state."""
    slice_ = Services(
        postgres_url=create_database(server_urls[0]),
        redis_url=redis_url or server_urls[1],
        feast_project=_unique("t"),
        state_dir=state_dir,
    )
    try:
        yield slice_
    finally:
        drop_database(slice_.postgres_url)
        delete_feast_keys(slice_.redis_url, slice_.feast_project)
