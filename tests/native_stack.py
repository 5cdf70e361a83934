"""docker-compose.yml's project services run as local processes, for a machine without a container engine.

Each service runs its own `command`, with the environment the compose file gives it on top of the image's
ENV, in a folder that stands for its container's filesystem. Only what a container engine would provide
is changed: host names of the compose network become this machine's servers (Postgres and Redis) or
127.0.0.1 (the other services), each port a service listens on becomes a free loopback port, each
container path a path under the service's folder, and each named volume a folder the services that mount
it share (a symlink where the container path would be). Health checks are the compose file's own
commands, adapted the same way; `depends_on` decides the order.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import psutil
import yaml
from sqlalchemy.engine import make_url

from sms_core.embedded import free_port, wait_until
from tests.unit.test_compose import (
    ROOT,
    VENV_BIN,
    command,
    dockerfile_env,
    dockerfile_instructions,
    environment,
    image_path_of,
    option,
)

# The image's ENV that a process here must see too (PATH and the uv settings are the machine's own).
IMAGE_ENV = ("DAGSTER_HOME", "SMS_STATE_DIR", "SMS_MODEL_DIR", "PYTHONUNBUFFERED")
# Files of this repository that the services read at the path the image holds them.
IMAGE_FILES = ("deploy/compose/dagster.yaml", "workspace-compose.yaml")


def seconds(duration: str) -> float:
    """A compose duration ("10s", "1m30s", "500ms") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a compose duration: {duration!r}"
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(number) * scale[unit] for number, unit in parts)


@dataclass
class NativeService:
    name: str
    root: Path  # stands for the container's "/"
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    healthcheck: list[str] | None
    healthcheck_timeout_s: float
    depends_on: dict[str, str]
    ports: dict[int, int]  # container port -> the loopback port it listens on here
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as output:
            # A session of its own, as a container's processes are: whatever it starts can be found later.
            # And, as in a container, every signal at its default and none blocked, whatever the test
            # process inherited (a shell's `&` ignores SIGINT, which Dagster's code server sends its
            # child to stop it).
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=output,
                stderr=output,
                start_new_session=True,
                preexec_fn=_default_signals,
            )

    def output(self, tail: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-tail:]

    def check_health(self) -> None:
        """Run the compose health check once; raises with its output when it fails."""
        assert self.process and self.healthcheck, self.name
        if self.process.poll() is not None:
            raise ServiceExited(f"{self.name} exited with {self.process.returncode}:\n{self.output()}")
        subprocess.run(
            self.healthcheck,
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            timeout=self.healthcheck_timeout_s,
            check=True,
        )

    def wait_healthy(self, timeout_s: float) -> None:
        try:
            wait_until(self.check_health, timeout_s=timeout_s, interval_s=1)
        except subprocess.CalledProcessError as unhealthy:
            raise AssertionError(
                f"{self.name} is not healthy after {timeout_s} s: {unhealthy.stdout!r} {unhealthy.stderr!r}\n"
                f"{self.output()}"
            ) from unhealthy

    def session(self) -> list[psutil.Process]:
        """Every live process of the service's session: its command and whatever that started."""
        assert self.process
        found = []
        for candidate in psutil.process_iter():
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if (
                    os.getsid(candidate.pid) == self.process.pid
                    and candidate.status() != psutil.STATUS_ZOMBIE
                ):
                    found.append(candidate)
        return found


class ServiceExited(RuntimeError):
    pass


@dataclass
class NativeStack:
    services: dict[str, NativeService]  # in the order depends_on allows them to start
    volumes: dict[str, Path]
    started: list[NativeService] = field(default_factory=list)

    def start(self, healthy_timeout_s: float) -> None:
        """Start each service once the services it depends on are healthy (by their own health check)."""
        for service in self.services.values():
            for dependency, condition in service.depends_on.items():
                if dependency in self.services and condition == "service_healthy":
                    self.services[dependency].wait_healthy(healthy_timeout_s)
            service.start()
            self.started.append(service)

    def stop(self, timeout_s: float) -> dict[str, list[str]]:
        """SIGTERM to each service's command, the last started first, as `docker compose down` sends
        it; after `timeout_s` SIGKILL to whatever is left of a session, as the engine would. Returns
        what SIGTERM left running, by service (empty when every process ended by itself)."""
        left: dict[str, list[str]] = {}
        for service in reversed(self.started):
            assert service.process
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.process.wait(timeout=timeout_s)
            _, alive = psutil.wait_procs(service.session(), timeout=timeout_s)
            if alive or service.process.poll() is None:
                left[service.name] = [" ".join(p.cmdline()[:6]) for p in alive]
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(service.process.pid, signal.SIGKILL)
                service.process.wait()
                psutil.wait_procs(alive, timeout=timeout_s)
        return left


