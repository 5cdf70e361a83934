"""Online latency and throughput, against the same Redis data in the same run, beside the alternatives.

Starts four servers on loopback, one worker process each, reading the Feast project the environment
names (after `sms-assets run`):
- the project's prediction service, `sms-assets serve` (features from the feature service the served
  model names, plus the model), logging every answer to its feature service's log table;
- the same service with the served log off (SMS_LOG_ANSWERS=false), timed request for request beside
  the first, alternating which goes first, so that both see the same machine at the same moments;
- the peer, Feast's own `feast serve`, answering `/get-online-features` for that same feature service
  (features only);
- the floor of the HTTP stack, an endpoint that does nothing on the same FastAPI + uvicorn stack.
Beside them, in this process: the library call the service makes (no HTTP), and raw redis-py reads of
the same keys Feast reads (one HGETALL; a pipeline for batches), the floor of any Redis-backed read.

Latency is client wall time of sequential requests (one in flight, keep-alive) after a warm-up.
Throughput is `wrk` for a fixed time with a fixed number of open connections, per server.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
from feast.infra.online_stores.helpers import _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from uvicorn.loops.auto import auto_loop_factory

from sms_api.service import PredictionService, ServiceConfig
from sms_core import feast_config, settings, urls
from sms_core.embedded import free_port, wait_until
from sms_core.model.store import ModelStore
from sms_core.postgres import connect, query_frame

PROJECT_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 180
WORKERS = 1  # the same for every server: `sms-assets serve` runs one uvicorn process


@dataclass(frozen=True)
class Sample:
    requests: int  # timed requests per form
    warmup: int
    load_seconds: float  # per server, for throughput
    connections: int  # open connections during the throughput run


FULL = Sample(requests=2000, warmup=200, load_seconds=10, connections=16)
QUICK = Sample(requests=50, warmup=10, load_seconds=1, connections=8)


class MissingTool(RuntimeError):
    """A program the benchmark drives is not installed."""


class NotReady(RuntimeError):
    """A server that answers, but not yet that it is ready."""


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise MissingTool(
            "the throughput figures need `wrk` on PATH "
            "(Debian/Ubuntu: sudo apt-get install wrk; macOS: brew install wrk)"
        )


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@dataclass
class Server:
    """A server process on a loopback port, its output kept in a temporary file for errors."""

    name: str
    process: subprocess.Popen[str]
    base_url: str
    ready_path: str
    log: IO[str]

    def wait_ready(self) -> str:
        with httpx.Client(base_url=self.base_url, timeout=5) as client:

            def ready_or_exited() -> None:
                if self.process.poll() is None:
                    response = client.get(self.ready_path)
                    if response.status_code != 200:
                        raise NotReady(f"GET {self.ready_path}: {response.status_code} {response.text}")

            try:
                wait_until(ready_or_exited, timeout_s=READY_TIMEOUT_S, interval_s=0.2)
            except (httpx.HTTPError, NotReady) as exc:
                raise RuntimeError(f"{self.name} was not ready within {READY_TIMEOUT_S} s: {exc}") from exc
        if self.process.poll() is not None:
            self.log.seek(0)
            raise RuntimeError(f"{self.name} exited:\n{self.log.read()[-3000:]}")
        return self.base_url

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(
    stack: ExitStack, name: str, command: list[str], env: dict[str, str], port: int, ready: str
) -> Server:
    """Start a server, stopped when `stack` closes; ready once GET `ready` answers 200."""
    log = stack.enter_context(tempfile.TemporaryFile(mode="w+"))  # noqa: SIM115 (the stack closes it)
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, text=True
    )
    started = Server(name, process, f"http://127.0.0.1:{port}", ready, log)
    stack.callback(started.stop)
    return started


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


async def time_awaits(
    call: Callable[[Any], Awaitable[object]], args: Callable[[], Any], n: int, warmup: int
) -> list[float]:
    """time_calls for a coroutine function, every call awaited on the one running event loop."""
    timings = []
    for i in range(warmup + n):
        arg = args()
        started = time.perf_counter()
        await call(arg)
        elapsed = time.perf_counter() - started
        if i >= warmup:
            timings.append(elapsed)
    return timings


def time_interleaved(
    first: Callable[[Any], object],
    second: Callable[[Any], object],
    args: Callable[[], Any],
    n: int,
    warmup: int,
) -> tuple[list[float], list[float]]:
    """time_calls of two calls side by side: each pair gets the same arguments, and which of the two
    goes first alternates, so a moment of load elsewhere falls on both alike."""
    timings: tuple[list[float], list[float]] = ([], [])
    for i in range(warmup + n):
        arg = args()
        order = (0, 1) if i % 2 else (1, 0)
        for which in order:
            started = time.perf_counter()
            (first, second)[which](arg)
            elapsed = time.perf_counter() - started
            if i >= warmup:
                timings[which].append(elapsed)
    return timings


def post_checked(client: httpx.Client, path: str) -> Callable[[Any], httpx.Response]:
    """A POST of a JSON body to `path` that fails loudly on any answer but 200."""

    def post(payload: Any) -> httpx.Response:
        response = client.post(path, json=payload)
        if response.status_code != 200:
            raise RuntimeError(f"{path} {payload} answered {response.status_code}: {response.text}")
        return response

    return post


def throughput(url: str, body: str, seconds: float, connections: int) -> dict[str, Any]:
    """Requests per second `wrk` sustains against one POST endpoint, one client thread."""
    require_wrk()
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(
            f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [[{body}]]\n'
        )
        script.flush()
        command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", script.name, url]
        out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60)
    text = out.stdout
    if "Non-2xx" in text or "Socket errors" in text:
        raise RuntimeError(f"wrk saw failed requests against {url}:\n{text}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", text)
    assert rate and p99, text
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return {
        "requests_per_s": round(float(rate.group(1)), 1),
        "p99_under_load_ms": round(float(p99.group(1)) * scale, 3),
        "seconds": seconds,
        "connections": connections,
        "client": "wrk, 1 thread",
    }


class LoadDuringRun:
    """The machine's 1-minute load average, sampled every `interval_s` from start to stop: other work on
    a two-core machine shows in the tail percentiles, and the suite's samples at its start and end
    alone can miss it."""

    def __init__(self, interval_s: float = 5.0):
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="load-average", daemon=True)

    def _sample(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.interval_s):
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        values = np.asarray(self.samples)
        return {
            "median": round(float(np.median(values)), 2),
            "min": round(float(values.min()), 2),
            "max": round(float(values.max()), 2),
            "samples": len(values),
            "every_s": self.interval_s,
        }


def redis_keys(project: str, ids: list[int]) -> dict[int, bytes]:
    """The keys Feast's Redis online store writes for each message_id."""
    return {
        i: _redis_key(project, EntityKey(join_keys=["message_id"], entity_values=[Value(int64_val=i)]))
        for i in ids
    }


