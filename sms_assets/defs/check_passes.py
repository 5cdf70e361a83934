"""Which rows a check verifies: the rows changed since its last passing evaluation and a seeded sample
of the rest (an incremental pass), or every row (a full pass).

A check's work then grows with the change, not with the table. Each passing evaluation records, in its
metadata, `verified_through`: the newest change of the feature table (a row's `computed_at`, a removed
row's `removed_at`) when it started. The next evaluation verifies every row changed after that, in
full, and a random sample of the others, of `sample_size` rows drawn with `sample_seed` (the run's id
when unset): both are in its metadata, so the same sample can be drawn again. A check with no passing
evaluation on record runs a full pass, and so does every check, every night, in `full_checks_job`
(`full_checks` schedule), so a row the samples never drew is still verified, within a day.
"""

from __future__ import annotations

import os
import random
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dagster as dg
import numpy as np
import psycopg
from pydantic import Field

from sms_assets.defs.features.table import FEATURE_TABLE, REMOVED_TABLE, newest_change, row_count
from sms_core.pool import Chunk, Result, pooled_map
from sms_core.postgres import id_array

SAMPLE_SIZE = 1_000
# Below this many rows a full pass costs seconds: every pass is then full.
FULL_BELOW_ROWS = 100_000
# From this many rows a full pass is shared by several processes (sms_core.pool): it spends its time in
# Python, and a blocking check holds everything downstream of it while it runs.
POOL_FROM_ROWS = 200_000
VERIFIED_THROUGH = "verified_through"
# A sample: the rows written by a time, in the order of their ids' hashes (an index of the feature table).
SAMPLE_SQL = (
    f"SELECT message_id FROM {FEATURE_TABLE} WHERE computed_at <= %s AND hashint8(message_id) {{}} %s "
    "ORDER BY hashint8(message_id) LIMIT %s"
)
HISTORY = 20  # evaluations looked back through for the last passing one


class SampleConfig(dg.Config):
    """How much a check verifies in this run."""

    full: bool = Field(default=False, description="Verify every row, not the changes and a sample.")
    sample_size: int = Field(default=SAMPLE_SIZE, ge=0, description="Rows drawn from the unchanged ones.")
    sample_seed: int | None = Field(
        default=None, description="The sample's seed; unset: derived from the run's id (in the metadata)."
    )
    full_below_rows: int = Field(
        default=FULL_BELOW_ROWS, ge=0, description="A table of fewer rows is verified in full."
    )


class PassConfig(SampleConfig):
    """How much a check verifies in this run, and in how many processes a full pass."""

    processes: int = Field(
        default=0, ge=0, description="Processes a full pass over a large table is shared by; 0: one per core."
    )
    pool_from_rows: int = Field(
        default=POOL_FROM_ROWS, ge=0, description="A pass over a smaller table runs in the check's process."
    )


