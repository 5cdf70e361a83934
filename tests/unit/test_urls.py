"""Service URLs: parsing, redaction, redis-py's arguments, and the Feast variables derived from them."""

import json
import re

import pytest
import redis
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig, RedisType
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine import make_url

from sms_core import bounds, embedded, feast_config, urls

# A URL whose password is the only secret: `secret` in it is what must never be shown.
SECRET = "s3cret-pw"


def feast_values(postgres_url: str, redis_url: str = "redis://127.0.0.1:6379/0") -> dict[str, str]:
    """feast_env's values as Feast's loader sees them once expanded: the quoted YAML scalars decoded."""
    return {
        name: json.loads(value)
        for name, value in feast_config.feast_env(postgres_url, redis_url, "p").items()
    }


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://app:{SECRET}@db:5432/sms", "postgresql://app:***@db:5432/sms"),
        (f"postgresql+psycopg://app:{SECRET}@db/sms", "postgresql+psycopg://app:***@db/sms"),
        ("postgresql://postgres@127.0.0.1/sms", "postgresql://postgres@127.0.0.1/sms"),
        (f"redis://:{SECRET}@cache:6379/2", "redis://:***@cache:6379/2"),
        (f"redis://user:{SECRET}@cache:6379/0", "redis://user:***@cache:6379/0"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        # An empty password is masked too; the socket folder is kept, percent-encoded.
        (
            "postgresql://postgres:@/postgres?host=/run/pg",
            "postgresql://postgres:***@/postgres?host=%2Frun%2Fpg",
        ),
        ("postgresql://u:p%40ss@db/sms", "postgresql://u:***@db/sms"),
        (
            f"postgresql://u:{SECRET}@db:5432/sms?sslmode=require",
            "postgresql://u:***@db:5432/sms?sslmode=require",
        ),
    ],
)
def test_redact_hides_only_the_password(url: str, shown: str) -> None:
    assert urls.redact(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        f"://u:{SECRET}@db",
        f"postgresql://u:{SECRET}@db:port/sms",
    ],
)
def test_redact_of_a_malformed_url_shows_nothing_of_it(url: str) -> None:
    assert urls.redact(url) == urls.MALFORMED


def test_postgres_url_gets_the_psycopg3_driver() -> None:
    url = urls.postgres("postgresql://u:p%23w@h:6543/db?sslmode=require")
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port, url.database, url.username, url.password) == ("h", 6543, "db", "u", "p#w")
    assert url.query == {"sslmode": "require"}
    assert urls.postgres("postgres://u@h/db").drivername == "postgresql+psycopg"


def test_libpq_conninfo_is_psycopgs_key_value_form() -> None:
    assert conninfo_to_dict(urls.libpq_conninfo("postgresql+psycopg://u:p@h:6543/db")) == {
        "user": "u",
        "password": "p",
        "host": "h",
        "port": "6543",
        "dbname": "db",
        **bounds.bounded_params(),
    }
    # A password libpq's URL parser refuses (a space) or would split is quoted for libpq, not encoded.
    info = conninfo_to_dict(urls.libpq_conninfo("postgresql://u:p%40s s'\\@h/db?sslmode=require"))
    assert (info["password"], info["sslmode"]) == ("p@s s'\\", "require")
    socket = conninfo_to_dict(urls.libpq_conninfo("postgresql://postgres:@/postgres?host=/run/pg"))
    assert (socket["host"], socket["dbname"]) == ("/run/pg", "postgres")


def test_every_connection_is_bounded_unless_the_url_says_otherwise() -> None:
    params = bounds.bounded_params()
    assert params["options"] == f"-c statement_timeout={bounds.STATEMENT_TIMEOUT_S}s"
    assert params["keepalives"] == "1" and int(params["tcp_user_timeout"]) > 0
    own = "postgresql://u@h/db?keepalives_idle=60&options=-c%20statement_timeout%3D1h"
    info = conninfo_to_dict(urls.libpq_conninfo(own))
    assert (info["keepalives_idle"], info["options"]) == ("60", "-c statement_timeout=1h")
    assert info["connect_timeout"] == str(bounds.CONNECT_TIMEOUT_S)
    assert dict(urls.bounded_url(own).query) == {
        **params,
        "keepalives_idle": "60",
        "options": info["options"],
    }


