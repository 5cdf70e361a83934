"""The serving benchmark runs end to end and writes a well-formed report (never a claim on speed)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import PROJECT_ROOT, Services

pytestmark = pytest.mark.integration


def test_quick_serving_benchmark_writes_its_report(
    materialized: dg.ExecuteInProcessResult, isolated: Services, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "serving", "--quick", "--output-dir", str(tmp_path)],
        cwd=PROJECT_ROOT,
        env={**os.environ, **isolated.env()},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [path] = tmp_path.glob("serving-*.json")
    report = json.loads(path.read_text())
    assert report["benchmark"] == "serving"
    assert report["sample_size"] == 50
    assert report["machine"]["cores"] >= 1 and report["machine"]["memory_gb"] > 0
    assert {"feast", "dagster", "fastapi"} <= set(report["versions"])
    assert len(report["model_version"]) == 16
    assert set(report["results"]) >= {"known message_id", "new text", "batch of 10 ids", "batch of 100 ids"}
    for form, numbers in report["results"].items():
        assert numbers["requests"] == 50, form
        assert 0 < numbers["p50_ms"] <= numbers["p95_ms"] <= numbers["p99_ms"] <= numbers["max_ms"], form
    assert "known message_id" in result.stdout


def test_quick_suite_writes_every_figure_and_target(
    materialized: dg.ExecuteInProcessResult, isolated: Services, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output-dir", str(tmp_path)],
        cwd=PROJECT_ROOT,
        env={**os.environ, **isolated.env()},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [path] = tmp_path.glob("suite-*-quick.json")
    report = json.loads(path.read_text())
    assert report["benchmark"] == "suite" and report["quick"] is True
    assert report["machine"]["cores"] >= 1 and report["machine"]["memory_gb"] > 0
    assert "load_average_1m" in report["machine"] and "load_average_1m_after" in report["machine"]
    assert {"feast", "dagster", "fastapi", "redis"} <= set(report["versions"])

    online = report["online"]
    assert online["sample_size"] > 0 and online["warmup"] > 0
    forms = set(online["latency"])
    for prefix in ("predict, ", "feast serve, ", "empty endpoint", "in-process ", "raw redis "):
        assert any(form.startswith(prefix) for form in forms), prefix
    for form, numbers in online["latency"].items():
        assert numbers["requests"] == online["sample_size"], form
        assert 0 < numbers["p50_ms"] <= numbers["p95_ms"] <= numbers["p99_ms"] <= numbers["max_ms"], form
    assert set(online["throughput"]) == {"sms-assets serve", "feast serve", "empty endpoint"}
    assert all(r["requests_per_s"] > 0 for r in online["throughput"].values())

    [(n, run)] = report["scale"]["runs"].items()
    assert run["messages"] == int(n) and run["peak_rss_mib"] > 0
    assert {"raw_sms_messages", "sms_features", "training_set", "online_store", "spam_model"} <= set(
        run["steps"]
    )
    for stage in ("raw_sms_messages", "sms_features", "training_set", "online_store"):
        assert run["steps"][stage]["rows"] == int(n) and run["steps"][stage]["rows_per_s"] > 0

    statuses = {t["target"]: t["status"] for t in report["targets"]}
    assert len(statuses) == 8 and set(statuses.values()) <= {"pass", "fail", "not measured"}
    assert "target" in result.stdout and str(path) in result.stdout
