"""raw_sms_messages refuses to replace the table with too few messages or one label only.

Each load runs through `dg.materialize` on a database of its own; after a refused load the
table is the one the real dataset loaded, row for row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest

from sms_assets.defs.ingestion.assets import raw_sms_messages
from sms_assets.defs.ingestion.dataset import DatasetError
from sms_assets.defs.resources import DatasetResource, PostgresResource
from sms_core import urls

pytestmark = pytest.mark.integration

FULL_DATASET_MESSAGES = 5574
SAMPLE_ID = 42


@dataclass(frozen=True)
class Snapshot:
    rows: int
    digest: str  # md5 of every row, in message_id order
    sample: tuple[Any, ...]
    leftovers: int  # staging tables left behind by a load


def snapshot(url: str) -> Snapshot:
    with psycopg.connect(urls.libpq_conninfo(url)) as conn:
        row = conn.execute(
            "SELECT count(*), md5(string_agg(concat_ws('|', message_id, event_timestamp, label, text), "
            "E'\\n' ORDER BY message_id)) FROM raw_sms_messages"
        ).fetchone()
        sample = conn.execute("SELECT * FROM raw_sms_messages WHERE message_id = %s", (SAMPLE_ID,)).fetchone()
        leftovers = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'raw\\_sms\\_messages\\_\\_%'"
        ).fetchone()
    assert row is not None and sample is not None and leftovers is not None
    return Snapshot(int(row[0]), str(row[1]), tuple(sample), int(leftovers[0]))


def load(
    url: str, dataset: Path, tmp_path: Path, holdback: int = 0, **config: Any
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [raw_sms_messages],
        resources={
            "postgres": PostgresResource(url=url),
            "dataset": DatasetResource(path=str(dataset), state_dir=str(tmp_path), holdback=holdback),
        },
        run_config={"ops": {"raw_sms_messages": {"config": config}}},
    )


@pytest.fixture
def database(scratch_database: str) -> str:
    return scratch_database


@pytest.fixture
def loaded(database: str, dataset_path: Path, tmp_path: Path) -> Snapshot:
    """The real dataset loaded into the test's own database: the table a bad load must leave alone."""
    result = load(database, dataset_path, tmp_path)
    assert result.success
    [event] = result.asset_materializations_for_node("raw_sms_messages")
    assert event.metadata["min_messages"].value == 1000
    before = snapshot(database)
    assert before.rows == FULL_DATASET_MESSAGES
    assert before.sample[0] == SAMPLE_ID and before.sample[2] == "ham"
    assert before.sample[3].startswith("Did I forget to tell you")
    assert before.leftovers == 0
    return before


def ham_lines(dataset: Path, n: int) -> list[str]:
    lines = [line for line in dataset.read_text().splitlines(keepends=True) if line.startswith("ham\t")]
    assert len(lines) >= n
    return lines[:n]


def test_a_one_line_file_is_refused_and_the_table_kept(
    database: str, loaded: Snapshot, tmp_path: Path
) -> None:
    one_line = tmp_path / "one_line.tsv"
    one_line.write_text("ham\tSee you at eight\n")
    expected = (
        f"{one_line}: 1 message (ham 1, spam 0): below the floor of 1000 messages "
        "(RawMessagesConfig.min_messages); only ham"
    )
    with pytest.raises(DatasetError, match=f"^{re.escape(expected)}$"):
        load(database, one_line, tmp_path)
    assert snapshot(database) == loaded


def test_a_ham_only_file_is_refused_and_the_table_kept(
    database: str, loaded: Snapshot, dataset_path: Path, tmp_path: Path
) -> None:
    ham_only = tmp_path / "ham_only.tsv"
    ham_only.write_text("".join(ham_lines(dataset_path, 1200)))
    expected = f"{ham_only}: 1200 messages (ham 1200, spam 0): only ham"
    with pytest.raises(DatasetError, match=f"^{re.escape(expected)}$"):
        load(database, ham_only, tmp_path)
    assert snapshot(database) == loaded


def test_the_floor_counts_messages_after_the_holdback(
    database: str, loaded: Snapshot, dataset_path: Path, tmp_path: Path
) -> None:
    # The full file is 5,574 messages, but holding back 5,000 loads 574 of them.
    with pytest.raises(
        DatasetError,
        match=re.escape(
            f"{dataset_path}: 574 messages (ham 493, spam 81; 5000 more held back): below the floor of "
            "1000 messages (RawMessagesConfig.min_messages)"
        )
        + "$",
    ):
        load(database, dataset_path, tmp_path, holdback=5000)
    assert snapshot(database) == loaded


def test_a_lower_floor_from_run_config_lets_a_small_two_label_load_through(
    database: str, dataset_path: Path, tmp_path: Path
) -> None:
    result = load(database, dataset_path, tmp_path, holdback=5000, min_messages=500)
    assert result.success
    after = snapshot(database)
    assert after.rows == 574
    assert after.leftovers == 0