def test_non_postgres_url_is_refused_without_password() -> None:
    with pytest.raises(urls.BadUrl, match="SMS_POSTGRES_URL must be a postgresql://") as error:
        urls.postgres(f"mysql://root:{SECRET}@db/sms")
    assert SECRET not in str(error.value)


def test_a_port_out_of_range_is_refused_without_password() -> None:
    with pytest.raises(urls.BadUrl, match=r"^SMS_POSTGRES_URL port must be 1 to 65535, got 99999$") as error:
        urls.postgres(f"postgresql://app:{SECRET}@db:99999/sms")
    assert SECRET not in str(error.value)


def test_a_bad_url_is_named_by_its_setting() -> None:
    with pytest.raises(urls.BadUrl, match=r"^MY_SETTING is not a URL"):
        urls.postgres("nothing like a URL", setting="MY_SETTING")


def test_feast_env_of_a_tcp_url() -> None:
    values = feast_values(f"postgresql://app:{SECRET}@db.internal:6543/sms?sslmode=verify-full")
    assert values["SMS_FEAST_PG_HOST"] == "db.internal"
    assert values["SMS_FEAST_PG_PORT"] == "6543"
    assert values["SMS_FEAST_PG_DATABASE"] == "sms"
    assert values["SMS_FEAST_PG_USER"] == "app"
    assert values["SMS_FEAST_PG_PASSWORD"] == SECRET
    assert values["SMS_FEAST_PG_SSLMODE"] == "verify-full"
    assert values["SMS_FEAST_YAML_PROJECT"] == "p"
    registry = urls.parse(values["SMS_FEAST_REGISTRY_URL"], "registry")
    assert registry.set(query={}).render_as_string(hide_password=False) == (
        f"postgresql+psycopg://app:{SECRET}@db.internal:6543/sms"
    )
    # The registry's engine is bounded like every other connection.
    assert dict(registry.query) == {"sslmode": "verify-full", **bounds.bounded_params()}
    assert values["SMS_FEAST_PG_KEEPALIVES_IDLE"] == str(bounds.KEEPALIVES_IDLE_S)


def test_feast_env_defaults_when_the_url_leaves_things_out() -> None:
    values = feast_values("postgresql://db.internal")
    assert values["SMS_FEAST_PG_PORT"] == "5432"
    assert values["SMS_FEAST_PG_DATABASE"] == "postgres"
    assert values["SMS_FEAST_PG_USER"] == "postgres"
    assert values["SMS_FEAST_PG_PASSWORD"] == ""


@pytest.mark.parametrize(
    ("host", "sslmode"),
    [
        ("127.0.0.1", "disable"),
        ("localhost", "disable"),
        ("[::1]", "disable"),
        ("postgres", "disable"),  # the compose service
        ("db.example.com", "require"),
        ("10.0.0.7", "require"),
    ],
)
def test_feast_env_sslmode_defaults_to_disable_only_for_local_hosts(host: str, sslmode: str) -> None:
    assert feast_values(f"postgresql://u:p@{host}:5432/sms")["SMS_FEAST_PG_SSLMODE"] == sslmode


@pytest.mark.parametrize("sslmode", ["disable", "prefer", "require", "verify-ca", "verify-full"])
def test_feast_env_sslmode_comes_from_the_url_when_given(sslmode: str) -> None:
    for host in ("127.0.0.1", "db.example.com"):
        values = feast_values(f"postgresql://u:p@{host}/sms?sslmode={sslmode}")
        assert values["SMS_FEAST_PG_SSLMODE"] == sslmode, host


def test_feast_env_of_a_unix_socket_url() -> None:
    values = feast_values("postgresql://postgres:@/postgres?host=/run/pg")
    assert values["SMS_FEAST_PG_HOST"] == "/run/pg"
    assert values["SMS_FEAST_PG_PORT"] == "5432"
    assert values["SMS_FEAST_PG_DATABASE"] == "postgres"
    assert values["SMS_FEAST_PG_SSLMODE"] == "disable"


