"""The whole asset graph at N messages: wall time, peak memory and rows per second per step.

For each N, a deterministic generator expands the real SMS Spam Collection to N messages: the real
lines first, then lines drawn from them with a fixed seed. Ingestion gives line n the id n and the
event time EPOCH + (n - 1) minutes, so every generated message has a new id beyond the real ones and
a later timestamp (1M messages span about two years).

Each N runs in a child process of its own (`python -m benchmarks.scale --child ...`) on a database, a
Feast project and a state folder of its own, removed afterwards: the child's peak RSS is the graph's,
not the parent's. The child runs every asset and check in one Dagster run, as `sms-assets run` does,
samples its own RSS every 20 ms, and reads each step's start and end from the run's event log.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import redis
from redis.cluster import RedisCluster

from sms_assets.lib import settings, urls

SEED = 20_261_126
SAMPLE_EVERY_S = 0.02
# The stages whose cost should grow with N, and the rows each one handles.
STAGE_ROWS = {
    "raw_sms_messages": "ingestion",
    "sms_features": "features",
    "training_set": "historical retrieval",
    "online_store": "materialization",
}


def generate(source: Path, target: Path, n: int, seed: int = SEED) -> int:
    """Write `n` messages to `target` in the dataset's format: the source's lines, then seeded draws."""
    lines = source.read_bytes().splitlines(keepends=True)
    lines = [line if line.endswith(b"\n") else line + b"\n" for line in lines if line.strip()]
    rng = random.Random(seed)
    with target.open("wb") as out:
        out.writelines(lines[:n])
        for start in range(len(lines), n, 100_000):
            out.writelines(rng.choices(lines, k=min(100_000, n - start)))
    return n


class RssSampler(threading.Thread):
    """This process's resident memory, sampled on a timer: (monotonic time, bytes) pairs."""

    def __init__(self) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()
        self._process = psutil.Process()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.time(), self._process.memory_info().rss))
            self._stop_event.wait(SAMPLE_EVERY_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def peak(self, start: float, end: float) -> int:
        # The last sample before the window too: a step shorter than the interval still gets one.
        before = [rss for t, rss in self.samples if t < start][-1:]
        return max([*before, *(rss for t, rss in self.samples if start <= t <= end)], default=0)


def child(n: int, dataset: Path, output: Path) -> None:
    """Run the whole graph once in this process on the environment's services; write step figures."""
    import dagster as dg

    from sms_assets.definitions import defs
    from sms_assets.defs.resources import project_resources

    sampler = RssSampler()
    sampler.start()
    instance = dg.DagsterInstance.ephemeral()
    resources = project_resources(settings.resolve())
    everything = [*(defs.assets or []), *(defs.asset_checks or [])]
    started = time.time()
    result = dg.materialize(everything, resources=resources, instance=instance)
    ended = time.time()
    sampler.stop()
    if not result.success:
        raise SystemExit(f"the graph failed at N={n}")

    starts: dict[str, float] = {}
    steps: dict[str, dict[str, Any]] = {}
    for record in instance.all_logs(result.run_id):
        event = record.dagster_event
        if event is None or record.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[record.step_key] = record.timestamp
        elif event.event_type_value == "STEP_SUCCESS":
            begin = starts[record.step_key]
            steps[record.step_key] = {
                "seconds": round(record.timestamp - begin, 3),
                "peak_rss_mib": round(sampler.peak(begin, record.timestamp) / 2**20, 1),
            }
    for step, stage in STAGE_ROWS.items():
        steps[step]["stage"] = stage
        steps[step]["rows"] = n
        steps[step]["rows_per_s"] = round(n / steps[step]["seconds"]) if steps[step]["seconds"] else None
        steps[step]["us_per_row"] = round(steps[step]["seconds"] / n * 1e6, 3)
    output.write_text(
        json.dumps(
            {
                "messages": n,
                "graph_seconds": round(ended - started, 3),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "steps": steps,
            }
        )
    )


def run_size(n: int, source: Path, admin_postgres: str, redis_url: str) -> dict[str, Any]:
    """The graph at N messages in a child process, on a database and Feast project made for it."""
    import psycopg
    from psycopg import sql

    tag = f"bench_scale_{n}_{uuid.uuid4().hex[:8]}"
    url = urls.postgres(admin_postgres).set(database=tag).render_as_string(hide_password=False)
    admin = urls.libpq_conninfo(admin_postgres)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(tag)))
    try:
        with tempfile.TemporaryDirectory(prefix="sms-bench-") as folder:
            dataset = Path(folder) / "SMSSpamCollection"
            began = time.perf_counter()
            generate(source, dataset, n)
            generated = time.perf_counter() - began
            output = Path(folder) / "result.json"
            slice_settings = {
                settings.POSTGRES_ENV: url,
                settings.REDIS_ENV: redis_url,
                settings.PROJECT_ENV: tag,
                settings.STATE_ENV: folder,
                settings.DATASET_ENV: str(dataset),
            }
            env = {**os.environ, **settings.resolve(slice_settings), "DAGSTER_HOME": folder}
            command = [sys.executable, "-m", "benchmarks.scale", "--child", str(n), str(dataset), str(output)]
            began = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            process_seconds = time.perf_counter() - began
            if done.returncode != 0:
                raise RuntimeError(f"the graph at N={n} failed:\n{done.stderr[-4000:]}")
            figures = json.loads(output.read_text())
            figures["redis_bytes_per_message"] = redis_bytes_per_message(redis_url, tag)
            figures["generate_seconds"] = round(generated, 3)
            figures["process_seconds"] = round(process_seconds, 3)
            return figures
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(tag)))
        delete_project_keys(redis_url, tag)


