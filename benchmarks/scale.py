"""The whole asset graph at N messages: wall time, peak memory and rows per second per step.

For each N, a deterministic generator expands the real SMS Spam Collection to N messages: the real
lines first, then lines drawn from them with a fixed seed, each varied so that its text is new, as on
real traffic: every digit after the first of a number (phone numbers, amounts, codes) redrawn, and one
or two of its words replaced by words of messages of the same label, drawn by their frequency there.
Lengths, n-grams and labels keep the corpus's shape; the report gives the distinct texts and the share
of duplicates for each N. Ingestion gives line n the id n and the event time EPOCH + (n - 1) minutes,
so every generated message has a new id beyond the real ones and a later timestamp (1M messages span
about two years).

Each N runs in a child process of its own (`python -m benchmarks.scale --child ...`) on a database, a
Feast project, a state folder and a Dagster instance of its own, removed afterwards. The child runs
every asset and check in one Dagster run, as `sms-assets run` does (`dg launch --assets '*'`, so
through the definitions' executor: each step a process of its own, two at once), samples the RSS of
every process of the run every 20 ms, and reads each step's start, end and process from the run's
event log, and how many pieces of the Redis sync ran at once.

Then the same child changes 1% of the messages, a third each way: edited in place (varied as above),
removed (the dataset's last lines), and added (new messages and their labels landed as one batch in the
landing folder), and runs the whole graph again on the same database and instance: the second run's
time beside the first's says whether a run costs what changed.

Last, with the graph converged at N, the arrivals worker starts beside it (as `sms-assets dev` starts
it) and batches of new messages land in the landing folder, one at a fixed interval: each is timed from
its landing until Redis serves every one of its messages, as `sms-assets simulate --measure` does.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate, chain
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import redis
from redis.cluster import RedisCluster

from sms_core import settings, urls

SEED = 20_261_126
SAMPLE_EVERY_S = 0.02
# The stages whose cost should grow with N, and the rows each one handles.
STAGE_ROWS = {
    "raw_sms_messages": "ingestion",
    "sms_features": "features",
    "training_set": "historical retrieval",
    "online_store": "materialization",
}
# The assets that fan out over pieces, and the op of their pieces.
CHANGE_SHARE = 0.01  # of the messages changed before the second run: a third edited, removed, added
GRAPH_PIECES = {"sms_features": "compute_feature_piece", "online_store": "write_online_piece"}


# A digit that follows another: the first digit of a number keeps its shape (07..., 0800..., £1...).
LATER_DIGIT = re.compile(rb"(?<=\d)\d")
# A whole word, not a piece of one such as the "ll" of "you'll".
WORD = re.compile(rb"(?<![A-Za-z'])[A-Za-z]{2,}(?![A-Za-z'])")
DIGITS = [bytes((digit,)) for digit in b"0123456789"]


@dataclass(frozen=True)
class Arrivals:
    """The arrivals measured once the graph has converged: batches of new messages, one per interval."""

    batches: int = 10
    batch_size: int = 500
    interval_s: float = 10.0


QUICK_ARRIVALS = Arrivals(batches=2, batch_size=50, interval_s=2.0)


@dataclass(frozen=True)
class Generated:
    messages: int
    distinct_texts: int

    @property
    def duplicate_share(self) -> float:
        return 1 - self.distinct_texts / self.messages if self.messages else 0.0


class Variation:
    """The seeded rule that turns a drawn line into a new message of the same label."""

    def __init__(self, lines: list[bytes], rng: random.Random) -> None:
        self.rng = rng
        counts: dict[bytes, Counter[bytes]] = {}
        for line in lines:
            label, _, text = line.partition(b"\t")
            counts.setdefault(label, Counter()).update(WORD.findall(text))
        self.words = {label: (list(c), list(accumulate(c.values()))) for label, c in counts.items()}

    def digit(self, _: re.Match[bytes]) -> bytes:
        return DIGITS[self.rng.randrange(10)]

    def __call__(self, line: bytes) -> bytes:
        label, _, text = line.rstrip(b"\n").partition(b"\t")
        text = LATER_DIGIT.sub(self.digit, text)
        spans = [match.span() for match in WORD.finditer(text)]
        words, weights = self.words[label]
        replaced = self.rng.sample(spans, min(len(spans), self.rng.choice((1, 2))))
        for start, end in sorted(replaced, reverse=True):
            text = text[:start] + self.rng.choices(words, cum_weights=weights)[0] + text[end:]
        return label + b"\t" + text + b"\n"


def generate(source: Path, target: Path, n: int, seed: int = SEED, vary: bool = True) -> Generated:
    """Write `n` messages to `target` in the dataset's format: the source's lines, then seeded draws,
    each varied into a new text unless `vary` is false (the repeated-lines profile)."""
    lines = source.read_bytes().splitlines(keepends=True)
    lines = [line if line.endswith(b"\n") else line + b"\n" for line in lines if line.strip()]
    rng = random.Random(seed)
    variation = Variation(lines, rng) if vary else None
    digests = np.empty(n, dtype=np.uint64)
    written = 0
    with target.open("wb") as out:
        drawn = (rng.choices(lines, k=min(100_000, n - start)) for start in range(len(lines), n, 100_000))
        varied = ([variation(line) for line in chunk] if variation else chunk for chunk in drawn)
        for chunk in chain([lines[:n]], varied):
            out.writelines(chunk)
            for line in chunk:
                text = line.partition(b"\t")[2].rstrip(b"\n")
                digests[written] = int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")
                written += 1
    return Generated(written, int(np.unique(digests[:written]).size))


def change(dataset: Path, landing: Path, share: float, seed: int = SEED + 1) -> dict[str, int]:
    """Change `share` of the dataset's messages, a third each way: texts edited in place (varied, as the
    generator varies a drawn line), the last lines removed, and new messages landed with their labels
    as one batch. Returns how many of each."""
    from sms_assets.defs.ingestion.batches import LABELS_HEADER, MESSAGES_HEADER
    from sms_assets.defs.ingestion.landing import LandingFolder

    lines = dataset.read_bytes().splitlines(keepends=True)
    third = max(1, int(len(lines) * share / 3))
    rng = random.Random(seed)
    variation = Variation(lines, rng)
    for i in rng.sample(range(len(lines) - third), third):
        lines[i] = variation(lines[i])
    dataset.write_bytes(b"".join(lines[:-third]))
    now = datetime.now(UTC)
    added = [variation(line).rstrip(b"\n").decode().split("\t", 1) for line in rng.choices(lines, k=third)]
    rows = [(f"bench-change-{i}", label, text) for i, (label, text) in enumerate(added)]
    folder = LandingFolder(landing, max_bytes=1 << 30)
    folder.land("bench-change-messages.tsv", MESSAGES_HEADER, [(i, now, text) for i, _, text in rows])
    folder.land("bench-change-labels.tsv", LABELS_HEADER, [(i, now, label) for i, label, _ in rows])
    return {"edited": third, "removed": third, "added": third}


class RssSampler(threading.Thread):
    """The resident memory of a process and of every process under it, sampled on a timer: each
    process's peak, and the peak of their sum."""

    def __init__(self, root: int) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.peaks: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.tree_peak = 0
        self._stop_event = threading.Event()
        self._root = psutil.Process(root)

    def run(self) -> None:
        while not self._stop_event.is_set():
            total = 0
            try:
                processes = [self._root, *self._root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in processes:
                try:
                    rss = process.memory_info().rss
                    if process.pid not in self.names:
                        self.names[process.pid] = " ".join(process.cmdline()[:6])
                except psutil.NoSuchProcess:  # ended between the listing and the reading
                    continue
                total += rss
                self.peaks[process.pid] = max(rss, self.peaks.get(process.pid, 0))
            self.tree_peak = max(self.tree_peak, total)
            self._stop_event.wait(SAMPLE_EVERY_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _mib(n: int) -> float:
    return round(n / 2**20, 1)


def covered(intervals: list[tuple[float, float]]) -> float:
    """How long at least one of the intervals was under way."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def child(n: int, dataset: Path, output: Path, landing: Arrivals) -> None:
    """Run the whole graph once as `sms-assets run` does, then again after 1% of the messages changed;
    write the figures of both."""
    figures = measured_run(n)
    changed = change(dataset, Path(os.environ[settings.LANDING_ENV]), CHANGE_SHARE)
    again = measured_run(n, rows=False)
    figures["change_run"] = {
        "share": CHANGE_SHARE,
        **changed,
        "graph_seconds": again["graph_seconds"],
        "ratio_to_first": round(again["graph_seconds"] / figures["graph_seconds"], 4),
        "peak_rss_mib": again["peak_rss_mib"],
        "steps": {key: {"seconds": step["seconds"]} for key, step in again["steps"].items()},
    }
    figures["arrivals"] = arrivals(dataset, landing)
    output.write_text(json.dumps(figures))


def arrivals(dataset: Path, landing: Arrivals) -> dict[str, Any]:
    """Start the arrivals worker, land batches of new messages (the dataset's last texts under new ids),
    and time each until Redis serves all of it."""
    from sms_assets.defs.ingestion import simulate
    from sms_assets.defs.ingestion.dataset import parse_messages
    from sms_assets.defs.resources import project_resources
    from sms_core.prediction import all_online

    count = landing.batches * landing.batch_size
    tail = dataset.with_name("arrivals.tsv")
    with dataset.open("rb") as whole:  # the last lines, without reading every line before them
        whole.seek(max(0, whole.seek(0, os.SEEK_END) - count * 1_000))
        tail.write_bytes(b"".join(whole.read().splitlines(keepends=True)[-count:]))
    resources = project_resources(settings.load())
    stream = simulate.ArrivalStream(
        resources["landing"].folder(), list(parse_messages(tail)), landing.batches, prefix="bench-arrivals"
    )
    sms_assets = str(Path(sys.executable).with_name("sms-assets"))
    with tempfile.TemporaryFile() as log:
        worker = subprocess.Popen([sms_assets, "arrivals"], stdout=log, stderr=subprocess.STDOUT)

        def said() -> str:
            log.seek(0)
            return log.read().decode(errors="replace")

        try:
            while " ready in " not in said():
                if worker.poll() is not None:
                    raise SystemExit(f"the arrivals worker ended before it was ready:\n{said()}")
                time.sleep(0.2)
            readable = functools.partial(all_online, resources["feast"].store())
            delays = simulate.replay(stream, landing.interval_s, readable, timeout_s=300, say=lambda _: None)
        finally:
            worker.terminate()
            worker.wait(timeout=120)
    seconds = sorted(delay.seconds for delay in delays)
    return {
        "batches": len(delays),
        "batch_size": landing.batch_size,
        "interval_s": landing.interval_s,
        "p50_s": round(statistics.median(seconds), 2),
        "max_s": round(seconds[-1], 2),
        "seconds": [round(s, 2) for s in seconds],
    }


def measured_run(n: int, rows: bool = True) -> dict[str, Any]:
    """Run the whole graph (`dg launch --assets '*'`, so through the definitions' executor: a process per
    step), sample the memory of every process of the run, and read each step's start, end and process
    from the run's event log. `rows`: per-row figures of the stages that take every row (a first run)."""
    from sms_assets.launch import LAUNCH

    command = [str(Path(sys.executable).with_name(LAUNCH[0])), *LAUNCH[1:]]
    started = time.time()
    with tempfile.TemporaryFile() as log:
        run = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        sampler = RssSampler(run.pid)
        sampler.start()
        code = run.wait()
        sampler.stop()
        ended = time.time()
        if code != 0:
            log.seek(0)
            raise SystemExit(f"the graph failed at N={n}:\n{log.read().decode(errors='replace')[-4000:]}")

    import dagster as dg

    from sms_assets.defs.fan_out import PieceWritten, most_at_once

    instance = dg.DagsterInstance.get()  # DAGSTER_HOME: the folder run_size made for this N
    [record] = instance.get_run_records(limit=1)
    starts: dict[str, float] = {}
    launched: dict[str, float] = {}
    steps: dict[str, dict[str, Any]] = {}
    roles = {run.pid: "dg launch (the run)"}
    for entry in instance.all_logs(record.dagster_run.run_id):
        event = entry.dagster_event
        if event is None or entry.step_key is None:
            continue
        if event.event_type_value == "STEP_WORKER_STARTING":
            launched[entry.step_key] = entry.timestamp
        elif event.event_type_value == "STEP_START":
            starts[entry.step_key] = entry.timestamp
            if event.pid is not None:
                roles[event.pid] = entry.step_key
        elif event.event_type_value == "STEP_SUCCESS":
            begin = starts[entry.step_key]
            steps[entry.step_key] = {
                "started": begin,
                "ended": entry.timestamp,
                "seconds": round(entry.timestamp - begin, 3),
                # From the executor asking for a process to the step starting in it.
                "startup_seconds": round(begin - launched.get(entry.step_key, begin), 3),
                "pid": event.pid,
                "peak_rss_mib": _mib(sampler.peaks.get(event.pid or -1, 0)),
            }
    # sms_features and online_store are graphs of steps (plan, pieces, finish), which the executor
    # interleaves with other steps: the time of each is the time at least one of its steps was running.
    for graph, piece_op in GRAPH_PIECES.items():
        parts = {key: step for key, step in steps.items() if key.startswith(f"{graph}.")}
        pieces = [step for key, step in parts.items() if f".{piece_op}[" in key]
        steps[graph] = {
            "seconds": round(covered([(s["started"], s["ended"]) for s in parts.values()]), 3),
            "peak_rss_mib": max(s["peak_rss_mib"] for s in parts.values()),
            "pieces": len(pieces),
            "pieces_at_once": most_at_once([PieceWritten(0, s["started"], s["ended"]) for s in pieces]),
        }
    startups = sorted(s["startup_seconds"] for s in steps.values() if "startup_seconds" in s)
    for step, stage in STAGE_ROWS.items() if rows else ():
        steps[step]["stage"] = stage
        steps[step]["rows"] = n
        steps[step]["rows_per_s"] = round(n / steps[step]["seconds"]) if steps[step]["seconds"] else None
        steps[step]["us_per_row"] = round(steps[step]["seconds"] / n * 1e6, 3)
    for step in steps.values():
        step.pop("started", None)
        step.pop("ended", None)
    return {
        "messages": n,
        "graph_seconds": round(ended - started, 3),
        # The largest process (the run, or a step); and all of them at once (shared pages of the
        # forked steps are counted in each, so the sum is an upper bound).
        "peak_rss_mib": _mib(max(sampler.peaks.values())),
        "peak_rss_all_processes_mib": _mib(sampler.tree_peak),
        # The first step waits for the forkserver to import the definitions; the others fork it.
        "step_startup_seconds": {
            "longest": startups[-1] if startups else None,
            "median": startups[len(startups) // 2] if startups else None,
        },
        "processes": {
            str(pid): {"role": roles.get(pid, sampler.names.get(pid, "")), "peak_rss_mib": _mib(peak)}
            for pid, peak in sorted(sampler.peaks.items(), key=lambda item: -item[1])
        },
        "steps": steps,
    }


@contextmanager
def own_database(admin_postgres: str, redis_url: str, tag: str) -> Iterator[str]:
    """A new database named `tag` on the admin URL's server; dropped afterwards, with the Redis keys of
    the Feast project of the same name. Yields its URL."""
    import psycopg
    from psycopg import sql

    url = urls.postgres(admin_postgres).set(database=tag).render_as_string(hide_password=False)
    admin = urls.libpq_conninfo(admin_postgres)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(tag)))
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(tag)))
        delete_project_keys(redis_url, tag)


