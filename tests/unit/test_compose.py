"""The docker-compose stack, checked without Docker: its files parse and agree with each other and the code.
(tests/e2e/test_compose_stack.py runs the stack's own commands natively.)

docker-compose.yml, the Dockerfile, dagster.yaml, workspace-compose.yaml and .env.example each name things
the others rely on (hostnames, ports, paths, variables, binaries). These tests read them as Compose and
Docker would and check that those names line up, and run what can run here: the code-location command
itself, Dagster's instance built from dagster.yaml on a real Postgres, and the CLI options each container
passes.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import yaml
from sqlalchemy.engine import make_url

from sms_api.service import ServiceConfig
from sms_assets import cli
from sms_assets.defs.resources import DatasetResource, project_resources
from sms_core import bounds, feast_config, settings, urls
from sms_core.embedded import free_port, wait_until
from tests.conftest import PROJECT_ROOT

ROOT = PROJECT_ROOT
VENV_BIN = Path(sys.executable).parent
DAGSTER_SERVICES = ("code-location", "webserver", "daemon")
API_SERVICE = "api"
# The containers that run the project's code, from its image.
PROJECT_SERVICES = (*DAGSTER_SERVICES, API_SERVICE)
BACKING_SERVICES = ("postgres", "redis")

# ---------------------------------------------------------------------------------------------------------
# Reading the files as Compose and Docker do


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as Compose reads `.env` (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\})")


class MissingVariable(KeyError):
    pass


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}`, `${VAR:+replacement}` (and the forms
    without a colon), and `$$`, as https://docs.docker.com/reference/compose-file/interpolation/ defines
    them (nesting is not needed by this project and not supported here)."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if name is None:
            return "$"
        raw = env.get(name)
        # With a colon, an empty value counts as unset.
        present = raw is not None and (raw != "" or not (op or "").startswith(":"))
        value = raw or ""
        if op in (":-", "-"):
            return value if present else arg
        if op in (":?", "?"):
            if not present:
                raise MissingVariable(f"{name}: {arg}")
            return value
        if op in (":+", "+"):
            return arg if present else ""
        return value

    return _VARIABLE.sub(substitute, text)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def compose_raw() -> dict[str, Any]:
    """docker-compose.yml as YAML, `<<:` merges applied, variables not yet substituted."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as `docker compose config` would see it with the documented .env."""
    return interpolate_tree(compose_raw(), read_env_file(ROOT / ".env.example") if env is None else env)


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command(service: Mapping[str, Any]) -> list[str]:
    value = service["command"]
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def option(argv: list[str], *names: str) -> str:
    """The value after the first of `names` in argv."""
    for index, arg in enumerate(argv):
        if arg in names:
            return argv[index + 1]
    raise AssertionError(f"none of {names} in {argv}")


def named_volume_mounts(service: Mapping[str, Any], declared: Mapping[str, Any]) -> dict[str, str]:
    """Container path -> named volume, for the short-syntax mounts whose source is a declared volume."""
    mounts = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if source in declared:
            mounts[target] = source
    return mounts


def published_ports(service: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) for each `ip:host:container` entry."""
    result = []
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        assert len(parts) == 3, f"{spec!r} does not name the host address to bind"
        result.append((parts[0], int(parts[1]), int(parts[2])))
    return result


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def dockerfile_env() -> dict[str, str]:
    """The ARG defaults and ENV values the Dockerfile ends with, each expanded as Docker expands it."""
    values: dict[str, str] = {}
    for keyword, rest in dockerfile_instructions():
        if keyword in ("ARG", "ENV"):
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                values[key] = interpolate(value, values)
    return values


def dockerfile_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY, the destination expanded and made absolute against WORKDIR.
    A destination ending in "/" is a folder, as Docker reads it."""
    copies, workdir, env = [], PurePosixPath("/"), {}
    for keyword, rest in dockerfile_instructions():
        if keyword in ("ARG", "ENV"):
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = interpolate(value, env)
        elif keyword == "WORKDIR":
            workdir = workdir / interpolate(rest, env)
        elif keyword == "COPY":
            *sources, destination = (interpolate(part, env) for part in shlex.split(rest))
            folder = destination.endswith("/")
            destination = str(workdir / destination) + ("/" if folder else "")
            copies.append(([s for s in sources if not s.startswith("--")], destination))
    return copies


