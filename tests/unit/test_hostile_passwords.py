"""Passwords full of URL, YAML and shell syntax: never shown, and delivered to Feast unchanged.

Each password goes into a postgresql:// and a redis:// URL, raw and percent-encoded. Feast is given the
values two ways: `feast_config.repo_config` (the code's path) and Feast's own `load_repo_config` on
`feature_store.yaml` with `feast_env`'s variables in the environment (what the user's shell does with
`eval "$(sms-assets feast-env)"` before running the `feast` CLI). Both must give back the same config.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from feast import RepoConfig
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.repo_config import load_repo_config
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine import make_url

from sms_core import feast_config, urls

PG_HOST, REDIS_HOST = "db.example.com", "cache.example.com"
PROJECT = "hostile"

PASSWORDS = [
    pytest.param("pa#ss-word", id="hash"),
    pytest.param("pa?ss-word", id="question"),
    pytest.param("pa/ss-word", id="slash"),
    pytest.param("pa@ss-word", id="at"),
    pytest.param("50%off-word", id="percent"),
    pytest.param("pa:ss-word", id="colon"),
    pytest.param("pa ss word", id="space"),
    pytest.param("pa'ss-word", id="single-quote"),
    pytest.param('pa"ss-word', id="double-quote"),
    pytest.param("pa\\ss-word", id="backslash"),
    pytest.param("pa$ss${HOME}-word", id="dollar"),
    pytest.param("pa{ss}-word", id="braces"),
    pytest.param("key: value-word", id="yaml-mapping"),
    pytest.param("- item-word", id="yaml-sequence"),
    pytest.param("&anchor-word", id="yaml-anchor"),
    pytest.param("!tag word", id="yaml-tag"),
    pytest.param("pa\nss-word", id="newline"),
    pytest.param("pässwörd-✓", id="unicode"),
    pytest.param("p😀ss-word", id="emoji"),
    pytest.param("pa=ss-word", id="equals"),
    pytest.param("pa,ss-word", id="comma"),
    pytest.param("12345678", id="json-number"),
    pytest.param("true", id="json-true"),
    pytest.param('"quoted"', id="json-string"),
    pytest.param("pa@ss/word", id="at-then-slash"),
    pytest.param("#?/@%: '\"\\${}&!-\n✓", id="everything"),
]


def _url(scheme: str, form: str) -> str:
    if scheme == "postgresql":
        return f"postgresql://app:{form}@{PG_HOST}:5433/sms"
    return f"redis://app:{form}@{REDIS_HOST}:6380/2"


def _url_cases() -> list[Any]:
    cases = []
    for param in PASSWORDS:
        [password] = param.values
        assert isinstance(password, str)
        for encoded in (False, True):
            for scheme in ("postgresql", "redis"):
                form = "encoded" if encoded else "raw"
                cases.append(pytest.param(password, encoded, scheme, id=f"{param.id}-{form}-{scheme}"))
    return cases


def _parse(scheme: str, url: str) -> tuple[str | None, str | None]:
    """(host, password) as the project parses a URL of this scheme."""
    if scheme == "postgresql":
        parsed = urls.postgres(url)
        return parsed.host, parsed.password
    kwargs = urls.redis_kwargs(url)
    return kwargs["host"], kwargs["password"]


@pytest.mark.parametrize(("password", "encoded", "scheme"), _url_cases())
def test_a_hostile_password_is_never_shown(password: str, encoded: bool, scheme: str) -> None:
    url = _url(scheme, quote(password, safe="") if encoded else password)
    secrets = (password, quote(password, safe=""))
    shown = urls.redact(url)
    assert not any(secret in shown for secret in secrets), shown
    if not encoded and "@" in password:
        # A raw '@' cannot be told apart from the one before the host: refused, and not shown.
        assert shown == urls.MALFORMED
        with pytest.raises(urls.BadUrl) as error:
            _parse(scheme, url)
        assert not any(secret in str(error.value) for secret in secrets)
    else:
        host = PG_HOST if scheme == "postgresql" else REDIS_HOST
        assert f"@{host}:" in shown
        assert _parse(scheme, url) == (host, password)


@pytest.mark.parametrize(
    ("password", "encoded", "scheme"),
    # A raw '@' never gets as far as a connection: the URL is refused (see above).
    [case for case in _url_cases() if case.values[1] or "@" not in case.values[0]],
)
def test_a_password_quoted_back_by_a_library_is_masked(password: str, encoded: bool, scheme: str) -> None:
    url = _url(scheme, quote(password, safe="") if encoded else password)
    secrets = (password, quote(password, safe=""))
    # What libpq did with a URL it could not parse: the password, partly re-encoded, in its message.
    error = ValueError(f"bad {password!r} ({quote(password)}; {quote(password, safe='')}) near {password}")
    unavailable = urls.postgres_unavailable if scheme == "postgresql" else urls.redis_unavailable
    message = str(unavailable(url, error))
    assert not any(secret in message for secret in secrets), message
    assert message.startswith(("Postgres at ", "Redis at ")) and "***" in message


@pytest.mark.parametrize("password", [p for p in PASSWORDS if "@" not in str(p.values[0])])
def test_psycopg_gets_the_exact_password_raw_or_encoded(password: str) -> None:
    for form in (password, quote(password, safe="")):
        conninfo = urls.libpq_conninfo(_url("postgresql", form))
        assert conninfo_to_dict(conninfo)["password"] == password


def _feast_cases(field: str) -> list[Any]:
    cases = []
    for param in PASSWORDS:
        [password] = param.values
        assert isinstance(password, str)
        if field == "redis" and "," in password:
            # feast_env refuses it (test_urls.test_feast_env_refuses_a_comma_in_the_redis_password).
            continue
        cases.append(pytest.param(password, id=param.id))
    return cases


def _stores(config: RepoConfig) -> tuple[Any, Any, Any]:
    """The offline store, online store and registry configs of a RepoConfig."""
    offline, online, registry = config.offline_store, config.online_store, config.registry
    assert offline is not None and online is not None and registry is not None
    return offline, online, registry


def _configs(password: str, monkeypatch: pytest.MonkeyPatch) -> list[RepoConfig]:
    """The config for these URLs from the code's path and from the CLI's, which must be equal."""
    encoded = quote(password, safe="")
    postgres_url = _url("postgresql", encoded)
    redis_url = _url("redis", encoded) if "," not in password else f"redis://{REDIS_HOST}:6380/2"
    direct = feast_config.repo_config(postgres_url, redis_url, PROJECT)
    for name, value in feast_config.feast_env(postgres_url, redis_url, PROJECT).items():
        monkeypatch.setenv(name, value)
    cli = load_repo_config(feast_config.REPO_PATH, feast_config.FEATURE_STORE_YAML)
    assert cli.project == direct.project == PROJECT
    # The code's registry engine connects through the watchdog's connections (feast_config.repo_config);
    # everything else is the CLI's.
    creator = direct.registry.sqlalchemy_config_kwargs.pop("creator")  # type: ignore[union-attr]
    assert creator.args == (postgres_url,)
    for from_cli, from_code in zip(_stores(cli), _stores(direct), strict=True):
        assert from_cli.model_dump() == from_code.model_dump()
    assert cli == direct
    return [direct, cli]


@pytest.mark.parametrize("password", _feast_cases("offline"))
def test_feast_offline_store_gets_the_exact_password(password: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for config in _configs(password, monkeypatch):
        offline, _, _ = _stores(config)
        assert (offline.host, offline.port, offline.database, offline.user) == (PG_HOST, 5433, "sms", "app")
        assert offline.password == password


@pytest.mark.parametrize("password", _feast_cases("registry"))
def test_feast_registry_url_gets_the_exact_password(password: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for config in _configs(password, monkeypatch):
        registry = make_url(_stores(config)[2].path)
        assert (registry.drivername, registry.host, registry.port) == ("postgresql+psycopg", PG_HOST, 5433)
        assert (registry.username, registry.password) == ("app", password)


@pytest.mark.parametrize("password", _feast_cases("redis"))
def test_feast_redis_connection_string_gets_the_exact_password(
    password: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for config in _configs(password, monkeypatch):
        nodes, params = RedisOnlineStore._parse_connection_string(_stores(config)[1].connection_string)
        assert nodes == [{"host": REDIS_HOST, "port": "6380"}]
        assert (params["db"], params["username"]) == (2, "app")
        # Feast json-decodes each value: a numeric password arrives as a number, sent to Redis as text.
        assert str(params["password"]) == password