@dataclass(frozen=True)
class Pass:
    """A check's pass: full, or the changes after `since` and a sample of the rows before it."""

    since: datetime | None  # None: a full pass
    through: datetime | None  # the newest change when the pass began: the next pass starts after it
    seed: int
    sample_size: int
    why: str  # why it is full, or incremental
    processes: int = 1  # that share the pass's chunks

    def map(
        self,
        work: Callable[[Any, Chunk], Result],
        chunks: Iterable[Chunk],
        state: Any,
        make_state: Callable[[], Any],
    ) -> Iterator[Result]:
        """`work(state, chunk)` for each chunk, in order, in this pass's processes (sms_core.pool)."""
        return pooled_map(work, chunks, self.processes, state, make_state)

    @property
    def full(self) -> bool:
        return self.since is None

    def metadata(self, changed: int, sampled: int) -> dict[str, dg.RawMetadataValue]:
        return {
            "pass": f"{'full' if self.full else 'incremental'}: {self.why}",
            "changed_since": self.since.isoformat() if self.since else None,
            VERIFIED_THROUGH: self.through.isoformat() if self.through else None,
            "changed_rows_verified": changed,
            "sample_size": self.sample_size,
            "sample_seed": self.seed,
            "sampled_rows_verified": sampled,
            "processes": self.processes,
        }

    def changed_ids(self, conn: psycopg.Connection) -> np.ndarray:
        """The feature table's rows written after `since` (every row on a full pass)."""
        where = "" if self.since is None else " WHERE computed_at > %s"
        # Sorted here: ORDER BY in a cursor's query would walk the primary key through every row.
        query = f"SELECT message_id FROM {FEATURE_TABLE}{where}"
        return np.sort(id_array(conn, query, params=None if self.since is None else [self.since]))

    def removed_ids(self, conn: psycopg.Connection) -> np.ndarray:
        """Messages removed after `since` (on a full pass, the check compares every id instead)."""
        if self.since is None:
            return np.array([], dtype=np.int64)
        query = f"SELECT message_id FROM {REMOVED_TABLE} WHERE removed_at > %s ORDER BY message_id"
        return id_array(conn, query, params=[self.since])

    def sample_ids(self, conn: psycopg.Connection) -> np.ndarray:
        """`sample_size` rows of the feature table written at or before `since`, drawn with `seed` (none
        on a full pass: every row is a changed one): the rows whose ids hash next after a point the seed
        picks, round the ring. The same seed draws the same rows from the same table, through an index
        of the feature table, without reading the others."""
        if self.since is None or self.sample_size == 0:
            return np.array([], dtype=np.int64)
        start = random.Random(self.seed).randint(-(2**31), 2**31 - 1)
        drawn = id_array(conn, SAMPLE_SQL.format(">="), params=[self.since, start, self.sample_size])
        if len(drawn) < self.sample_size:  # round the ring, back to the start
            rest = self.sample_size - len(drawn)
            drawn = np.concatenate(
                [drawn, id_array(conn, SAMPLE_SQL.format("<"), params=[self.since, start, rest])]
            )
        return np.sort(drawn)

    def sample_of(self, ids: Sequence[int]) -> list[int]:
        """`sample_size` of `ids` (a list the check holds, such as a model's held-out ids), by `seed`."""
        return sorted(random.Random(self.seed).sample(list(ids), min(self.sample_size, len(ids))))


def plan(context: dg.AssetCheckExecutionContext, config: PassConfig, conn: psycopg.Connection) -> Pass:
    """This evaluation's pass: full when asked, on a small table, or when no earlier one passed; else
    incremental."""
    seed = seed_of(context, config)
    through = newest_change(conn)
    rows = row_count(conn)
    since = None
    if config.full:
        why = "asked for (the nightly full_checks_job)"
    elif rows < config.full_below_rows:
        why = f"the table holds fewer than {config.full_below_rows:,} rows"
    elif (since := last_verified(context)) is None:
        why = "no passing evaluation on record"
    else:
        why = f"the rows changed since {since.isoformat()}, and {config.sample_size:,} of the others"
    large = rows >= config.pool_from_rows
    processes = (config.processes or os.cpu_count() or 1) if since is None and large else 1
    return Pass(since, through, seed, config.sample_size, why, processes)


def seed_of(context: dg.AssetCheckExecutionContext, config: SampleConfig) -> int:
    """The sample's seed: the configured one, else the CRC-32 of the run's id."""
    return config.sample_seed if config.sample_seed is not None else zlib.crc32(context.run.run_id.encode())


def last_verified(context: dg.AssetCheckExecutionContext) -> datetime | None:
    """`verified_through` of this check's last passing evaluation; None if it has none."""
    value = last_passing(context, VERIFIED_THROUGH)
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def last_passing(context: dg.AssetCheckExecutionContext, key: str) -> Any:
    """The metadata value `key` of this check's last passing evaluation that has one; None if none."""
    (spec,) = context.check_specs
    records = context.instance.event_log_storage.get_asset_check_execution_history(spec.key, limit=HISTORY)
    for record in records:
        event = record.event.dagster_event if record.event else None
        evaluation = event.event_specific_data if event else None
        if not getattr(evaluation, "passed", False):
            continue
        value = getattr(evaluation, "metadata", {}).get(key)
        if value is not None and value.value is not None:
            return value.value
    return None
