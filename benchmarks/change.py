"""Steady load on the prediction API through every kind of change the pipeline makes.

`python -m benchmarks change` runs the graph on a database, Feast project and state folder of its own,
serves it, and sends 30 requests a second (known ids and new texts, alternately) through a re-run with
five edited messages (whose retrained model the gate may refuse), a full refresh of Redis, a retrain with
other settings and its promotion, a rollback and a promote; per
phase, the answers, every status that was not 200, the model versions seen and the latency.

`Load` sends a fixed rate of requests (known ids and new texts, alternately) from a few client threads,
each on its own schedule, and records every answer under the name of the phase it was sent in. The
caller names the phases as it makes its changes (a re-run with edits, a full refresh of Redis, a
retrain with promotion, a rollback, a promote); `summary` gives, per phase, the answers, every status
that was not 200, and the latency percentiles.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import numpy as np
import uvicorn

from sms_core import settings
from sms_core.embedded import free_port, wait_until
from sms_core.model.store import ModelStore

RATE = 30.0
EDITED = (10, 20, 30, 40, 50)  # the dataset lines a re-run finds edited
SWAP_DEADLINE_S = 30
# Training settings whose models meet the model gate before and after the edits (with the defaults, a
# retrain on five edited messages can block 0.5% of ham where the served model blocks 0.2%, which the
# gate refuses: docs/model.md), and other ones, for a retrain that gives a new version the gate passes.
STABLE = {"sgd_alpha": 2e-4, "ham_weight": 3.0}
RETRAINED = {"sgd_alpha": 3e-4, "ham_weight": 3.0}
GATE_CHECK = "spam_model_model_beats_floor_and_served"
PHASES = ("steady", "re-run with edits", "full refresh", "retrain with promotion", "rollback", "promote")
TEXTS = (
    "Call me when you're free",
    "URGENT! You won a 2000 prize. Txt CLAIM to 81010",
    "ok lar... see you at 7",
    "Free entry in 2 a wkly comp to win FA Cup final tkts",
)


@dataclass(frozen=True)
class Answer:
    phase: str
    sent_at: float
    seconds: float
    status: int
    request: dict[str, Any]
    body: dict[str, Any]


@dataclass
class Load:
    """`rate` requests per second against `base_url`, spread over `clients` threads, until `stop()`."""

    base_url: str
    known_ids: list[int]
    rate: float = 30.0
    clients: int = 4
    token: str | None = None
    phase: str = "steady"
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for client in range(self.clients):
            thread = threading.Thread(target=self._client, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> list[Answer]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return self.answers

    def _client(self, client: int) -> None:
        rng = random.Random(client)
        interval = self.clients / self.rate
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        with httpx.Client(base_url=self.base_url, timeout=30, headers=headers) as http:
            due = time.perf_counter() + client * interval / self.clients
            sent = 0
            while not self._stop.is_set():
                time.sleep(max(0.0, due - time.perf_counter()))
                due += interval
                if sent % 2 == 0:
                    request: dict[str, Any] = {"message_id": rng.choice(self.known_ids)}
                else:
                    request = {"text": rng.choice(TEXTS)}
                sent += 1
                phase, began = self.phase, time.perf_counter()
                try:
                    response = http.post("/predict", json=request)
                    status, body = response.status_code, response.json()
                except (httpx.HTTPError, ValueError) as exc:
                    status, body = 0, {"error": repr(exc)}
                self.answers.append(Answer(phase, began, time.perf_counter() - began, status, request, body))


def summary(answers: list[Answer]) -> dict[str, dict[str, Any]]:
    """Per phase, in the order the phases came: answers, statuses other than 200, and latency."""
    phases: dict[str, list[Answer]] = {}
    for answer in sorted(answers, key=lambda a: a.sent_at):
        phases.setdefault(answer.phase, []).append(answer)
    report = {}
    for phase, mine in phases.items():
        ms = np.array([a.seconds for a in mine]) * 1000
        span = max(a.sent_at for a in mine) - min(a.sent_at for a in mine)
        report[phase] = {
            "answers": len(mine),
            "requests_per_s": round(len(mine) / span, 1) if span else None,
            "not_200": dict(Counter(a.status for a in mine if a.status != 200)),
            "model_versions": sorted({a.body.get("model_version", "") for a in mine if a.status == 200}),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "max_ms": round(float(ms.max()), 2),
        }
    return report


def print_table(section: dict[str, Any]) -> None:
    from tabulate import tabulate

    rows = [
        [
            phase,
            r["answers"],
            r["requests_per_s"],
            ", ".join(f"{status}: {n}" for status, n in r["not_200"].items()) or "none",
            len(r["model_versions"]),
            r["p50_ms"],
            r["p99_ms"],
            r["max_ms"],
        ]
        for phase, r in section["phases"].items()
    ]
    headers = ["phase", "answers", "req/s", "not 200", "versions", "p50 ms", "p99 ms", "max ms"]
    print(f"\nthrough change, {section['rate']:g} requests/s:\n{tabulate(rows, headers=headers)}")


def run_graph(
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    selection: dg.AssetSelection | None = None,
    ops: dict[str, Any] | None = None,
    refused_ok: bool = False,
) -> None:
    """The whole graph (or a selection) in process, as the tests and this benchmark run it. With
    `refused_ok`, the model gate may refuse the retrained model: the served one then stays."""
    from sms_assets.definitions import defs

    nodes = [*(defs.assets or []), *(defs.asset_checks or [])]
    # Dagster's console logger says only what went wrong; the table is what this prints.
    config = {"ops": ops or {}, "loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    result = dg.materialize(
        nodes,
        resources=resources,
        instance=instance,
        selection=selection,
        run_config=config,
        raise_on_error=False,
    )
    failed = {event.step_key for event in result.all_events if event.is_step_failure}
    if not result.success and not (refused_ok and failed == {GATE_CHECK}):
        raise RuntimeError(f"run {result.run_id} failed: {', '.join(sorted(map(str, failed)))}")


def through_changes(
    resources: dict[str, Any], instance: dg.DagsterInstance, dataset: Path, base_url: str, rate: float = RATE
) -> list[Answer]:
    """`rate` requests a second against the API at `base_url` through each change in PHASES, made to the
    graph of `resources` (its dataset file `dataset` edited in place); every answer, by phase."""
    store: ModelStore = resources["model_store"].model_store()
    lines = dataset.read_text(encoding="utf-8").splitlines()
    load = Load(base_url, known_ids=list(range(1, len(lines) + 1)), rate=rate).start()

    def served(version: str) -> None:
        def seen() -> None:
            now = [a for a in list(load.answers) if a.phase == load.phase]
            if not any(a.body.get("model_version") == version for a in now):
                raise AssertionError(f"the API never answered with {version} during {load.phase}")

        wait_until(seen, timeout_s=SWAP_DEADLINE_S, interval_s=0.05)

    try:
        time.sleep(3)
        load.phase = PHASES[1]
        edited = [f"{line} again" if n in EDITED else line for n, line in enumerate(lines, start=1)]
        dataset.write_text("\n".join(edited) + "\n", encoding="utf-8")
        run_graph(resources, instance, ops={"spam_model": {"config": STABLE}}, refused_ok=True)
        load.phase = PHASES[2]
        run_graph(
            resources,
            instance,
            dg.AssetSelection.assets("online_store"),
            {"online_store": {"config": {"full_refresh": True}}},
        )
        load.phase = PHASES[3]
        before = store.current_version()
        selection = dg.AssetSelection.assets("spam_model", "served_model")
        run_graph(resources, instance, selection, {"spam_model": {"config": RETRAINED}})
        after = store.current_version()
        if after == before:
            raise RuntimeError(f"the retrain promoted nothing: {before} is still served")
        served(after)
        load.phase = PHASES[4]
        store.rollback()
        served(before)
        load.phase = PHASES[5]
        store.restore(after)
        served(after)
        time.sleep(2)
    finally:
        load.stop()
    return load.answers


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """An ASGI app under uvicorn in a thread, on a free loopback port; yields its URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def started_or_exited() -> None:
        if not server.started and thread.is_alive():
            raise RuntimeError("uvicorn did not start within 60 s")

    wait_until(started_or_exited, timeout_s=60, interval_s=0.05)
    if not server.started:
        raise RuntimeError("uvicorn exited before it started serving")
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def run(source: Path) -> dict[str, Any]:
    """The scenario on a database, Feast project and state folder of its own, removed afterwards."""
    from benchmarks.scale import own_database
    from sms_api.app import create_app
    from sms_api.service import ServiceConfig
    from sms_assets.defs.resources import project_resources

    resolved = settings.resolve()
    redis_url = resolved[settings.REDIS_ENV]
    tag = f"bench_change_{uuid.uuid4().hex[:8]}"
    with (
        own_database(resolved[settings.POSTGRES_ENV], redis_url, tag) as url,
        tempfile.TemporaryDirectory(prefix="sms-bench-") as folder,
    ):
        dataset = Path(folder) / "SMSSpamCollection"
        shutil.copyfile(source, dataset)
        env = {
            settings.POSTGRES_ENV: url,
            settings.REDIS_ENV: redis_url,
            settings.PROJECT_ENV: tag,
            settings.STATE_ENV: folder,
            settings.DATASET_ENV: str(dataset),
        }
        resources = project_resources(settings.load(env))
        with dg.DagsterInstance.ephemeral() as instance:
            run_graph(resources, instance, ops={"spam_model": {"config": STABLE}})
            with serving(create_app(ServiceConfig.from_environment(env))) as base_url:
                answers = through_changes(resources, instance, dataset, base_url)
    return {"method": (__doc__ or "").split("\n\n", 2)[1].strip(), "rate": RATE, "phases": summary(answers)}