def test_feast_env_redis_connection_string_carries_db_and_credentials() -> None:
    values = feast_values("postgresql://u@h/db", f"redis://app:{SECRET}@cache:6380/3")
    timeout = urls.CONNECT_TIMEOUT_S
    assert values["SMS_FEAST_REDIS"] == (
        f"cache:6380,db=3,socket_connect_timeout={timeout},socket_timeout={timeout},"
        f'username="app",password="{SECRET}"'
    )
    # Without credentials the connection string names none.
    assert feast_values("postgresql://u@h/db", "redis://cache")["SMS_FEAST_REDIS"] == (
        f"cache:6379,db=0,socket_connect_timeout={timeout},socket_timeout={timeout}"
    )


def test_feast_env_of_a_cluster_url_selects_feasts_cluster_client_without_a_db() -> None:
    values = feast_values("postgresql://u@h/db", f"redis+cluster://app:{SECRET}@node1:7000")
    timeout = urls.CONNECT_TIMEOUT_S
    assert values["SMS_FEAST_REDIS_TYPE"] == "redis_cluster"
    # redis-py's RedisCluster refuses a `db` argument, even db=0.
    assert values["SMS_FEAST_REDIS"] == (
        f"node1:7000,socket_connect_timeout={timeout},socket_timeout={timeout},"
        f'username="app",password="{SECRET}"'
    )
    assert feast_values("postgresql://u@h/db", "redis://cache/0")["SMS_FEAST_REDIS_TYPE"] == "redis"


def test_feast_env_names_every_seed_node_of_a_cluster() -> None:
    url = "redis+cluster://node1:7000?node=node2:7001&node=10.0.0.3:7002"
    assert feast_values("postgresql://u@h/db", url)["SMS_FEAST_REDIS"].startswith(
        "node1:7000,node2:7001,10.0.0.3:7002,socket_connect_timeout="
    )


def test_repo_config_of_a_cluster_url() -> None:
    config = feast_config.repo_config("postgresql://u@h/db", "redis+cluster://node1:7000/0", "proj")
    online = config.online_store
    assert isinstance(online, RedisOnlineStoreConfig)
    assert online.redis_type == RedisType.redis_cluster
    startup_nodes, params = RedisOnlineStore._parse_connection_string(online.connection_string)
    assert startup_nodes == [{"host": "node1", "port": "7000"}]
    assert "db" not in params


def test_redact_and_is_cluster_of_a_cluster_url() -> None:
    url = f"redis+cluster://:{SECRET}@node1:7000/0"
    assert urls.redact(url) == "redis+cluster://:***@node1:7000/0"
    assert urls.is_cluster(url) and not urls.is_cluster("redis://node1:6379/0")
    assert urls.redis_kwargs(url)["port"] == 7000
    assert urls.cluster_nodes(url) == [("node1", 7000)]


def test_cluster_nodes_are_the_url_host_then_each_node_option() -> None:
    url = f"redis+cluster://:{SECRET}@node1:7000/0?node=node2:7001&node=node3:7002"
    assert urls.cluster_nodes(url) == [("node1", 7000), ("node2", 7001), ("node3", 7002)]
    assert urls.redact(url) == "redis+cluster://:***@node1:7000/0?node=node2%3A7001&node=node3%3A7002"
    assert urls.cluster_nodes("redis+cluster://node1?node=node2:7001") == [("node1", 6379), ("node2", 7001)]


def test_feast_env_refuses_a_comma_in_the_redis_password() -> None:
    with pytest.raises(urls.BadUrl, match="SMS_REDIS_URL") as error:
        feast_config.feast_env("postgresql://u@h/db", "redis://:s3cret%2Cpw@cache:6379/0", "p")
    assert "s3cret" not in str(error.value)


def test_feature_store_yaml_names_exactly_the_feast_variables() -> None:
    text = feast_config.FEATURE_STORE_YAML.read_text()
    names = feast_config.feast_env("postgresql://u:p@h/db", "redis://h:1/0", "p")
    assert set(re.findall(r"\$\{(\w+)\}", text)) == set(names)
    # Each value arrives quoted: the file must not quote the variable again.
    assert "password: ${SMS_FEAST_PG_PASSWORD}\n" in text


