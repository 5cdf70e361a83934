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
