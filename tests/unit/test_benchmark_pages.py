"""The committed benchmark pages are what `python -m benchmarks report` makes of the committed JSON
reports: each page is generated, never edited by hand, and the renderer reads every report on record,
whatever figures its version of the suite recorded."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import reports
from benchmarks.render import render
from tests.conftest import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
COMMITTED = sorted(RESULTS.glob("suite-*.json"))
REGENERATE = "python -m benchmarks report benchmarks/results/suite-*.json"


@pytest.mark.parametrize("report", COMMITTED, ids=lambda path: path.stem)
def test_each_page_is_its_json_rendered(report: Path) -> None:
    page = report.with_suffix(".md")
    assert page.is_file(), f"{page.name} is missing: run `{REGENERATE}`"
    assert page.read_text() == render(json.loads(report.read_text())), f"{page.name} is stale: `{REGENERATE}`"


def test_the_index_lists_every_report_newest_first(tmp_path: Path) -> None:
    assert COMMITTED, f"no report in {RESULTS}"
    for path in RESULTS.glob("suite-*"):
        shutil.copy(path, tmp_path)
    index = reports.write_index(tmp_path).read_text()
    assert (RESULTS / reports.INDEX).read_text() == index, f"{reports.INDEX} is stale: `{REGENERATE}`"
    # Every report once, in the order of its date, newest first.
    every = index.split("## Every report, newest first", 1)[1]
    dates = {path.stem: json.loads(path.read_text())["date"] for path in COMMITTED}
    assert re.findall(r"\[(suite-[^\]]+)\]", every) == sorted(dates, key=dates.__getitem__, reverse=True)


def test_a_suite_without_its_dataset_says_so_in_one_line(tmp_path: Path) -> None:
    """Before any server is asked for anything: the dataset is fetched first."""
    missing = tmp_path / "SMSSpamCollection"
    env = {
        **os.environ,
        "SMS_DATASET_PATH": str(missing),
        "SMS_STATE_DIR": str(tmp_path / "state"),
        "SMS_POSTGRES_URL": "postgresql://postgres@127.0.0.1:1/none",
        "SMS_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "model", "--quick", "--output-dir", str(tmp_path)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == f"error: SMS_DATASET_PATH={missing} does not name a file\n"