def run_size(n: int, source: Path, admin_postgres: str, redis_url: str, landing: Arrivals) -> dict[str, Any]:
    """The graph at N messages in a child process, on a database and Feast project made for it."""
    tag = f"bench_scale_{n}_{uuid.uuid4().hex[:8]}"
    with (
        own_database(admin_postgres, redis_url, tag) as url,
        tempfile.TemporaryDirectory(prefix="sms-bench-") as folder,
    ):
        dataset = Path(folder) / "SMSSpamCollection"
        began = time.perf_counter()
        generated = generate(source, dataset, n)
        generate_seconds = time.perf_counter() - began
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
        command += ["--arrivals", str(landing.batches), str(landing.batch_size), str(landing.interval_s)]
        began = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        process_seconds = time.perf_counter() - began
        if done.returncode != 0:
            raise RuntimeError(f"the graph at N={n} failed:\n{done.stderr[-4000:]}")
        figures = json.loads(output.read_text())
        figures["redis_bytes_per_message"] = redis_bytes_per_message(redis_url, tag)
        figures["generate_seconds"] = round(generate_seconds, 3)
        figures["distinct_texts"] = generated.distinct_texts
        figures["duplicate_share"] = round(generated.duplicate_share, 6)
        figures["process_seconds"] = round(process_seconds, 3)
        return figures


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


def run(sizes: list[int], source: Path, landing: Arrivals = Arrivals()) -> dict[str, Any]:
    """The graph at each size, and the per-row cost of each stage relative to the previous size."""
    resolved = settings.resolve()
    admin_postgres, redis_url = resolved[settings.POSTGRES_ENV], resolved[settings.REDIS_ENV]
    runs = {}
    for n in sizes:
        print(f"scale: running the whole graph at N={n:,} ...", file=sys.stderr, flush=True)
        runs[str(n)] = run_size(n, source, admin_postgres, redis_url, landing)
    return {"method": (__doc__ or "").split("\n\n", 1)[1].strip(), "sizes": sizes, "runs": runs}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    parser.add_argument("--child", nargs=3, metavar=("N", "DATASET", "OUTPUT"), required=True)
    parser.add_argument("--arrivals", nargs=3, metavar=("BATCHES", "SIZE", "INTERVAL_S"), required=True)
    args = parser.parse_args(argv)
    n, dataset, output = args.child
    batches, size, interval = args.arrivals
    child(int(n), Path(dataset), Path(output), Arrivals(int(batches), int(size), float(interval)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
