"""What every domain's definitions use: metadata previews, runs in flight, the schedules' time zone, the
concurrency pools, a check's latest verdict."""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import psycopg

from sms_core.postgres import column_types

PREVIEW_ROWS = 5
PREVIEW_CHARS = 80
# Schedules and cron freshness read their cron strings in this zone. UTC has no daylight-saving gaps;
# set the team's zone here to run the nightly retrain at their night.
TIMEZONE = "UTC"
# Dagster concurrency pools, declared on each asset and check by what its step writes or compares. The
# instance (dagster.yaml, and the local one that `sms-assets` writes) gives every pool one slot per run
# (`concurrency: pools: granularity: run, default_limit: 1`): the run queue starts no run while another
# run holding one of its pools is in progress, so no two runs interleave their writes to one store.
# Ingestion has a pool of its own: an arrivals run may go beside a feature sync, a reconciliation or a
# retrain (they only ever add rows those read, each in one statement), never beside another ingestion.
# The served log has one too (serving/served_log.py says why it may go beside any other run): its
# quarter-hourly intake holds back no arrival, and no other intake.
STORES_POOL = "sms_stores"  # the tables, the Feast registry, Redis and the model versions
LANDING_POOL = "sms_landing"  # the landing folder and the arrival tables
SERVED_LOG_POOL = "sms_served_log"  # served_answers and Feast's statistics of the logs
POOLS = (STORES_POOL, LANDING_POOL, SERVED_LOG_POOL)
# The training branch (training_set, its check, spam_model, the gate, served_model and its check, the
# last two also waiting for the sync) is the whole graph's longest chain: its steps go first when steps
# wait for a slot of the executor, so it runs beside the sync's pieces, which have the other slot, instead
# of after them.
LONGEST_CHAIN_FIRST = {"dagster/priority": "1"}
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
VERDICT_PAGE = 100
# The served log's live-quality check (serving/quality_checks.py), whose verdict spam_model records:
# named here, since the training group cannot import the serving group, which imports it.
LIVE_QUALITY_CHECK = dg.AssetCheckKey(dg.AssetKey("served_log"), "served_quality_holds")


def table_metadata(conn: psycopg.Connection, table: str) -> dict[str, Any]:
    """Dagster's table metadata: the table's name and its columns with their types, as Postgres has them."""
    columns = [dg.TableColumn(name, kind) for name, kind in column_types(conn, table)]
    return {"dagster/table_name": table, "dagster/column_schema": dg.TableSchema(columns=columns)}


def preview_table(frame: pd.DataFrame) -> dg.MetadataValue:
    """The first rows of a frame as Dagster's table metadata, which the UI shows in place (a markdown
    value over 1,000 characters hides behind a button). Texts are cut to PREVIEW_CHARS characters."""
    head = frame.head(PREVIEW_ROWS)
    columns = [dg.TableColumn(str(name), _kind(head[name])) for name in head.columns]
    records = [
        dg.TableRecord({str(name): _cell(value) for name, value in row.items()})
        for row in head.to_dict(orient="records")
    ]
    return dg.MetadataValue.table(records, dg.TableSchema(columns=columns))


def _kind(column: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(column):
        return "bool"
    if pd.api.types.is_integer_dtype(column):
        return "int"
    if pd.api.types.is_float_dtype(column):
        return "float"
    return "string"


def _cell(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, bool | int | float):
        return value
    if hasattr(value, "item"):  # a numpy scalar
        return value.item()
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def runs_in_flight(instance: dg.DagsterInstance, keys: Iterable[dg.AssetKey]) -> list[dg.DagsterRun]:
    """Queued or running runs that may materialize any of `keys` (a run without a subset may)."""
    wanted = set(keys)
    return [
        run
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT))
        if run.asset_selection is None or run.asset_selection & wanted
    ]


def code_version(*modules: str) -> str:
    """A Dagster code version derived from the source of the modules (by dotted name) that compute an
    asset: an edit to any of them shows the asset (and what is downstream) as changed in the UI.

    The files are read, not imported, so the definitions load without the libraries those modules
    import (scikit-learn, Feast): a run pays for those only in the steps that use them.
    """
    digest = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"no source for module {name}")
        digest.update(Path(spec.origin).read_bytes())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class Verdict:
    run_id: str
    at: float  # when the check was evaluated
    passed: bool


def latest_verdict(instance: dg.DagsterInstance, key: dg.AssetCheckKey) -> Verdict | None:
    """The check's latest evaluation that has a result. A run records its checks as planned when it is
    queued, so the runs waiting behind this one must not hide the verdict this one has just reached."""
    cursor = None
    while True:
        page = instance.event_log_storage.get_asset_check_execution_history(key, VERDICT_PAGE, cursor)
        for record in page:
            if record.status.value != "PLANNED" and record.event is not None:
                return Verdict(record.run_id, record.event.timestamp, record.status.value == "SUCCEEDED")
        if len(page) < VERDICT_PAGE:
            return None
        cursor = page[-1].id


def live_quality(instance: dg.DagsterInstance) -> str:
    """The latest verdict of the served log's live-quality check: "passed", "failed", or "none" before
    it ever ran."""
    verdict = latest_verdict(instance, LIVE_QUALITY_CHECK)
    return "none" if verdict is None else "passed" if verdict.passed else "failed"
