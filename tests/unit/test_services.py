"""Service URLs: parsing, redaction, and the Feast configuration built from them."""

import pytest

from sms_assets import feast_store
from sms_assets.services import PostgresParts, RedisParts, libpq_conninfo, redact, sqlalchemy_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/sms", "postgresql://app:***@db:5432/sms"),
        ("postgresql+psycopg://app:s3cret@db/sms", "postgresql+psycopg://app:***@db/sms"),
        ("postgresql://postgres@127.0.0.1/sms", "postgresql://postgres@127.0.0.1/sms"),
        ("redis://:s3cret@cache:6379/2", "redis://:***@cache:6379/2"),
        ("redis://user:s3cret@cache:6379/0", "redis://user:***@cache:6379/0"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("postgresql://postgres:@/postgres?host=/run/pg", "postgresql://postgres:@/postgres?host=/run/pg"),
        ("postgresql://u:p%40ss@db/sms", "postgresql://u:***@db/sms"),
    ],
)
def test_redact_hides_only_the_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_postgres_parts_tcp() -> None:
    parts = PostgresParts.from_url("postgresql://app:p%40ss@db.internal:6543/sms?sslmode=verify-full")
    assert parts == PostgresParts("db.internal", 6543, "sms", "app", "p@ss", "verify-full")


def test_postgres_parts_defaults_local_and_remote() -> None:
    assert PostgresParts.from_url("postgresql://postgres@127.0.0.1/sms").sslmode == "disable"
    assert PostgresParts.from_url("postgresql://u:p@db.example.com/sms").sslmode == "require"


def test_postgres_parts_unix_socket() -> None:
    parts = PostgresParts.from_url("postgresql://postgres:@/postgres?host=/run/pg")
    assert (parts.host, parts.port, parts.database, parts.sslmode) == ("/run/pg", 5432, "postgres", "disable")


def test_driver_is_psycopg3_everywhere() -> None:
    assert sqlalchemy_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert libpq_conninfo("postgresql+psycopg://u:p@h/db") == "postgresql://u:p@h/db"


def test_non_postgres_url_is_refused_without_password() -> None:
    with pytest.raises(ValueError, match="postgresql://") as error:
        sqlalchemy_url("mysql://root:hunter2@db/sms")
    assert "hunter2" not in str(error.value)


def test_redis_parts() -> None:
    parts = RedisParts.from_url("redis://:pw@cache:6380/3")
    assert parts == RedisParts("cache", 6380, 3, "pw")
    connection = parts.feast_connection_string()
    assert connection.startswith("cache:6380,db=3,")
    assert "password=pw" in connection
    assert "socket_connect_timeout=" in connection


@pytest.mark.parametrize("url", ["http://cache:6379/0", "redis://cache:6379/zero"])
def test_bad_redis_url(url: str) -> None:
    with pytest.raises(ValueError, match="SMS_REDIS_URL"):
        RedisParts.from_url(url)


def test_repo_config_from_urls() -> None:
    config = feast_store.repo_config(
        "postgresql://app:pa:ss{}@db:5433/sms", "redis://:pw@cache:6379/1", "proj"
    )
    assert config.project == "proj"
    assert config.entity_key_serialization_version == 3
    offline, online = config.offline_store, config.online_store
    assert offline is not None and online is not None and config.registry is not None
    assert (offline.host, offline.port, offline.database, offline.user) == ("db", 5433, "sms", "app")
    # A password holding YAML syntax survives, because variables are filled in after parsing.
    assert offline.password == "pa:ss{}"
    assert offline.sslmode == "require"
    assert config.registry.path.startswith("postgresql+psycopg://app:")
    assert online.connection_string.startswith("cache:6379,db=1,")


def test_feature_store_yaml_names_only_variables() -> None:
    text = feast_store.FEATURE_STORE_YAML.read_text()
    names = feast_store.feast_env("postgresql://u:p@h/db", "redis://h:1/0", "p")
    for name in names:
        assert f"${{{name}}}" in text
    assert 'password: "${SMS_FEAST_PG_PASSWORD}"' in text
