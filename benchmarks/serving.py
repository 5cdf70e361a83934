"""Latency of the prediction service, as a client sees it.

Starts `sms-assets serve` on a loopback port (the real command, on the services the environment names,
after `sms-assets run`), waits until it is ready, warms up, then sends requests one at a time and times
each: a known message_id, a new text, and batches of 10 and 100 ids. Prints a table and writes JSON
(machine, versions, sample size, percentiles) to benchmarks/results/serving-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from sms_assets import services
from sms_assets.postgres import connect, query_frame
from sms_assets.resources import PostgresResource

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PACKAGES = ("feast", "dagster", "fastapi", "uvicorn", "scikit-learn", "redis", "httpx")
READY_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine() -> dict[str, Any]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(memory / 2**30, 1),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        # Other work on the machine shows in the tail percentiles; this says how much there was.
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def start_service(port: int) -> subprocess.Popen[str]:
    sms_assets = Path(sys.executable).with_name("sms-assets")
    return subprocess.Popen(
        [str(sms_assets), "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_ready(client: httpx.Client, process: subprocess.Popen[str]) -> dict[str, Any]:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sms-assets serve exited:\n{process.communicate()[0][-3000:]}")
        try:
            response = client.get("/ready")
            if response.status_code == 200:
                return response.json()
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(
        f"sms-assets serve was not ready within {READY_TIMEOUT_S} s: {client.get('/ready').text}"
    )


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "max_ms": round(float(ms.max()), 3),
        "requests": len(ms),
    }


def time_calls(call: Callable[[Any], object], args: Callable[[], Any], n: int, warmup: int) -> list[float]:
    """Wall time of `call(args())`, one call at a time, after `warmup` untimed calls.

    The arguments are drawn before the clock starts, so only the call itself is timed.
    """
    timings = []
    for i in range(warmup + n):
        arg = args()
        started = time.perf_counter()
        call(arg)
        elapsed = time.perf_counter() - started
        if i >= warmup:
            timings.append(elapsed)
    return timings


def post_checked(client: httpx.Client, path: str) -> Callable[[Any], httpx.Response]:
    """A POST of a JSON body to `path` that fails loudly on any answer but 200."""

    def post(payload: Any) -> httpx.Response:
        response = client.post(path, json=payload)
        if response.status_code != 200:
            raise RuntimeError(f"{path} {payload} answered {response.status_code}: {response.text}")
        return response

    return post


def measure(
    client: httpx.Client, body: Callable[[], dict[str, Any]], path: str, n: int, warmup: int
) -> list[float]:
    return time_calls(post_checked(client, path), body, n, warmup)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks serving", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per form (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests per form first")
    parser.add_argument("--quick", action="store_true", help="50 requests per form, 10 warm-up: a smoke run")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    n, warmup = (50, 10) if args.quick else (args.requests, args.warmup)

    with connect(PostgresResource().resolved_url()) as conn:
        messages = query_frame(conn, "SELECT message_id, text FROM raw_sms_messages ORDER BY message_id")
    ids, texts = messages["message_id"].tolist(), messages["text"].tolist()
    rng = random.Random(7)
    forms: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
        "known message_id": ("/predict", lambda: {"message_id": rng.choice(ids)}),
        "new text": ("/predict", lambda: {"text": rng.choice(texts)}),
        "batch of 10 ids": ("/predict/batch", lambda: {"message_ids": rng.sample(ids, 10)}),
        "batch of 100 ids": ("/predict/batch", lambda: {"message_ids": rng.sample(ids, 100)}),
        "batch of 10 texts": ("/predict/batch", lambda: {"texts": rng.sample(texts, 10)}),
    }

    before = machine()
    port = free_port()
    process = start_service(port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            ready = wait_ready(client, process)
            results = {
                name: percentiles(measure(client, body, path, n, warmup))
                for name, (path, body) in forms.items()
            }
    finally:
        process.terminate()
        process.wait(timeout=30)

    report = {
        "benchmark": "serving",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks serving" + (" --quick" if args.quick else ""),
        "method": "sequential HTTP requests (one in flight, keep-alive) to sms-assets serve on loopback; "
        "client-side wall time per request",
        "machine": {**before, "load_average_1m_after": machine()["load_average_1m"]},
        "versions": {name: version(name) for name in PACKAGES},
        "services": {
            "postgres": services.redact(services.postgres_url()),
            "redis": services.redact(services.redis_url()),
        },
        "model_version": ready["model_version"],
        "sample_size": n,
        "warmup": warmup,
        "results": results,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / f"serving-{datetime.now(UTC):%Y-%m-%d}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"{'form':<20} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, r in results.items():
        cells = [r["p50_ms"], r["p95_ms"], r["p99_ms"], r["max_ms"]]
        print(f"{name:<20} {r['requests']:>6} " + " ".join(f"{cell:>8.2f}" for cell in cells))
    host = report["machine"]
    print(
        f"machine: {host['cores']} cores, {host['memory_gb']} GB, load {host['load_average_1m']} before "
        f"and {host['load_average_1m_after']} after; model {ready['model_version']}"
    )
    print(f"wrote {out}")
    return 0