def run(sample: Sample) -> dict[str, Any]:
    """Every online figure of one run: latency per form and throughput per server."""
    require_wrk()  # before minutes of latency runs, not after them
    resolved = settings.resolve()
    postgres_url, redis_url = resolved[settings.POSTGRES_ENV], resolved[settings.REDIS_ENV]
    project, model_root = resolved[settings.PROJECT_ENV], Path(resolved[settings.MODEL_DIR_ENV])
    with connect(postgres_url) as conn:
        messages = query_frame(conn, "SELECT message_id, text FROM raw_sms_messages ORDER BY message_id")
    ids, texts = [int(i) for i in messages["message_id"]], messages["text"].tolist()
    models = ModelStore(model_root)
    feature_service = models.manifest(models.current_version())["feature_service"]
    rng = random.Random(7)
    n, warmup = sample.requests, sample.warmup

    # `sms-assets serve` reads the project's settings; `feast serve` reads feature_store.yaml's variables.
    # One worker and no token, whatever the caller's environment says: the peers have neither.
    ours_env = {**os.environ, **resolved, settings.API_WORKERS_ENV: str(WORKERS)}
    ours_env.pop(settings.API_TOKEN_ENV, None)
    feast_env = {**ours_env, **feast_config.feast_env(postgres_url, redis_url, project)}
    unlogged_env = {**ours_env, settings.LOG_ANSWERS_ENV: "false"}
    ours_port, feast_port, empty_port, unlogged_port = free_port(), free_port(), free_port(), free_port()
    ours_cmd = [_bin("sms-assets"), "serve", "--host", "127.0.0.1", "--port", str(ours_port)]
    unlogged_cmd = [_bin("sms-assets"), "serve", "--host", "127.0.0.1", "--port", str(unlogged_port)]
    feast_cmd = [_bin("feast"), "-c", "feature_repo", "serve", "-h", "127.0.0.1", "-p", str(feast_port)]
    # feast serve's gunicorn recycles its worker every 1,000 requests by default; the restart
    # (seconds of imports) would drop connections mid-run and charge feast for it.
    feast_cmd += ["-w", str(WORKERS), "--no-access-log", "--max-requests", "1000000000"]
    empty_cmd = [sys.executable, "-m", "uvicorn", "benchmarks.empty_app:app", "--host", "127.0.0.1"]
    empty_cmd += ["--port", str(empty_port), "--no-access-log", "--log-level", "warning"]

    latency: dict[str, dict[str, Any]] = {}
    load: dict[str, dict[str, Any]] = {}
    machine_load = LoadDuringRun()
    machine_load.start()
    with ExitStack() as stack:
        # Started together: each spends seconds importing Feast, FastAPI and friends.
        servers = [
            start(stack, "sms-assets serve", ours_cmd, ours_env, ours_port, "/ready"),
            start(stack, "feast serve", feast_cmd, feast_env, feast_port, "/health"),
            start(stack, "empty endpoint", empty_cmd, dict(os.environ), empty_port, "/health"),
            start(
                stack, "sms-assets serve, logging off", unlogged_cmd, unlogged_env, unlogged_port, "/ready"
            ),
        ]
        ours, peer, empty, unlogged = (s.wait_ready() for s in servers)

        def feast_body(k: int) -> Callable[[], dict[str, Any]]:
            return lambda: {
                "feature_service": feature_service,
                "entities": {"message_id": rng.sample(ids, k)},
            }

        # The served log's cost: the same requests to the service with logging on and off, interleaved.
        logged_forms: list[tuple[str, str, Callable[[], Any]]] = [
            ("predict, known id", "/predict", lambda: {"message_id": rng.choice(ids)}),
            ("predict, batch of 100 ids", "/predict/batch", lambda: {"message_ids": rng.sample(ids, 100)}),
        ]
        for name, path, body in logged_forms:
            with (
                httpx.Client(base_url=ours, timeout=30) as on,
                httpx.Client(base_url=unlogged, timeout=30) as off,
            ):
                logged, unlogged_timings = time_interleaved(
                    post_checked(on, path), post_checked(off, path), body, n, warmup
                )
            latency[name] = {"via": "HTTP", **percentiles(logged)}
            latency[f"{name}, logging off"] = {"via": "HTTP", **percentiles(unlogged_timings)}

        # A new text is a dataset line with a number of its own appended: a text the service has not
        # scored before (no memo holds its columns), with the corpus's words and length.
        sent = itertools.count()
        http_forms: list[tuple[str, str, str, Callable[[], Any]]] = [
            ("predict, new text", ours, "/predict", lambda: {"text": f"{rng.choice(texts)} {next(sent)}"}),
            (
                "predict, batch of 10 ids",
                ours,
                "/predict/batch",
                lambda: {"message_ids": rng.sample(ids, 10)},
            ),
            ("feast serve, 1 id", peer, "/get-online-features", feast_body(1)),
            ("feast serve, batch of 10 ids", peer, "/get-online-features", feast_body(10)),
            ("feast serve, batch of 100 ids", peer, "/get-online-features", feast_body(100)),
            ("empty endpoint", empty, "/empty", lambda: {"message_id": rng.choice(ids)}),
        ]
        for name, base, path, body in http_forms:
            with httpx.Client(base_url=base, timeout=30) as client:
                timings = time_calls(post_checked(client, path), body, n, warmup)
            latency[name] = {"via": "HTTP", **percentiles(timings)}

        one = ids[len(ids) // 2]
        for name, url, body in (
            ("sms-assets serve", f"{ours}/predict", f'{{"message_id": {one}}}'),
            ("feast serve", f"{peer}/get-online-features",
             f'{{"feature_service": "{feature_service}", "entities": {{"message_id": [{one}]}}}}'),
            ("empty endpoint", f"{empty}/empty", f'{{"message_id": {one}}}'),
        ):  # fmt: skip
            load[name] = throughput(url, body, sample.load_seconds, sample.connections)

    latency.update(in_process(postgres_url, redis_url, project, model_root, ids, rng, n, warmup))
    machine_load.stop()
    return {
        "method": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "feast_project": project,
        "feature_service": feature_service,
        "messages": len(ids),
        "sample_size": n,
        "warmup": warmup,
        "workers_per_server": WORKERS,
        "latency": latency,
        "throughput": load,
        "load_average_1m_during": machine_load.summary(),
    }


def in_process(
    postgres_url: str,
    redis_url: str,
    project: str,
    model_root: Path,
    ids: list[int],
    rng: random.Random,
    n: int,
    warmup: int,
) -> dict[str, dict[str, Any]]:
    """The service's library calls and raw redis-py reads, in this process, on the same keys.

    The service's calls are coroutines (Feast's asyncio read), timed on one event loop of the kind the
    server runs; the raw reads are redis-py's synchronous client, the floor of any Redis read.
    """
    service = PredictionService(
        ServiceConfig(postgres_url=postgres_url, redis_url=redis_url, project=project, model_root=model_root)
    )
    service.start()
    store = service.store()
    by_id, _ = service.feature_services(service.models.get())
    keys = redis_keys(project, ids)
    client = urls.redis_client(redis_url)

    # Feast's keys are bytes; redis-py's stubs declare str, its code takes both.
    def hgetall(key: bytes) -> Any:
        return client.hgetall(key)  # pyright: ignore[reportArgumentType]

    def pipelined(batch: list[bytes]) -> list[Any]:
        with client.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.hgetall(key)  # pyright: ignore[reportArgumentType]
            return pipe.execute()

    async def get_online_features(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return (await store.get_online_features_async(features=by_id, entity_rows=rows)).to_dict()

    if not hgetall(keys[ids[0]]):
        raise RuntimeError(f"Redis holds no features for project {project}: run `sms-assets run` first")
    awaited: list[tuple[str, Callable[[Any], Awaitable[object]], Callable[[], Any]]] = [
        ("in-process predict, known id", service.predict_ids, lambda: [rng.choice(ids)]),
        (
            "in-process get_online_features, 1 id",
            get_online_features,
            lambda: [{"message_id": rng.choice(ids)}],
        ),
        ("in-process predict, batch of 10 ids", service.predict_ids, lambda: rng.sample(ids, 10)),
        ("in-process predict, batch of 100 ids", service.predict_ids, lambda: rng.sample(ids, 100)),
    ]
    called: list[tuple[str, Callable[[Any], object], Callable[[], Any]]] = [
        ("raw redis HGETALL, 1 id", hgetall, lambda: keys[rng.choice(ids)]),
        ("raw redis pipeline, 10 ids", pipelined, lambda: [keys[i] for i in rng.sample(ids, 10)]),
        ("raw redis pipeline, 100 ids", pipelined, lambda: [keys[i] for i in rng.sample(ids, 100)]),
    ]

    async def timed_awaits() -> dict[str, list[float]]:
        await service.warm_up()
        return {name: await time_awaits(call, args, n, warmup) for name, call, args in awaited}

    try:
        # On the event loop uvicorn runs the server on (uvloop where it is installed).
        with asyncio.Runner(loop_factory=auto_loop_factory()) as runner:
            timings = runner.run(timed_awaits())
        timings.update({name: time_calls(call, args, n, warmup) for name, call, args in called})
        return {name: {"via": "in-process", **percentiles(seconds)} for name, seconds in timings.items()}
    finally:
        service.stop()
        client.close()