def redis_bytes_per_message(redis_url: str, project: str, sample: int = 2_000) -> float:
    """Redis memory per message: the mean MEMORY USAGE of a sample of the project's keys (Feast keeps
    one hash per message, holding every feature view's values for it)."""
    client = urls.redis_client(redis_url)
    try:
        sizes = []
        for key in client.scan_iter(match=f"*{project}", count=10_000):
            if key.startswith(b"sms_assets:"):
                continue  # the sync's watermark, not a message
            sizes.append(memory_usage(client, key))
            if len(sizes) >= sample:
                break
        return round(sum(sizes) / len(sizes), 1) if sizes else 0.0
    finally:
        client.close()


def memory_usage(client: redis.Redis | RedisCluster, key: bytes) -> Any:
    """MEMORY USAGE of one key, on a cluster too."""
    if isinstance(client, RedisCluster):
        # RedisCluster finds this command's key by asking a server (COMMAND GETKEYS) and reads the
        # reply as text, so a binary key such as Feast's hashes to the wrong slot and the command
        # bounces between nodes: it goes to the node redis-py itself maps the key to.
        return client.memory_usage(key, target_nodes=client.get_node_from_key(key)) or 0
    return client.memory_usage(key) or 0


def delete_project_keys(redis_url: str, project: str) -> None:
    """Remove one Feast project's online rows (its keys end with the project name)."""
    client = urls.redis_client(redis_url)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"*{project}", count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


def run(sizes: list[int], source: Path) -> dict[str, Any]:
    """The graph at each size, and the per-row cost of each stage relative to the previous size."""
    resolved = settings.resolve()
    admin_postgres, redis_url = resolved[settings.POSTGRES_ENV], resolved[settings.REDIS_ENV]
    runs = {}
    for n in sizes:
        print(f"scale: running the whole graph at N={n:,} ...", file=sys.stderr, flush=True)
        runs[str(n)] = run_size(n, source, admin_postgres, redis_url)
    return {"method": (__doc__ or "").split("\n\n", 1)[1].strip(), "sizes": sizes, "runs": runs}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    parser.add_argument("--child", nargs=3, metavar=("N", "DATASET", "OUTPUT"), required=True)
    args = parser.parse_args(argv)
    n, dataset, output = args.child
    child(int(n), Path(dataset), Path(output))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
