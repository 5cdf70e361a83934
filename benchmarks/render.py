"""A run's report in Markdown, made from its JSON report alone (`render`), so that any committed JSON
can be read as a page and its page regenerated: the machine and its load, the versions, every target
with its verdict, then each part's figures, the project beside the peers measured in the same run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd

# The JSON keeps the suite's pass / fail; a reader wants to know whether the goal was reached.
VERDICTS = {"pass": "met", "fail": "missed", "not measured": "not measured"}
LOAD_WINDOWS = ("1m", "5m", "15m")


def table(columns: list[str], rows: Iterable[list[str]], align: str) -> str:
    """A Markdown table of preformatted cells; `align` is one l or r per column."""
    frame = pd.DataFrame([[cell.replace("|", r"\|") for cell in row] for row in rows], columns=columns)
    colalign = ["right" if a == "r" else "left" for a in align]
    # No number parsing: the cells are already formatted as the report means them.
    return frame.to_markdown(index=False, disable_numparse=True, colalign=colalign)


def fmt(value: Any, spec: str = "") -> str:
    """A figure as text, or an empty cell where an older report did not record it."""
    return "" if value is None else format(value, spec)


def verdict(target: dict[str, Any]) -> str:
    """met, missed, or "not measured: <why>" (a listed target without a value, or one not listed)."""
    status = target.get("status", "not measured")
    if status != "not measured":
        return VERDICTS[status]
    # Reports of late November 2026 listed unmeasured targets without saying why.
    return f"not measured: {target.get('reason', 'the report records no reason')}"


def load_average(host: dict[str, Any]) -> str:
    """The load averages at the start and the end of the run (reports before December 2026: 1 minute)."""
    windows = [w for w in LOAD_WINDOWS if f"load_average_{w}" in host]
    minutes = " / ".join(w.removesuffix("m") for w in windows)

    def at(moment: str) -> str:
        return " / ".join(fmt(host[f"load_average_{w}{moment}"]) for w in windows)

    return f"load average ({minutes} min): {at('')} at the start, {at('_after')} at the end"


def load_during(during: dict[str, Any]) -> str:
    return (
        f"load average (1 min) during the part: median {fmt(during['median'])}, "
        f"{fmt(during['min'])} to {fmt(during['max'])} over {during['samples']} samples, "
        f"one every {fmt(during['every_s'])} s"
    )


def header(report: dict[str, Any]) -> list[str]:
    host = report["machine"]
    blocks = [f"# Benchmark run of {report['date']}", f"`{report['command'].strip()}`"]
    if report.get("quick"):
        blocks.append("A smoke run (`--quick`): small samples and one small N, to show that the suite works.")
    facts = [
        f"- {host['cores']} cores, {host['memory_gb']} GB of memory, {host['platform']}, "
        f"{host['processor']}, Python {host['python']}",
        f"- {load_average(host)}",
        *(f"- {name}: `{url}`" for name, url in report.get("services", {}).items()),
    ]
    versions = [[name, v] for name, v in report["versions"].items()]
    return [
        *blocks,
        "## Machine",
        "\n".join(facts),
        "## Versions",
        table(["package", "version"], versions, "ll"),
    ]


def targets(report: dict[str, Any]) -> list[str]:
    everything = [*report["targets"], *report.get("targets_not_listed", [])]
    rows = [[t["target"], t["goal"], fmt(t.get("measured"), ","), verdict(t)] for t in everything]
    return ["## Targets", table(["target", "goal", "measured", "verdict"], rows, "lrrl")]


def model_part(section: dict[str, Any]) -> list[str]:
    models = section["models"]
    names = list(next(iter(models.values()))["asset_split"])
    rows = []
    for service, m in models.items():
        cost = m["one_text"]
        one_text = f"{cost['p50_ms']:.3f} / {cost['p99_ms']:.3f}"
        rows.append([service, "the asset's split", *(f"{m['asset_split'][n]:.4f}" for n in names), one_text])
        spread = [f"{m['mean'][n]:.4f} ± {m['sd'][n]:.4f}" for n in names]
        rows.append(["", f"mean ± sd, seeds {', '.join(m['per_seed'])}", *spread, ""])
    columns = ["feature service", "split", *names, "one text p50 / p99 ms"]
    return [
        "## Model",
        f"{section['messages']:,} messages.",
        section["method"],
        table(columns, rows, "ll" + "r" * (len(names) + 1)),
    ]


def online_part(section: dict[str, Any]) -> list[str]:
    intro = (
        f"{section['sample_size']:,} sequential requests per form after {section['warmup']:,} warm-up, "
        f"{section['workers_per_server']} worker per server, {section['messages']:,} messages"
    )
    if "feature_service" in section:
        intro += f", feature service `{section['feature_service']}`"
    if "load_average_1m_during" in section:  # reports before December 2026 sampled it only around the run
        intro += f"; {load_during(section['load_average_1m_during'])}"
    percentiles = ("p50_ms", "p95_ms", "p99_ms", "max_ms")
    latency = [
        [form, r["via"], *(fmt(r.get(p), ".3f") for p in percentiles)]
        for form, r in section["latency"].items()
    ]
    load = [
        [
            server,
            fmt(r["requests_per_s"], ",.0f"),
            fmt(r["p99_under_load_ms"], ".2f"),
            fmt(r.get("connections")),
            fmt(r.get("seconds")),
            fmt(r.get("client")),
        ]
        for server, r in section["throughput"].items()
    ]
    load_columns = ["server", "requests/s", "p99 under load ms", "connections", "seconds", "client"]
    return [
        "## Online",
        f"{intro}.",
        section["method"],
        "### Latency",
        table(["form", "via", "p50 ms", "p95 ms", "p99 ms", "max ms"], latency, "llrrrr"),
        "### Throughput",
        table(load_columns, load, "lrrrrl"),
    ]


def step_row(step: str, r: dict[str, Any]) -> list[str]:
    return [
        step,
        fmt(r["seconds"], ",.2f"),
        fmt(r["peak_rss_mib"], ",.0f"),
        fmt(r.get("rows_per_s"), ","),
        fmt(r.get("us_per_row"), ".3f"),
        f"{r['pieces']} ({r['pieces_at_once']} at once)" if "pieces" in r else "",
    ]


def process_column(section: dict[str, Any]) -> str:
    """What the benchmark's child process ran, as its reports kept it over time."""
    runs = section["runs"].values()
    if all("arrivals" in run for run in runs):
        return "child s (both runs and arrivals)"
    return "child s (both runs)" if all("change_run" in run for run in runs) else "child s (the run)"


