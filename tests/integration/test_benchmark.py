"""`python -m benchmarks --quick` runs end to end and writes a well-formed report in which every target
it lists was measured (never a claim on speed: a target may pass or fail, but it must have a value),
and its Markdown page, which `python -m benchmarks report` makes again from the JSON alone."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import PROJECT_ROOT, Services

pytestmark = pytest.mark.integration

# --quick runs one small N (2,000 messages): it lists the targets that need no particular N, and names
# the ones about N = 100,000, 1,000,000 and 10,000,000 as not listed, with the reason.
QUICK_TARGETS = {
    "prediction p99, one known id / feast serve p99, one id (same feature service)",
    "prediction p99, a new text / feast serve p99, one id",
    "in-process predict p99, one known id / in-process get_online_features p99, one id",
    "prediction p99, batch of 100 ids / feast serve p99, batch of 100 ids",
    "sustained throughput, sms-assets serve / feast serve (one worker each)",
    "prediction p99, one known id, served log on / off (interleaved, same run)",
    *(
        f"model on sms_service_v2, {name}, mean over seeds"
        for name in ("f1", "mcc", "spam_caught", "ham_blocked")
    ),
}
FULL_RUN_TARGETS = {
    "whole graph at 1M messages, wall seconds (the run's process, imports included)",
    "whole graph at 1M messages, peak RSS MiB",
    "materialization into Redis at 1M messages, rows/s",
    "per-row cost at 1M / at 100k, worst stage",
    "whole graph at 10M messages, wall seconds (the run's process, imports included)",
    "whole graph at 10M messages, peak RSS MiB of any one process",
    "whole graph after 1% of 10M messages changed / the first run at 10M, wall seconds",
    "a landed batch of 500 readable from Redis with 10M messages loaded, p50 seconds",
    "a landed batch of 500 readable from Redis with 10M messages loaded, max seconds",
    "per-row cost at 10M / at 1M, worst stage",
}


# The change part runs in a full suite and in `python -m benchmarks change`, never in --quick.
CHANGE_TARGET = (
    "answers other than 200 at 30 requests/s through a re-run with edits, a full refresh, a retrain, "
    "a rollback and a promote"
)


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every table row of a Markdown text, the header rows included, the rules left out."""
    return [
        [cell.strip().replace(r"\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        for line in markdown.splitlines()
        if line.startswith("|") and not re.match(r"\|[:-]", line)
    ]


def section(markdown: str, heading: str) -> str:
    """The text under a `## ` heading, up to the next one."""
    return markdown.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


def test_quick_suite_measures_every_target_it_lists(
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
    for window in ("1m", "5m", "15m"):
        for moment in ("", "_after"):
            assert report["machine"][f"load_average_{window}{moment}"] >= 0, (window, moment)
    assert {"feast", "dagster", "fastapi", "redis"} <= set(report["versions"])

    models = report["model"]["models"]
    assert set(models) == {"sms_service", "sms_service_v2"}
    assert all(m["one_text"]["p50_ms"] > 0 for m in models.values())

    online = report["online"]
    assert online["sample_size"] > 0 and online["warmup"] > 0
    forms = set(online["latency"])
    for prefix in ("predict, ", "feast serve, ", "empty endpoint", "in-process ", "raw redis "):
        assert any(form.startswith(prefix) for form in forms), prefix
    # The served log's cost, measured side by side: each logged form beside the same form with it off.
    for form in ("predict, known id", "predict, batch of 100 ids"):
        assert {form, f"{form}, logging off"} <= forms, form
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
    # Through the definitions' executor: the run's process and one per step, each with its memory.
    roles = {process["role"] for process in run["processes"].values()}
    assert {
        "dg launch (the run)",
        "sms_features.compute_feature_piece[ids_1_2000]",
        "online_store.finish_online_sync",
    } <= roles
    assert run["peak_rss_all_processes_mib"] >= run["peak_rss_mib"]
    for graph in ("sms_features", "online_store"):
        assert run["steps"][graph]["pieces"] == run["steps"][graph]["pieces_at_once"] == 1, graph
    assert 0 < run["step_startup_seconds"]["median"] <= run["step_startup_seconds"]["longest"]
    # Then 1% of the messages changed, a third each way, and the graph run again on the same stores.
    again = run["change_run"]
    third = int(n) // 300
    assert (again["edited"], again["removed"], again["added"]) == (third, third, third)
    assert again["graph_seconds"] > 0 and again["ratio_to_first"] > 0
    assert {"ingest_arrivals", "raw_sms_messages", "online_store"} <= set(again["steps"])
    # Last, batches landed beside the arrivals worker, each timed until Redis served all of it.
    landed = run["arrivals"]
    assert (landed["batches"], landed["batch_size"]) == (2, 50)
    assert 0 < landed["seconds"][0] <= landed["p50_s"] <= landed["max_s"] == landed["seconds"][-1]

    # Every listed target has a value and a verdict; a target without one fails here, with its reason.
    listed = {t["target"]: t for t in report["targets"]}
    assert set(listed) == QUICK_TARGETS
    for name, target in listed.items():
        assert target["status"] in ("pass", "fail"), (name, target.get("reason"))
        # A value, not a speed claim: zero is a value (no ham blocked), None is not.
        assert isinstance(target["measured"], int | float) and target["measured"] >= 0, name
    not_listed = {t["target"]: t["reason"] for t in report["targets_not_listed"]}
    assert set(not_listed) == FULL_RUN_TARGETS | {CHANGE_TARGET}
    assert not_listed.pop(CHANGE_TARGET) == "the change part did not run"  # --quick leaves it out
    assert all(f"this run: N = {int(n):,}" in reason for reason in not_listed.values()), not_listed
    assert "target" in result.stdout and str(path) in result.stdout

    # The page beside the JSON: every target with the JSON's verdict, the load at both ends, and every
    # form and server of the online part, so the project reads beside its peers of the same run.
    page, index = path.with_suffix(".md"), tmp_path / "README.md"
    markdown = page.read_text()
    [_, *target_rows] = table_rows(section(markdown, "## Targets"))
    verdicts = {"pass": "met", "fail": "missed"}
    assert {row[0]: row[-1] for row in target_rows} == {
        **{t["target"]: verdicts[t["status"]] for t in report["targets"]},
        **{t["target"]: f"not measured: {t['reason']}" for t in report["targets_not_listed"]},
    }
    for moment in ("", "_after"):
        loads = " / ".join(str(report["machine"][f"load_average_{w}{moment}"]) for w in ("1m", "5m", "15m"))
        assert loads in section(markdown, "## Machine"), moment
    first_cells = {row[0] for row in table_rows(section(markdown, "## Online"))}
    assert set(online["latency"]) | set(online["throughput"]) <= first_cells
    assert f"]({page.name})" in index.read_text()

    # Made again from the JSON alone, the page and the index are the same, byte for byte.
    written = index.read_text()
    page.unlink()
    index.unlink()
    again = subprocess.run(
        [sys.executable, "-m", "benchmarks", "report", str(path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert page.read_text() == markdown
    assert index.read_text() == written
