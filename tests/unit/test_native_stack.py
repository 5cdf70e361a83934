"""The harness that runs compose services natively (tests/native_stack.py) on a compose file of its own:
what it adapts, the order and health checks it honours, and that its stop finds a process left behind."""

from pathlib import Path
from typing import Any

from sms_core.embedded import wait_until
from tests.conftest import PROJECT_ROOT
from tests.native_stack import native_stack, seconds

HEALTH = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=5)"
DOCUMENT: dict[str, Any] = {
    "volumes": {"shared": None},
    "services": {
        # Listed first but started second: it waits for web's health check.
        "leaky": {
            # Ends on SIGTERM, but leaves its background child running.
            "command": ["sh", "-c", "sleep 300 & exec sleep 300"],
            "environment": {
                "DB": "postgresql+psycopg2://app:pw@postgres:5432/app",
                "CACHE": "redis://redis:6379/0",
                "ELSEWHERE": "https://example.org/x",
                "DATA": "/data/sub",
                "HOME_DIR": "/opt/app",
            },
            "volumes": ["shared:/data"],
            "depends_on": {"web": {"condition": "service_healthy"}},
        },
        "web": {
            "command": [
                "python", "-m", "uvicorn", "benchmarks.empty_app:app", "--host", "0.0.0.0", "--port", "8000"
            ],
            "volumes": ["shared:/srv/data:ro"],
            "healthcheck": {"test": ["CMD", "python", "-c", HEALTH], "timeout": "5s"},
        },
    },
}  # fmt: skip


def test_hosts_ports_and_paths_are_adapted_and_nothing_else(tmp_path: Path) -> None:
    stack = native_stack(
        DOCUMENT,
        ["leaky", "web"],
        tmp_path,
        servers={"postgres": "postgresql://tester@127.0.0.1:5432/mine", "redis": "redis://127.0.0.1:6399/3"},
        overrides={"EXTRA": "1"},
        image_files=(),
    )
    assert list(stack.services) == ["web", "leaky"]
    leaky, web = stack.services["leaky"], stack.services["web"]
    shared = tmp_path / "volumes" / "shared"
    assert leaky.env["DB"] == "postgresql+psycopg2://tester@127.0.0.1:5432/mine"
    assert leaky.env["CACHE"] == "redis://127.0.0.1:6399/3"
    assert leaky.env["ELSEWHERE"] == "https://example.org/x"
    assert leaky.env["DATA"] == str(shared / "sub")
    assert leaky.env["HOME_DIR"] == str(leaky.root / "opt" / "app")
    assert leaky.env["EXTRA"] == "1"
    # Both containers' mount points lead to the one folder of the named volume.
    assert (leaky.root / "data").resolve() == (web.root / "srv" / "data").resolve() == shared.resolve()

    [(container_port, port)] = web.ports.items()
    assert container_port == 8000 and port != 8000
    assert web.argv[-4:] == ["--host", "127.0.0.1", "--port", str(port)]
    assert web.healthcheck and f"http://127.0.0.1:{port}/health" in web.healthcheck[-1]
    assert web.healthcheck_timeout_s == 5
    assert leaky.argv == DOCUMENT["services"]["leaky"]["command"]


def test_stop_reports_and_ends_what_sigterm_left_behind(tmp_path: Path) -> None:
    stack = native_stack(DOCUMENT, ["leaky", "web"], tmp_path, servers={}, overrides={}, image_files=())
    for service in stack.services.values():
        service.cwd = PROJECT_ROOT  # where `benchmarks` imports from
    try:
        stack.start(healthy_timeout_s=120)
        leaky = stack.services["leaky"]
        # Both sleeps running: the shell has forked its background child and exec'd the other.
        wait_until(lambda: _assert_equal(sorted(p.name() for p in leaky.session()), ["sleep", "sleep"]), 30)
    finally:
        left = stack.stop(timeout_s=10)
    # web ends with its command; leaky's `sleep 300 &` outlives SIGTERM and is reported, then killed.
    assert left == {"leaky": ["sleep 300"]}
    assert stack.services["leaky"].session() == []
    assert stack.services["web"].session() == []


def test_compose_durations() -> None:
    assert [seconds(d) for d in ("10s", "1m30s", "500ms", "2h")] == [10, 90, 0.5, 7200]


def _assert_equal(actual: object, expected: object) -> None:
    assert actual == expected
