"""No password is ever shown: a whole run, its history, the stores and every error, on real servers.

The password holds every kind of character a URL can carry (raw or percent-encoded), with a marker
between each two of them: the marker is letters and digits only, so it survives any escaping, and a
fragment of the password cut at any special character still holds one. Finding the marker anywhere is
a leak. Postgres here trusts local connections, so it accepts any password; Redis answers an error to a
password it does not expect, so the test starts a redis-server of its own that requires the password.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import dagster as dg
import pytest
import redis
from psycopg import sql

from sms_assets import cli
from sms_core import embedded, settings, urls
from sms_core.postgres import connect
from tests.conftest import PROJECT_ROOT, create_database, drop_database
from tests.unit.test_hostile_passwords import PASSWORDS

pytestmark = pytest.mark.e2e

MARKER = "Zq7Xw"
SPECIALS = "#?/@%:;=+&$!'\"\\{}[]()<>|^`~* \n\t✓é😀-"  # no ',': Feast's Redis string cannot hold one
PASSWORD = MARKER + "".join(f"{char}{MARKER}" for char in SPECIALS) + "${HOME}" + MARKER
# The test's own Redis user (for setting the password and reading the data back), never in a URL.
ADMIN_USER, ADMIN_PASSWORD = "harness", "harness-only"


def leaks(data: str | bytes) -> bool:
    if isinstance(data, bytes):
        return MARKER.encode() in data
    return MARKER in data


def test_the_marker_survives_every_form_the_password_could_leak_in() -> None:
    """What makes the scans below able to fail: any escaped form of the password holds the marker."""
    import json

    for form in (PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD), json.dumps(PASSWORD), repr(PASSWORD)):
        assert leaks(form) and leaks(form.encode("utf-8"))
    for cut in (PASSWORD.split("#")[1], PASSWORD.split("@")[0], PASSWORD.rsplit("?")[-1]):
        assert leaks(cut)


class HostileRedis:
    """A redis-server of the test's own on a free port whose default user requires a password."""

    def __init__(self, folder: Path):
        self.port = embedded.free_port()
        server = [embedded.redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        server += ["--save", "", "--appendonly", "no", "--dir", str(folder)]
        self.process = subprocess.Popen(server, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        opened = redis.Redis(port=self.port, socket_connect_timeout=5)
        embedded.wait_until(opened.ping, timeout_s=20)
        opened.acl_setuser(
            ADMIN_USER,
            enabled=True,
            passwords=[f"+{ADMIN_PASSWORD}"],
            keys=["*"],
            channels=["*"],
            commands=["+@all"],
        )
        opened.close()
        self.admin = redis.Redis(
            port=self.port, username=ADMIN_USER, password=ADMIN_PASSWORD, socket_connect_timeout=5
        )

    def require(self, password: str) -> None:
        self.admin.config_set("requirepass", password)

    def url(self, password: str, encoded: bool = True, port: int | None = None) -> str:
        form = quote(password, safe="") if encoded else password
        return f"redis://:{form}@127.0.0.1:{port or self.port}/0"

    def stop(self) -> None:
        self.admin.close()
        self.process.terminate()
        self.process.wait(timeout=30)


def postgres_url(admin_url: str, password: str, encoded: bool = True, port: int | None = None) -> str:
    """The admin URL's server and user, with this password (percent-encoded unless told otherwise)."""
    base = urls.postgres(admin_url)
    form = quote(password, safe="") if encoded else password
    where = f"{base.host or ''}:{port or base.port or 5432}" if base.host else ""
    query = f"?{urlencode(dict(base.query))}" if base.query else ""
    return f"postgresql://{base.username or 'postgres'}:{form}@{where}/{base.database}{query}"


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMS_") and k != "DAGSTER_HOME"}
    return {**env, **overrides}


def command(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def sms_assets(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return command([str(PROJECT_ROOT / ".venv" / "bin" / "sms-assets"), *args], env)


@dataclass
class Hostile:
    """One run of `sms-assets run` with the hostile password in both URLs, and where it left things."""

    postgres_url: str
    redis: HostileRedis
    state: Path
    env: dict[str, str]
    run: subprocess.CompletedProcess[str]

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.state / "dagster_home"))


@pytest.fixture(scope="module")
def hostile(
    server_urls: tuple[str, str], dataset_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hostile]:
    folder = tmp_path_factory.mktemp("credentials")
    database = create_database(server_urls[0])
    server = HostileRedis(folder)
    try:
        server.require(PASSWORD)
        url = postgres_url(database, PASSWORD)
        env = clean_env(
            SMS_POSTGRES_URL=url,
            SMS_REDIS_URL=server.url(PASSWORD),
            SMS_FEAST_PROJECT="hostile",
            SMS_STATE_DIR=str(folder / "state"),
            SMS_DATASET_PATH=str(dataset_path),
        )
        yield Hostile(url, server, folder / "state", env, sms_assets("run", env=env))
    finally:
        server.stop()
        drop_database(database)


def test_the_whole_run_succeeds_and_prints_no_password(hostile: Hostile) -> None:
    run = hostile.run
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert re.search(r"^message 42: (ham|spam) \(p\(spam\)=", run.stdout, re.M), run.stdout[-2000:]
    assert not leaks(run.stdout) and not leaks(run.stderr)


def test_the_run_history_and_metadata_hold_no_password(hostile: Hostile) -> None:
    assert hostile.run.returncode == 0
    with hostile.instance() as instance:
        [record] = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
        assert record.status == dg.DagsterRunStatus.SUCCESS
        events = instance.all_logs(record.run_id)
        materialized = {
            e.dagster_event.asset_key.to_user_string()
            for e in events
            if e.dagster_event and e.dagster_event.is_step_materialization and e.dagster_event.asset_key
        }
        assert {"raw_sms_messages", "online_store", "served_model"} <= materialized
        # The run (its config, tags, snapshots) and every event (messages, errors, metadata) as stored.
        assert not leaks(dg.serialize_value(record))
        assert not any(leaks(dg.serialize_value(event)) for event in events)
    # And every file the run left: Dagster's storage and compute logs, models, downloads.
    files = [path for path in hostile.state.rglob("*") if path.is_file()]
    assert any(path.name == "runs.db" for path in files) and any(p.name == "manifest.json" for p in files)
    assert [path for path in files if leaks(path.read_bytes())] == []


def test_the_stores_hold_no_password(hostile: Hostile) -> None:
    assert hostile.run.returncode == 0
    values = 0
    with connect(hostile.postgres_url) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            for row in conn.execute(query):
                values += len(row)
                assert not any(leaks(v if isinstance(v, bytes) else str(v)) for v in row), table
    assert values > 5574
    client = hostile.redis.admin
    keys = list(client.scan_iter(count=1000))
    assert len(keys) >= 5574
    assert not any(leaks(key) for key in keys)
    # Each value as Redis hands it out (DUMP could compress a leak out of sight).
    read = {b"hash": "hgetall", b"string": "get", b"set": "smembers", b"zset": "zrange"}
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        with client.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.type(key)
            kinds = pipe.execute()
            for key, kind in zip(chunk, kinds, strict=True):
                args = (key, 0, -1) if kind == b"zset" else (key,)
                getattr(pipe, read[kind])(*args)
            for value in pipe.execute():
                items = (
                    value.items()
                    if isinstance(value, dict)
                    else value
                    if isinstance(value, (list, set))
                    else [value]
                )
                assert not any(leaks(repr(item).encode()) for item in items)


def test_services_status_masks_the_password_and_services_env_gives_it(hostile: Hostile) -> None:
    status = sms_assets("services", "status", env=hostile.env)
    assert status.returncode == 0, status.stderr
    shown = dict(line.split(": ", 1) for line in status.stdout.splitlines())
    base = urls.postgres(hostile.postgres_url)
    assert shown["SMS_POSTGRES_URL"].startswith(f"postgresql://{base.username}:***@")
    assert shown["SMS_REDIS_URL"] == f"redis://:***@127.0.0.1:{hostile.redis.port}/0"
    assert not leaks(status.stdout + status.stderr)
    # `services env` prints the URLs for `eval`: the one output meant to hold the password.
    assert leaks(sms_assets("services", "env", env=hostile.env).stdout)


WRONG = "wrong-" + MARKER + "#?/ \n✓"


def faults(hostile: Hostile) -> dict[str, tuple[dict[str, str], str]]:
    """Environments that break one connection each, and the line the CLI must print for it."""
    pg, rd = hostile.env["SMS_POSTGRES_URL"], hostile.env["SMS_REDIS_URL"]
    port = embedded.free_port()
    base = urls.postgres(pg)
    return {
        "postgres wrong port": (
            {"SMS_POSTGRES_URL": postgres_url(pg, PASSWORD, port=port)},
            rf"^error: Postgres at postgresql://{base.username}:\*\*\*@127\.0\.0\.1:{port}/\S+ is "
            "unreachable: ",
        ),
        "redis wrong port": (
            {"SMS_REDIS_URL": hostile.redis.url(PASSWORD, port=port)},
            rf"^error: Redis at redis://:\*\*\*@127\.0\.0\.1:{port}/0 is unreachable: ",
        ),
        "redis wrong password": (
            {"SMS_REDIS_URL": hostile.redis.url(WRONG)},
            rf"^error: Redis at redis://:\*\*\*@127\.0\.0\.1:{hostile.redis.port}/0 is unreachable: "
            "invalid username-password pair",
        ),
        # Raw, the password cannot be told from the rest of the URL: refused as malformed, unshown.
        "postgres raw password": (
            {"SMS_POSTGRES_URL": postgres_url(pg, PASSWORD, encoded=False)},
            r"^error: SMS_POSTGRES_URL is not a URL of the form scheme://user:password@host:port/name$",
        ),
        "postgres raw @": (
            {"SMS_POSTGRES_URL": postgres_url(pg, f"{MARKER}@{MARKER}", encoded=False)},
            r"^error: SMS_POSTGRES_URL holds an '@' in its user or password: percent-encode it as %40$",
        ),
        "redis malformed": (
            {"SMS_REDIS_URL": rd.replace(f":{hostile.redis.port}/", ":port/")},
            r"^error: SMS_REDIS_URL is not a URL of the form scheme://user:password@host:port/name$",
        ),
    }


STATUS_FAULTS = ["postgres wrong port", "redis wrong port", "redis wrong password", "postgres raw password",
                 "postgres raw @", "redis malformed"]  # fmt: skip
FAULTS = [
    *(("services status", fault) for fault in STATUS_FAULTS),
    # `predict` and `run` check the servers the same way before they do anything else.
    *((args, fault) for args in ("predict --message-id 42", "run")
      for fault in ("postgres wrong port", "redis wrong password")),
]  # fmt: skip


@pytest.mark.parametrize(("args", "fault"), FAULTS)
def test_a_failing_connection_is_one_line_naming_the_server_not_the_password(
    hostile: Hostile, args: str, fault: str
) -> None:
    overrides, line = faults(hostile)[fault]
    result = sms_assets(*args.split(), env={**hostile.env, **overrides})
    assert result.returncode == 1
    assert result.stdout == ""
    [error] = result.stderr.strip().splitlines()
    assert re.search(line, error), error
    assert not leaks(result.stderr)


def test_a_run_that_fails_to_connect_records_no_password(hostile: Hostile) -> None:
    """Dagster's own runs, each failing on one server: their output and history name it, masked."""
    port = embedded.free_port()
    resolved = settings.resolve(hostile.env)
    cases = {
        "raw_sms_messages": {"SMS_POSTGRES_URL": postgres_url(hostile.postgres_url, PASSWORD, port=port)},
        "feast_registry": {"SMS_REDIS_URL": hostile.redis.url(WRONG)},
    }
    for asset, overrides in cases.items():
        env = {**clean_env(**resolved), **overrides, "DAGSTER_HOME": str(hostile.state / "dagster_home")}
        result = command(
            [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "--select", asset,
             "-m", "sms_assets.definitions"], env
        )  # fmt: skip
        assert result.returncode != 0
        assert "is unreachable" in result.stderr and "***" in result.stderr
        assert not leaks(result.stdout + result.stderr)
    with hostile.instance() as instance:
        failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        assert len(failed) == 2
        for record in failed:
            events = [dg.serialize_value(event) for event in instance.all_logs(record.run_id)]
            assert any("is unreachable" in event and "***" in event for event in events)
            assert not any(leaks(event) for event in events)


@pytest.mark.parametrize("encoded", [False, True], ids=["raw", "encoded"])
@pytest.mark.parametrize("password", PASSWORDS)
def test_every_hostile_password_is_masked_by_the_cli(
    hostile: Hostile,
    password: str,
    encoded: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The list of hostile passwords, each through `sms-assets services status` (in process, against
    the real servers) with the password right, then with the Postgres server gone."""
    secrets = {password, quote(password, safe=""), quote(password)}
    hostile.redis.require(password)
    try:
        for name, value in hostile.env.items():
            if name.startswith("SMS_"):
                monkeypatch.setenv(name, value)
        monkeypatch.setenv("SMS_POSTGRES_URL", postgres_url(hostile.postgres_url, password, encoded))
        monkeypatch.setenv("SMS_REDIS_URL", hostile.redis.url(password, encoded))
        code = cli.main(["services", "status"])
        out, err = capsys.readouterr()
        if not encoded and "@" in password:
            assert (code, out) == (1, "")
            # A raw '@' is named as such, unless the URL around it cannot be parsed at all.
            assert re.match(r"^error: SMS_POSTGRES_URL (holds an '@'|is not a URL of the form)", err), err
        else:
            assert code == 0, err
            assert f"SMS_REDIS_URL: redis://:***@127.0.0.1:{hostile.redis.port}/0\n" in out
            monkeypatch.setenv(
                "SMS_POSTGRES_URL",
                postgres_url(hostile.postgres_url, password, encoded, port=embedded.free_port()),
            )
            assert cli.main(["services", "status"]) == 1
            gone, err = capsys.readouterr()
            assert gone == ""
            assert re.match(r"^error: Postgres at postgresql://\w+:\*\*\*@[^\n]+ is unreachable: ", err), err
            out += err
        assert not any(secret in out + err for secret in secrets), out + err
    finally:
        hostile.redis.require(PASSWORD)