def test_repo_config_from_urls() -> None:
    config = feast_config.repo_config(
        "postgresql://app:pa:ss{}@db:5433/sms", f"redis://:{SECRET}@cache:6379/1", "proj"
    )
    assert config.project == "proj"
    assert config.entity_key_serialization_version == 3
    offline, online, registry = config.offline_store, config.online_store, config.registry
    assert offline is not None and online is not None and registry is not None
    assert (offline.host, offline.port, offline.database, offline.user) == ("db", 5433, "sms", "app")
    # A password holding YAML syntax survives: each value is a quoted YAML scalar.
    assert offline.password == "pa:ss{}"
    assert offline.sslmode == "require"
    assert offline.keepalives_idle == bounds.KEEPALIVES_IDLE_S
    registry_url = make_url(registry.path)
    assert (registry_url.drivername, registry_url.host, registry_url.port) == (
        "postgresql+psycopg",
        "db",
        5433,
    )
    assert (registry_url.username, registry_url.password) == ("app", "pa:ss{}")
    assert online.connection_string.startswith("cache:6379,db=1,")


def test_redis_kwargs_of_a_full_url() -> None:
    assert urls.redis_kwargs("redis://app:p%40ss%23w@cache:6380/3") == {
        "host": "cache",
        "port": 6380,
        "db": 3,
        "username": "app",
        "password": "p@ss#w",
    }


def test_redis_kwargs_defaults() -> None:
    assert urls.redis_kwargs("redis://") == {
        "host": "localhost",
        "port": 6379,
        "db": 0,
        "username": None,
        "password": None,
    }
    # A password without a user (redis://:pw@host) is Redis' legacy AUTH.
    kwargs = urls.redis_kwargs(f"redis://:{SECRET}@cache")
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == (None, SECRET, 0)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"http://:{SECRET}@cache:6379/0", " must be a redis://host:port/db or redis\\+cluster://"),
        (f"rediss://:{SECRET}@cache:6379/0", " must be a redis://host:port/db or redis\\+cluster://"),
        (f"redis://:{SECRET}@cache:6379/zero", " database must be a number, got 'zero'"),
        (f"redis+cluster://:{SECRET}@cache:7000/2", ": a Redis Cluster has database 0 only, got 2"),
        (f"redis+cluster://:{SECRET}@cache:7000?node=cache2", ": node='cache2' is not host:port"),
        (f"redis+cluster://:{SECRET}@cache:7000?node=cache2:0", ": node='cache2:0' is not host:port"),
        (f"redis://:{SECRET}@cache:6379/0?node=cache2:7001", ": node= names more nodes of a Redis Cluster"),
        (f"redis://:{SECRET}@cache:0/0", " port must be 1 to 65535, got 0"),
        (f"redis://:{SECRET}@cache:65536/0", " port must be 1 to 65535, got 65536"),
    ],
)
def test_bad_redis_url_is_refused_without_password(url: str, problem: str) -> None:
    with pytest.raises(urls.BadUrl, match=f"^SMS_REDIS_URL{problem}") as error:
        urls.redis_kwargs(url)
    assert SECRET not in str(error.value)


def test_redis_client_uses_the_parsed_url() -> None:
    client = urls.redis_client("redis://app:p%23w@cache:6380/3")
    assert isinstance(client, redis.Redis)  # one server: the cluster client is tested on a cluster
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache", 6380, 3)
        assert (kwargs["username"], kwargs["password"]) == ("app", "p#w")
        assert kwargs["socket_connect_timeout"] == kwargs["socket_timeout"] == urls.CONNECT_TIMEOUT_S
    finally:
        client.close()


def test_unreachable_servers_are_named_without_password() -> None:
    port = embedded.free_port()
    with pytest.raises(
        urls.ServiceUnavailable, match=rf"^Postgres at postgresql://u:\*\*\*@127\.0\.0\.1:{port}/db "
    ):
        urls.check_postgres(f"postgresql://u:{SECRET}@127.0.0.1:{port}/db")
    with pytest.raises(
        urls.ServiceUnavailable, match=rf"^Redis at redis://:\*\*\*@127\.0\.0\.1:{port}/0 "
    ) as error:
        urls.check_redis(f"redis://:{SECRET}@127.0.0.1:{port}/0")
    assert SECRET not in str(error.value)