def native_stack(
    document: Mapping[str, Any],
    names: list[str],
    folder: Path,
    servers: Mapping[str, str],
    overrides: Mapping[str, str],
    image_files: tuple[str, ...] = IMAGE_FILES,
) -> NativeStack:
    """The services `names` of a compose document (interpolated), ready to start under `folder`.

    `servers` maps a host name of the compose network to the URL of the server that stands for it here
    (e.g. "postgres" -> a database of the test's own); `overrides` sets variables outright.
    """
    volumes = {name: folder / "volumes" / name for name in document["volumes"]}
    for path in volumes.values():
        path.mkdir(parents=True)
    ports = {name: _listening_ports(document["services"][name]) for name in names}
    services = {}
    for name in _start_order(document, names):
        spec = document["services"][name]
        root = folder / "containers" / name
        mounts = _mounts(spec, volumes, document["volumes"])
        for target, source in mounts.items():
            link = root / target.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source)

        def here(path: str, root: Path = root, mounts: dict[str, Path] = mounts) -> str:
            return _host_path(path, root, mounts)

        for repo_file in image_files:
            image_file = Path(here(image_path_of(repo_file)))
            image_file.parent.mkdir(parents=True, exist_ok=True)
            text = (ROOT / repo_file).read_text()
            if repo_file == "workspace-compose.yaml":
                text = _local_workspace(text, ports)
            image_file.write_text(text)

        env = {key: value for key, value in os.environ.items() if not key.startswith(("SMS_", "DAGSTER_"))}
        image = dockerfile_env()
        env.update({key: here(image[key]) if image[key].startswith("/") else image[key] for key in IMAGE_ENV})
        for key, value in environment(spec).items():
            env[key] = here(value) if value.startswith("/") else _local_url(value, servers)
        env.update(overrides)
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"

        cwd = Path(here(_workdir()))
        cwd.mkdir(parents=True, exist_ok=True)
        mine = ports[name]
        check = spec.get("healthcheck", {})
        test = check.get("test")
        assert test is None or test[0] == "CMD", f"{name}: only exec-form health checks are supported"
        services[name] = NativeService(
            name=name,
            root=root,
            argv=[_local_arg(arg, mine, here) for arg in command(spec)],
            env=env,
            cwd=cwd,
            healthcheck=[_local_arg(arg, mine, here) for arg in test[1:]] if test else None,
            healthcheck_timeout_s=seconds(check.get("timeout", "30s")),
            depends_on={dep: cond["condition"] for dep, cond in spec.get("depends_on", {}).items()},
            ports=mine,
            log=folder / f"{name}.log",
        )
    return NativeStack(services, volumes)


def _start_order(document: Mapping[str, Any], names: list[str]) -> list[str]:
    order: list[str] = []
    while len(order) < len(names):
        ready = [
            name
            for name in names
            if name not in order
            and all(
                dep in order or dep not in names for dep in document["services"][name].get("depends_on", {})
            )
        ]
        assert ready, f"depends_on has a cycle among {set(names) - set(order)}"
        order += ready
    return order


def _listening_ports(spec: Mapping[str, Any]) -> dict[int, int]:
    """The port the service's command listens on (its -p/--port option), mapped to a free one here."""
    argv = command(spec)
    if not {"-p", "--port"} & set(argv):
        return {}
    return {int(option(argv, "-p", "--port")): free_port()}


def _mounts(
    spec: Mapping[str, Any], volumes: dict[str, Path], declared: Mapping[str, Any]
) -> dict[str, Path]:
    """Container path -> what is mounted there: a named volume's folder, or a bound host path."""
    mounts = {}
    for entry in spec.get("volumes", []):
        source, target = entry.split(":")[:2]
        mounts[target] = volumes[source] if source in declared else Path(source).resolve()
    return mounts


def _host_path(path: str, root: Path, mounts: Mapping[str, Path]) -> str:
    """Where a container path is here: inside the volume or bind mounted over it, else under `root`."""
    holders = [target for target in mounts if PurePosixPath(path).is_relative_to(target)]
    if holders:
        target = max(holders, key=len)
        return str(mounts[target] / PurePosixPath(path).relative_to(target))
    return str(root / path.lstrip("/"))


def _local_url(value: str, servers: Mapping[str, str]) -> str:
    """A URL naming a host of the compose network, pointed at the server standing for it (the URL's own
    driver kept: dagster-postgres needs psycopg2); any other value unchanged."""
    if "://" not in value:
        return value
    url = make_url(value)
    if url.host is None or url.host not in servers:
        return value
    return make_url(servers[url.host]).set(drivername=url.drivername).render_as_string(hide_password=False)


def _local_arg(arg: str, ports: Mapping[int, int], here: Any) -> str:
    """A command-line argument: all interfaces become loopback, the service's ports the ones here,
    absolute container paths their place here."""
    if arg == "0.0.0.0":
        return "127.0.0.1"
    for container_port, port in ports.items():
        if arg == str(container_port):
            return str(port)
        arg = arg.replace(f"127.0.0.1:{container_port}/", f"127.0.0.1:{port}/")
    return here(arg) if arg.startswith("/") else arg


def _local_workspace(text: str, ports: Mapping[str, Mapping[int, int]]) -> str:
    """workspace-compose.yaml with each gRPC server's service name and port as they are here."""
    workspace = yaml.safe_load(text)
    for entry in workspace["load_from"]:
        server = entry["grpc_server"]
        server["port"] = ports[server["host"]][server["port"]]
        server["host"] = "127.0.0.1"
    return yaml.safe_dump(workspace)


def _workdir() -> str:
    [workdir] = [args for keyword, args in dockerfile_instructions() if keyword == "WORKDIR"]
    return workdir


def _default_signals() -> None:
    """In the child, before exec: the stop signals at their defaults, and nothing blocked."""
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