def scale_part(section: dict[str, Any]) -> list[str]:
    def startup(run: dict[str, Any]) -> str:
        seconds = run.get("step_startup_seconds", {})
        return " / ".join(fmt(seconds[k], ".2f") for k in ("median", "longest") if seconds.get(k) is not None)

    summary = [
        [
            f"{int(n):,}",
            fmt(run["graph_seconds"], ",.1f"),
            fmt(run["process_seconds"], ",.1f"),
            fmt(run["peak_rss_mib"], ",.0f"),
            fmt(run.get("peak_rss_all_processes_mib"), ",.0f"),
            fmt(run.get("redis_bytes_per_message"), ",.0f"),
            startup(run),
        ]
        for n, run in section["runs"].items()
    ]
    columns = [
        "N",
        "graph s (the run's process, imports included)",
        process_column(section),
        "peak RSS MiB, one process",
        "peak RSS MiB, all at once",
        "Redis bytes per message",
        "step start-up s, median / longest",
    ]
    if all("change_run" in run for run in section["runs"].values()):  # kept since the change run
        columns.append("after a 1% change: graph s (÷ first)")
        for row, run in zip(summary, section["runs"].values(), strict=True):
            again = run["change_run"]
            row.append(f"{fmt(again['graph_seconds'], ',.1f')} ({again['ratio_to_first']:.1%})")
    if all("arrivals" in run for run in section["runs"].values()):  # kept since arrivals are measured
        columns.append("arrivals: landed to readable s, p50 / max")
        for row, run in zip(summary, section["runs"].values(), strict=True):
            row.append(f"{fmt(run['arrivals']['p50_s'], '.1f')} / {fmt(run['arrivals']['max_s'], '.1f')}")
    if all("distinct_texts" in run for run in section["runs"].values()):  # kept since texts are varied
        columns.insert(1, "distinct texts (duplicates)")
        for row, run in zip(summary, section["runs"].values(), strict=True):
            row.insert(1, f"{run['distinct_texts']:,} ({run['duplicate_share']:.2%})")
    blocks = ["## Scale", section["method"], table(columns, summary, "r" * len(columns))]
    step_columns = ["step", "seconds", "peak RSS MiB", "rows/s", "µs per row", "pieces"]
    for n, run in section["runs"].items():
        # A graph's plan, pieces and finish are one row (the time any of them ran), in the place of its
        # first step; the JSON has each.
        names = dict.fromkeys(step.split(".")[0] for step in run["steps"])
        steps = [step_row(name, run["steps"][name]) for name in names if name in run["steps"]]
        blocks += [f"### N = {int(n):,}", table(step_columns, steps, "lrrrrr")]
    return blocks


def change_part(section: dict[str, Any]) -> list[str]:
    rows = [
        [
            phase,
            f"{r['answers']:,}",
            fmt(r["requests_per_s"], ".1f"),
            ", ".join(f"{status}: {n}" for status, n in r["not_200"].items()) or "none",
            str(len(r["model_versions"])),
            fmt(r["p50_ms"], ".2f"),
            fmt(r["p99_ms"], ".2f"),
            fmt(r["max_ms"], ".2f"),
        ]
        for phase, r in section["phases"].items()
    ]
    columns = ["phase", "answers", "req/s", "not 200", "model versions", "p50 ms", "p99 ms", "max ms"]
    return ["## Through change", section["method"], table(columns, rows, "lrrlrrrr")]


SECTIONS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "model": model_part,
    "online": online_part,
    "scale": scale_part,
    "change": change_part,
}


def render(report: dict[str, Any]) -> str:
    """The Markdown of one JSON report: the machine, the versions, the targets, then each part's figures."""
    blocks = [*header(report), *targets(report)]
    for part, section in SECTIONS.items():
        if part in report:
            blocks += section(report[part])
    return "\n\n".join(blocks) + "\n"