def image_path_of(repo_file: str) -> str:
    """Where the image holds a file of this repository, from the Dockerfile's COPY lines."""
    for sources, destination in dockerfile_copies():
        for source in sources:
            if source == repo_file:
                return f"{destination}{source}" if destination.endswith("/") else destination
            if repo_file.startswith(source.rstrip("/") + "/"):
                inside = PurePosixPath(repo_file).relative_to(source.rstrip("/"))
                return str(PurePosixPath(destination) / inside)
    raise AssertionError(f"the Dockerfile copies no {repo_file}")


def env_references(node: Any) -> set[str]:
    """Names of the environment variables a Dagster config reads (`{env: NAME}`)."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_references(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(env_references(value) for value in node))
    return set()


# ---------------------------------------------------------------------------------------------------------
# docker-compose.yml on its own


def test_the_stack_has_the_six_services():
    assert set(compose()["services"]) == {*BACKING_SERVICES, *PROJECT_SERVICES}


def test_every_dependency_is_a_service_and_healthy_means_it_has_a_healthcheck():
    services_ = compose()["services"]
    for name, service in services_.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services_, f"{name} depends on an unknown service {dependency}"
            if spec["condition"] == "service_healthy":
                assert services_[dependency].get("healthcheck"), f"{dependency} has no healthcheck"


@pytest.mark.parametrize("name", PROJECT_SERVICES)
def test_project_containers_wait_for_healthy_postgres_and_redis(name):
    depends_on = compose()["services"][name]["depends_on"]
    assert {depends_on[s]["condition"] for s in BACKING_SERVICES} == {"service_healthy"}


@pytest.mark.parametrize("name", ["webserver", "daemon"])
def test_webserver_and_daemon_wait_for_the_code_location_to_answer(name):
    assert compose()["services"][name]["depends_on"]["code-location"]["condition"] == "service_healthy"


def test_backing_services_check_their_own_health_with_their_own_clients():
    services_ = compose()["services"]
    assert services_["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert services_["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_images_are_pinned_to_a_major_version():
    services_ = compose()["services"]
    assert re.fullmatch(r"postgres:\d+(\.\d+)?", services_["postgres"]["image"])
    assert re.fullmatch(r"redis:\d+(\.\d+)?", services_["redis"]["image"])


def test_ports_are_published_on_loopback_only():
    published = {}
    for name, service in compose()["services"].items():
        for host_ip, host_port, container_port in published_ports(service):
            assert host_ip == "127.0.0.1", f"{name} publishes {host_port} on {host_ip}"
            published[name] = (host_port, container_port)
    assert published == {
        "postgres": (5432, 5432),
        "redis": (6379, 6379),
        "webserver": (3000, 3000),
        API_SERVICE: (8000, 8000),
    }


def test_the_host_ports_can_be_moved_off_ports_already_in_use():
    env = {
        **read_env_file(ROOT / ".env.example"),
        "POSTGRES_HOST_PORT": "15432",
        "DAGSTER_HOST_PORT": "13000",
        "API_HOST_PORT": "18000",
    }
    services_ = compose(env)["services"]
    assert published_ports(services_["postgres"]) == [("127.0.0.1", 15432, 5432)]
    assert published_ports(services_["webserver"]) == [("127.0.0.1", 13000, 3000)]
    assert published_ports(services_[API_SERVICE]) == [("127.0.0.1", 18000, 8000)]


def test_every_named_volume_used_is_declared_and_postgres_and_redis_keep_their_data():
    document = compose()
    declared = document["volumes"]
    for name, service in document["services"].items():
        for spec in service.get("volumes", []):
            source = spec.split(":")[0]
            if not source.startswith(("/", ".", "~")):
                assert source in declared, f"{name} mounts the undeclared volume {source}"
    assert "/var/lib/postgresql/data" in named_volume_mounts(document["services"]["postgres"], declared)
    assert "/data" in named_volume_mounts(document["services"]["redis"], declared)


# ---------------------------------------------------------------------------------------------------------
# Credentials and variables


def test_the_postgres_password_is_a_variable_never_a_literal():
    raw = compose_raw()
    password = raw["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?[^}]+\}", password)
    example = read_env_file(ROOT / ".env.example")["POSTGRES_PASSWORD"]
    assert example not in (ROOT / "docker-compose.yml").read_text()


def test_the_stack_refuses_to_start_without_a_password():
    env = read_env_file(ROOT / ".env.example")
    del env["POSTGRES_PASSWORD"]
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        compose(env)


def test_env_example_sets_every_variable_the_compose_file_requires():
    text = (ROOT / "docker-compose.yml").read_text()
    required = {m["name"] for m in _VARIABLE.finditer(text) if m["op"] in (":?", "?")}
    assert required, "the compose file requires no variable: then .env.example documents nothing"
    assert required <= set(read_env_file(ROOT / ".env.example"))


def test_dot_env_stays_out_of_git_and_out_of_the_image():
    gitignore = (ROOT / ".gitignore").read_text().split()
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in gitignore
    assert ".env" in dockerignore


# ---------------------------------------------------------------------------------------------------------
# The Dagster containers' environment agrees with the services and with the project's own URL parsing


# What a container must set: the image has no embedded servers, and its state lives on a volume.
REQUIRED_SETTINGS = {settings.POSTGRES_ENV, settings.REDIS_ENV, settings.STATE_ENV}


@pytest.mark.parametrize("name", DAGSTER_SERVICES)
def test_dagster_containers_set_what_they_must_and_only_valid_settings(name):
    env = environment(compose()["services"][name])
    given = {variable for variable in env if variable.startswith("SMS_")}
    assert given <= set(settings.NAMES), f"{name} sets {sorted(given - set(settings.NAMES))}, no setting"
    missing = REQUIRED_SETTINGS - {variable for variable in given if env[variable]}
    assert not missing, f"{name} does not set {sorted(missing)}"
    assert "DAGSTER_HOME" in env
    # The values are ones the settings accept, as every process of the container reads them.
    chosen = settings.load(env)
    assert str(chosen.state_dir) == env[settings.STATE_ENV]
    dataset = project_resources(chosen)["dataset"]
    assert isinstance(dataset, DatasetResource)
    assert dataset.held_back() == chosen.dataset_holdback


def test_the_postgres_url_names_the_postgres_service_and_its_credentials():
    services_ = compose()["services"]
    postgres = environment(services_["postgres"])
    (_, _, container_port) = published_ports(services_["postgres"])[0]
    user, database = postgres["POSTGRES_USER"], postgres["POSTGRES_DB"]
    assert services_["postgres"]["healthcheck"]["test"][2:] == ["-U", user, "-d", database]
    for name in PROJECT_SERVICES:
        env = environment(services_[name])
        # Parsed by the project's own code, as Feast's offline store and registry will see it.
        url = urls.postgres(env[settings.POSTGRES_ENV])
        assert (url.host, url.port) == ("postgres", container_port)
        assert (url.username, url.database, url.password) == (user, database, postgres["POSTGRES_PASSWORD"])
        feast = {
            variable: json.loads(value)
            for variable, value in feast_config.feast_env(
                env[settings.POSTGRES_ENV], env[settings.REDIS_ENV], env[settings.PROJECT_ENV]
            ).items()
        }
        assert (feast["SMS_FEAST_PG_HOST"], feast["SMS_FEAST_PG_PORT"]) == ("postgres", str(container_port))
        assert feast["SMS_FEAST_PG_PASSWORD"] == postgres["POSTGRES_PASSWORD"]
        # On the compose network the server has no TLS; the project must not ask for it.
        assert feast["SMS_FEAST_PG_SSLMODE"] == "disable"


def test_the_redis_url_names_the_redis_service():
    services_ = compose()["services"]
    (_, _, container_port) = published_ports(services_["redis"])[0]
    for name in PROJECT_SERVICES:
        kwargs = urls.redis_kwargs(environment(services_[name])[settings.REDIS_ENV])
        assert (kwargs["host"], kwargs["port"]) == ("redis", container_port)


def volume_holding(path: str, mounts: Mapping[str, str]) -> str | None:
    """The named volume a path is on: the one mounted on the path or on its nearest parent."""
    holders = [target for target in mounts if PurePosixPath(path).is_relative_to(target)]
    return mounts[max(holders, key=len)] if holders else None


@pytest.mark.parametrize("variable", [settings.MODEL_DIR_ENV, settings.STATE_ENV, settings.LANDING_ENV])
def test_models_state_and_landing_are_on_one_named_volume_that_every_dagster_container_mounts(variable):
    document = compose()
    volumes_seen = set()
    for name in DAGSTER_SERVICES:
        service = document["services"][name]
        path = environment(service)[variable]
        volume = volume_holding(path, named_volume_mounts(service, document["volumes"]))
        assert volume, f"{name}: {variable}={path} is not on a named volume"
        volumes_seen.add(volume)
    assert len(volumes_seen) == 1, f"{variable} is on different volumes: {volumes_seen}"


def test_the_models_are_on_a_volume_of_their_own_and_the_landing_folder_is_in_the_state():
    service = compose()["services"]["code-location"]
    env = environment(service)
    mounts = named_volume_mounts(service, compose()["volumes"])
    assert env[settings.MODEL_DIR_ENV] in mounts and env[settings.STATE_ENV] in mounts
    assert mounts[env[settings.MODEL_DIR_ENV]] != mounts[env[settings.STATE_ENV]]
    assert PurePosixPath(env[settings.LANDING_ENV]).is_relative_to(env[settings.STATE_ENV])


def test_compute_logs_are_shared_between_the_run_workers_and_the_webserver():
    # Dagster's local compute log manager writes under $DAGSTER_HOME/storage.
    document = compose()
    volumes_seen = set()
    for name in DAGSTER_SERVICES:
        service = document["services"][name]
        storage = str(PurePosixPath(environment(service)["DAGSTER_HOME"]) / "storage")
        volumes_seen.add(named_volume_mounts(service, document["volumes"]).get(storage))
    assert len(volumes_seen) == 1
    assert None not in volumes_seen


def test_without_a_dataset_file_the_asset_downloads_and_with_one_it_reads_the_mount():
    env = read_env_file(ROOT / ".env.example")
    env.pop("SMS_DATASET_FILE", None)
    unset = environment(compose(env)["services"]["code-location"])
    # Empty: DatasetResource then falls back to downloading the UCI zip.
    assert unset["SMS_DATASET_PATH"] == ""

    host_file = "../shared/data/SMSSpamCollection"
    service = compose({**env, "SMS_DATASET_FILE": host_file})["services"]["code-location"]
    binds = dict(tuple(spec.split(":")[:2]) for spec in service["volumes"])
    assert environment(service)["SMS_DATASET_PATH"] == binds[host_file]


# ---------------------------------------------------------------------------------------------------------
# The prediction API


def test_the_api_runs_sms_assets_serve_on_all_interfaces_of_the_published_port():
    service = compose()["services"][API_SERVICE]
    argv = command(service)
    assert (VENV_BIN / argv[0]).exists(), f"{argv[0]} is not installed by uv.lock"
    # The CLI's own parser: an unknown option exits with code 2 (SystemExit) and fails the test.
    args = cli.build_parser().parse_args(argv[1:])
    assert args.handler is cli.cmd_serve
    [(_, _, container_port)] = published_ports(service)
    assert (args.host, args.port) == ("0.0.0.0", container_port)


def test_the_api_healthcheck_asks_ready_on_the_port_the_api_listens_on():
    service = compose()["services"][API_SERVICE]
    port = cli.build_parser().parse_args(command(service)[1:]).port
    check = service["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"]
    assert (VENV_BIN / check[1]).exists()
    # urlopen raises on a status of 400 or more, so a 503 from /ready (no model, a store down) fails it.
    assert f"urllib.request.urlopen('http://127.0.0.1:{port}/ready', timeout=5)" in check[3]


def test_the_api_reads_the_models_volume_read_only_where_the_code_location_writes_it():
    document = compose()
    api, code = document["services"][API_SERVICE], document["services"]["code-location"]
    # One mount, nothing else: no Dagster storage, no state, no dataset.
    [spec] = api["volumes"]
    volume, target, mode = spec.split(":")
    assert (target, mode) == (environment(api)[settings.MODEL_DIR_ENV], "ro")
    code_models = environment(code)[settings.MODEL_DIR_ENV]
    assert volume == volume_holding(code_models, named_volume_mounts(code, document["volumes"]))


def test_the_api_serves_the_stores_and_project_the_dagster_containers_write(tmp_path):
    services_ = compose()["services"]
    api = environment(services_[API_SERVICE])
    for name in DAGSTER_SERVICES:
        dagster = environment(services_[name])
        for variable in (settings.POSTGRES_ENV, settings.REDIS_ENV, settings.PROJECT_ENV):
            assert api[variable] == dagster[variable], f"{name} and the API differ on {variable}"
    # The settings build the service's configuration as `sms-assets serve` does, the token included
    # (the state folder moved here: resolving the settings creates it).
    config = ServiceConfig.from_environment({**api, settings.STATE_ENV: str(tmp_path)})
    assert str(config.model_root) == api[settings.MODEL_DIR_ENV]
    assert config.api_token == read_env_file(ROOT / ".env.example")[settings.API_TOKEN_ENV]
    assert not set(api) & {"DAGSTER_HOME", "DAGSTER_POSTGRES_URL"}


def test_the_api_token_comes_from_dot_env_and_only_the_api_gets_it():
    raw = compose_raw()["services"][API_SERVICE]["environment"][settings.API_TOKEN_ENV]
    assert re.fullmatch(r"\$\{SMS_API_TOKEN:\?[^}]+\}", raw)
    env = read_env_file(ROOT / ".env.example")
    assert env[settings.API_TOKEN_ENV] not in (ROOT / "docker-compose.yml").read_text()
    for name in DAGSTER_SERVICES:
        assert settings.API_TOKEN_ENV not in environment(compose()["services"][name])
    del env[settings.API_TOKEN_ENV]
    with pytest.raises(MissingVariable, match=settings.API_TOKEN_ENV):
        compose(env)


def test_the_api_worker_count_defaults_to_two_and_dot_env_can_change_it():
    env = read_env_file(ROOT / ".env.example")
    env.pop(settings.API_WORKERS_ENV, None)
    assert settings.load(environment(compose(env)["services"][API_SERVICE])).api_workers == 2
    more = compose({**env, settings.API_WORKERS_ENV: "3"})
    assert settings.load(environment(more["services"][API_SERVICE])).api_workers == 3


# ---------------------------------------------------------------------------------------------------------
# dagster.yaml


def dagster_yaml() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deploy" / "compose" / "dagster.yaml").read_text())


def test_dagster_yaml_reads_only_variables_every_dagster_container_sets():
    config = dagster_yaml()
    assert env_references(config["storage"]["postgres"])
    for name in DAGSTER_SERVICES:
        env = environment(compose()["services"][name])
        assert env_references(config) <= set(env), f"{name} lacks a variable dagster.yaml reads"


@pytest.mark.parametrize("name", DAGSTER_SERVICES)
def test_dagster_storage_is_the_pipeline_database_through_an_installed_driver(name):
    env = environment(compose()["services"][name])
    [variable] = env_references(dagster_yaml()["storage"]["postgres"])
    # Same server, database and credentials as the pipeline: one Postgres to run and back up.
    storage = urls.postgres(env[variable])
    assert storage.set(query={}) == urls.postgres(env[settings.POSTGRES_ENV])
    # Every wait on it bounded, as on the project's own connections.
    assert dict(storage.query) == bounds.bounded_params()
    # The DBAPI module the URL names is in the locked environment (the image installs the same lock).
    assert make_url(env[variable]).get_dialect().import_dbapi()


def test_the_image_puts_dagster_yaml_in_the_dagster_home_the_containers_use():
    home = dockerfile_env()["DAGSTER_HOME"]
    assert image_path_of("deploy/compose/dagster.yaml") == f"{home}/dagster.yaml"
    for name in DAGSTER_SERVICES:
        assert environment(compose()["services"][name])["DAGSTER_HOME"] == home


# ---------------------------------------------------------------------------------------------------------
# The code location, the workspace and the commands


def test_the_code_location_module_exposes_the_definitions():
    service = compose()["services"]["code-location"]
    module = option(command(service), "-m", "--module-name")
    loaded = importlib.import_module(module)
    assert isinstance(loaded.defs, dg.Definitions)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert module == pyproject["tool"]["dagster"]["module_name"]


def test_the_compose_workspace_points_at_the_code_location_server():
    services_ = compose()["services"]
    argv = command(services_["code-location"])
    health = services_["code-location"]["healthcheck"]["test"][1:]
    workspace = yaml.safe_load((ROOT / "workspace-compose.yaml").read_text())
    [entry] = workspace["load_from"]
    server = entry["grpc_server"]
    assert server["host"] == "code-location"
    assert server["port"] == int(option(argv, "-p", "--port")) == int(option(health, "-p", "--port"))
    assert option(argv, "-h", "--host") == "0.0.0.0"  # reachable from the other containers
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert server["location_name"] == pyproject["tool"]["dagster"]["code_location_name"]


@pytest.mark.parametrize("name", ["webserver", "daemon"])
def test_webserver_and_daemon_load_the_workspace_file_the_image_holds(name):
    path = option(command(compose()["services"][name]), "-w", "--workspace")
    assert path == image_path_of("workspace-compose.yaml")


def test_the_webserver_listens_on_the_published_port_on_all_interfaces():
    webserver = compose()["services"]["webserver"]
    argv = command(webserver)
    [(_, _, container_port)] = published_ports(webserver)
    assert int(option(argv, "-p", "--port")) == container_port
    assert option(argv, "-h", "--host") == "0.0.0.0"
    assert f":{container_port}/" in webserver["healthcheck"]["test"][-1]


def test_the_image_default_command_is_the_code_location_command():
    cmd = [args for keyword, args in dockerfile_instructions() if keyword == "CMD"]
    assert len(cmd) == 1
    assert yaml.safe_load(cmd[0]) == command(compose()["services"]["code-location"])


def every_container_command() -> list[Any]:
    services_ = compose()["services"]
    params = []
    for name in DAGSTER_SERVICES:
        params.append(pytest.param(command(services_[name]), id=f"{name}-command"))
        params.append(pytest.param(services_[name]["healthcheck"]["test"][1:], id=f"{name}-healthcheck"))
    return params


@pytest.mark.parametrize("argv", every_container_command())
def test_each_command_is_a_binary_of_the_project_environment_that_takes_these_options(argv):
    binary = VENV_BIN / argv[0]
    assert binary.exists(), f"{argv[0]} is not installed by uv.lock"
    if argv[0] == "python":
        return
    # Click parses every option before it acts on --help: an unknown option fails with exit code 2.
    result = subprocess.run(
        [str(binary), *argv[1:], "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{shlex.join(argv)}\n{result.stderr}"


def test_the_code_location_command_serves_and_passes_its_own_healthcheck(tmp_path):
    # The container's command, on a free loopback port instead of 0.0.0.0:4000.
    service = compose()["services"]["code-location"]
    port = str(free_port())
    argv = [part.replace("0.0.0.0", "127.0.0.1") for part in command(service)]
    argv[argv.index("-p") + 1] = port
    health = service["healthcheck"]["test"][1:]
    health[health.index("-p") + 1] = port

    # The container's settings (its service URLs name hosts of the compose network, which loading the
    # definitions does not reach), and none of this machine's SMS_* variables.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SMS_", "DAGSTER_"))}
    env.update({key: value for key, value in environment(service).items() if key.startswith("SMS_")})
    log = tmp_path / "code-server.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [str(VENV_BIN / argv[0]), *argv[1:]], env=env, cwd=tmp_path, stdout=output, stderr=output
        )

    def healthy_or_exited() -> None:
        if server.poll() is None:
            subprocess.run(
                [str(VENV_BIN / health[0]), *health[1:]], env=env, capture_output=True, text=True, check=True
            )

    try:
        try:
            wait_until(healthy_or_exited, timeout_s=120, interval_s=1)
        except subprocess.CalledProcessError as unhealthy:
            raise AssertionError(
                f"no healthy code server on {port}: {unhealthy.stdout}{unhealthy.stderr}\n{log.read_text()}"
            ) from unhealthy
        assert server.poll() is None, f"the code server exited:\n{log.read_text()}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # Shutdown speed is not what this test checks; a loaded machine must not fail it.
            server.kill()
            server.wait()


# ---------------------------------------------------------------------------------------------------------
# The Dockerfile


def test_the_image_is_python_3_11_slim_as_pyproject_requires():
    [base] = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert base == "python:3.11-slim"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11,<3.12"


def test_the_image_installs_the_uv_the_makefile_pins():
    makefile = (ROOT / "Makefile").read_text()
    pinned = re.search(r"^UV_VERSION\s*:=\s*(\S+)", makefile, re.MULTILINE)
    assert pinned
    assert dockerfile_env()["UV_VERSION"] == pinned[1]
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    assert any('"uv==${UV_VERSION}"' in run for run in runs)


def test_the_image_and_the_readme_setup_both_install_compiled_bytecode() -> None:
    """Every Dagster run and step starts a fresh interpreter: without compiled bytecode each one compiles
    Dagster, pandas and Feast from source wherever PYTHONDONTWRITEBYTECODE is set."""
    assert dockerfile_env()["UV_COMPILE_BYTECODE"] == "1"
    assert "--compile-bytecode" in (ROOT / "Makefile").read_text()
    # This environment was installed by the README's command, so its modules are compiled already.
    for module in (dg, pd):
        source = module.__file__
        assert source and Path(importlib.util.cache_from_source(source)).is_file(), source


def test_the_image_installs_exactly_the_lock_without_dev_tools():
    instructions = dockerfile_instructions()
    syncs = [i for i, (keyword, args) in enumerate(instructions) if keyword == "RUN" and "uv sync" in args]
    assert syncs
    for index in syncs:
        args = shlex.split(instructions[index][1])
        assert "--frozen" in args and "--no-dev" in args
    lock_copied = [
        i for i, (keyword, args) in enumerate(instructions) if keyword == "COPY" and "uv.lock" in args
    ]
    assert lock_copied and lock_copied[0] < syncs[0]
    assert image_path_of("uv.lock") == "/opt/dagster/app/uv.lock"
    assert "/opt/dagster/app/.venv/bin" in dockerfile_env()["PATH"].split(":")


def test_the_image_holds_the_code_the_api_the_feature_repo_and_the_workspaces():
    for repo_file in [
        "sms_assets/definitions.py",
        "sms_api/app.py",
        "feature_repo/feature_store.yaml",
        "workspace.yaml",
        "workspace-compose.yaml",
        "pyproject.toml",
        "README.md",
    ]:
        assert (ROOT / repo_file).exists()
        assert image_path_of(repo_file).startswith("/opt/dagster/app/")


def test_the_dockerignore_keeps_local_state_out_but_lets_every_copied_file_in():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    ignored.discard("")
    assert {".git", ".venv", ".tools", ".sms_state", ".pytest_cache", ".ruff_cache"} <= ignored
    for sources, _ in dockerfile_copies():
        for source in sources:
            assert source.rstrip("/") not in ignored, (
                f"the Dockerfile copies {source}, which .dockerignore drops"
            )


def shell_arguments(tokens: list[str], program: str) -> list[str]:
    """The operands of `program` in a `a && b && c` command line, options dropped."""
    start = tokens.index(program) + 1
    end = tokens.index("&&", start) if "&&" in tokens[start:] else len(tokens)
    return [token for token in tokens[start:end] if not token.startswith("-")]


def test_the_image_runs_as_a_user_that_owns_the_folders_compose_mounts_volumes_on():
    env = dockerfile_env()
    instructions = dockerfile_instructions()
    [user] = [args for keyword, args in instructions if keyword == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    [setup] = [shlex.split(interpolate(args, env)) for keyword, args in instructions if "mkdir" in args]
    created = shell_arguments(setup, "mkdir")
    owned = shell_arguments(setup, "chown")[1:]  # after user:group

    document = compose()
    for name in PROJECT_SERVICES:
        service = document["services"][name]
        for path in named_volume_mounts(service, document["volumes"]):
            # A new named volume copies the ownership of the folder it is mounted over.
            assert path in created, f"{name} mounts a volume on {path}, which the image does not create"
            assert any(path.startswith(folder) for folder in owned), f"{path} is not the user's"
        compose_env = environment(service)
        assert compose_env["SMS_STATE_DIR"] == env["SMS_STATE_DIR"]
        assert compose_env["SMS_MODEL_DIR"] == env["SMS_MODEL_DIR"]
