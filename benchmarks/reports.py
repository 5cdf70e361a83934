"""The Markdown pages of the benchmark results: each run's beside its JSON, and the folder's index.

`python -m benchmarks` writes each run's page beside its JSON (same stem, .md) and rewrites the
folder's README.md; `python -m benchmarks report PATH...` does the same for JSON reports already
written, so a committed JSON's page can always be regenerated from it.

The index, rather than a copy of the newest report, is the fixed path for docs to link: runs are often
one part (`scale --sizes 10000000`) or a smoke run (`--quick`), so "the newest report" would move the
online figures out of sight whenever a scale run lands. The index names the newest full run of each
part, then lists every report newest first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.render import render, table

PARTS = ("model", "online", "scale")
INDEX = "README.md"


def write(json_path: Path) -> Path:
    """Write the Markdown of one JSON report beside it (same stem, .md); return its path."""
    out = json_path.with_suffix(".md")
    out.write_text(render(json.loads(json_path.read_text())))
    return out


def _link(path: Path) -> str:
    shown = path.with_suffix(".md") if path.with_suffix(".md").is_file() else path
    return f"[{path.stem}]({shown.name})"


def _counts(report: dict[str, Any]) -> list[str]:
    statuses = [t["status"] for t in report["targets"]]
    not_measured = statuses.count("not measured") + len(report.get("targets_not_listed", []))
    return [str(statuses.count("pass")), str(statuses.count("fail")), str(not_measured)]


def write_index(folder: Path) -> Path:
    """Rewrite the folder's README.md: the newest full run of each part, then every report newest first."""
    found = [(json.loads(path.read_text()), path) for path in folder.glob("suite-*.json")]
    found.sort(key=lambda pair: (pair[0]["date"], pair[1].name), reverse=True)
    newest = []
    for part in PARTS:
        full = [(r, path) for r, path in found if part in r and not r.get("quick")]
        if full:
            report, path = full[0]
            newest.append([part, _link(path), report["date"], f"`{report['command'].strip()}`"])
    every = [
        [report["date"], _link(path), f"`{report['command'].strip()}`", *_counts(report)]
        for report, path in found
    ]
    blocks = [
        "# Benchmark reports",
        "Written by `python -m benchmarks` and `python -m benchmarks report PATH...` from the JSON reports "
        "in this folder; each report's page is generated from its JSON, never edited by hand.",
        "## The newest figures of each part",
        "From the newest run of the part that was not a smoke run (`--quick`).",
        table(["part", "report", "date", "command"], newest, "llll") if newest else "No full run yet.",
        "## Every report, newest first",
        table(["date", "report", "command", "met", "missed", "not measured"], every, "lllrrr"),
    ]
    out = folder / INDEX
    out.write_text("\n\n".join(blocks) + "\n")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks report", description=__doc__)
    parser.add_argument(
        "paths", type=Path, nargs="+", help="JSON reports, e.g. benchmarks/results/suite-*.json"
    )
    args = parser.parse_args(argv)
    for path in args.paths:
        print(f"wrote {write(path)}")
    for folder in sorted({path.parent for path in args.paths}):
        print(f"wrote {write_index(folder)}")
    return 0
