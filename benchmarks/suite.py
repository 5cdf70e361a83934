"""The benchmark suite: online latency and throughput beside the alternatives, and the graph at scale.

`python -m benchmarks` runs both parts; `python -m benchmarks online` or `scale` runs one; `--quick` is
a smoke run (small samples, one small N) that the tests exercise. One JSON report per run under
benchmarks/results/: the machine, versions, sample sizes, every figure, and each target of the
suite beside its measured value.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks import online, scale
from benchmarks.serving import RESULTS_DIR, machine
from sms_assets import services

PACKAGES = (
    "feast",
    "dagster",
    "fastapi",
    "uvicorn",
    "pydantic",
    "scikit-learn",
    "redis",
    "psycopg",
    "pandas",
)
SHARED_DATASET = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "SMSSpamCollection"
FULL_SIZES = [10_000, 100_000, 1_000_000]
QUICK_SIZES = [2_000]


@dataclass(frozen=True)
class Target:
    name: str
    goal: str  # as the issue states it
    limit: float
    higher_is_better: bool
    measure: Callable[[dict[str, Any]], float | None]  # from the report; None when not measured

    def judge(self, report: dict[str, Any]) -> dict[str, Any]:
        try:
            value = self.measure(report)
        except KeyError:
            value = None
        if value is None:
            status = "not measured"
        else:
            ok = value >= self.limit if self.higher_is_better else value <= self.limit
            status = "pass" if ok else "fail"
        return {
            "target": self.name,
            "goal": self.goal,
            "measured": None if value is None else round(value, 3),
            "status": status,
        }


def _p99(report: dict[str, Any], form: str) -> float:
    return report["online"]["latency"][form]["p99_ms"]


def _run(report: dict[str, Any], n: int) -> dict[str, Any]:
    return report["scale"]["runs"][str(n)]


def _per_row_ratio(report: dict[str, Any]) -> float:
    small, large = _run(report, 100_000)["steps"], _run(report, 1_000_000)["steps"]
    return max(large[step]["us_per_row"] / small[step]["us_per_row"] for step in scale.STAGE_ROWS)


def _largest(report: dict[str, Any]) -> dict[str, Any]:
    return _run(report, max(report["scale"]["sizes"]))


TARGETS = [
    Target(
        "prediction p99, one known id / feast serve p99, same features",
        "<= 0.5x",
        0.5,
        False,
        lambda r: _p99(r, "predict, known id") / _p99(r, "feast serve, 1 id"),
    ),
    Target(
        "in-process predict p99, one known id / raw HGETALL p99",
        "<= 3x",
        3.0,
        False,
        lambda r: _p99(r, "in-process predict, known id") / _p99(r, "raw redis HGETALL, 1 id"),
    ),
    Target(
        "in-process predict p99, batch of 100 / raw pipelined read p99",
        "<= 2.5x",
        2.5,
        False,
        lambda r: _p99(r, "in-process predict, batch of 100 ids") / _p99(r, "raw redis pipeline, 100 ids"),
    ),
    Target(
        "sustained throughput, sms-assets serve / feast serve (one worker each)",
        ">= 2x",
        2.0,
        True,
        lambda r: (
            r["online"]["throughput"]["sms-assets serve"]["requests_per_s"]
            / r["online"]["throughput"]["feast serve"]["requests_per_s"]
        ),
    ),
    Target(
        "whole graph at 1M messages, wall seconds (child process, imports included)",
        "<= 300 s",
        300,
        False,
        lambda r: _run(r, 1_000_000)["process_seconds"],
    ),
    Target(
        "whole graph at 1M messages, peak RSS MiB",
        "<= 2048 MiB",
        2048,
        False,
        lambda r: _run(r, 1_000_000)["peak_rss_mib"],
    ),
    Target(
        "materialization into Redis at the largest N, rows/s",
        ">= 20,000",
        20_000,
        True,
        lambda r: _largest(r)["steps"]["online_store"]["rows_per_s"],
    ),
    Target(
        "per-row cost at 1M / at 100k, worst stage",
        "<= 1.3x",
        1.3,
        False,
        _per_row_ratio,
    ),
]


def print_table(report: dict[str, Any]) -> None:
    if "online" in report:
        section = report["online"]
        print(
            f"\nonline: {section['sample_size']} sequential requests per form "
            f"after {section['warmup']} warm-up"
        )
        print(f"{'form':<40} {'via':<11} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
        for name, r in section["latency"].items():
            print(f"{name:<40} {r['via']:<11} {r['p50_ms']:>8.3f} {r['p95_ms']:>8.3f} {r['p99_ms']:>8.3f}")
        print(f"\n{'throughput (wrk)':<40} {'req/s':>10} {'p99 under load ms':>18}")
        for name, r in section["throughput"].items():
            print(f"{name:<40} {r['requests_per_s']:>10,.0f} {r['p99_under_load_ms']:>18.2f}")
    if "scale" in report:
        print("\nscale: whole graph per N (seconds / peak RSS MiB per step; rows/s for row stages)")
        for n, run in report["scale"]["runs"].items():
            print(
                f"N={int(n):,}: graph {run['graph_seconds']:.1f} s in-run, {run['process_seconds']:.1f} s "
                f"with start-up, peak RSS {run['peak_rss_mib']:,.0f} MiB"
            )
            for step, r in run["steps"].items():
                rate = f"{r['rows_per_s']:>10,} rows/s" if "rows_per_s" in r else ""
                print(f"  {step:<48} {r['seconds']:>8.2f} s {r['peak_rss_mib']:>8.0f} MiB {rate}")
    print(f"\n{'target':<76} {'goal':>12} {'measured':>10} {'':>12}")
    for t in report["targets"]:
        measured = "-" if t["measured"] is None else f"{t['measured']:,.3g}"
        print(f"{t['target']:<76} {t['goal']:>12} {measured:>10} {t['status']:>12}")
    host = report["machine"]
    print(
        f"\nmachine: {host['cores']} cores, {host['memory_gb']} GB, load average {host['load_average_1m']} "
        f"before and {host['load_average_1m_after']} after"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("part", nargs="?", choices=["online", "scale"], help="one part only (default: both)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small samples, N=2,000 only")
    parser.add_argument("--sizes", type=int, nargs="+", help="message counts for the scale part")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    parts = [args.part] if args.part else ["online", "scale"]
    dataset = Path(os.environ.get("SMS_DATASET_PATH") or SHARED_DATASET)

    report: dict[str, Any] = {
        "benchmark": "suite",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(argv),
        "quick": args.quick,
        "machine": machine(),
        "versions": {name: version(name) for name in PACKAGES},
        "services": {
            "postgres": services.redact(services.postgres_url()),
            "redis": services.redact(services.redis_url()),
        },
    }
    if "online" in parts:
        report["online"] = online.run(online.QUICK if args.quick else online.FULL)
    if "scale" in parts:
        sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
        report["scale"] = scale.run(sizes, dataset)
    report["machine"]["load_average_1m_after"] = machine()["load_average_1m"]
    report["targets"] = [target.judge(report) for target in TARGETS]

    args.output_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M")
    out = args.output_dir / f"suite-{stamp}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
