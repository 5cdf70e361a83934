"""The landing folder's batch format and file moves: pure functions and a temporary folder."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sms_assets.defs.ingestion.batches import (
    ARRIVAL_ID_FLAG,
    LABELS_HEADER,
    MESSAGES_HEADER,
    BatchError,
    LandingFolder,
    message_id_for,
    read_batch,
)

MESSAGES = "sms_id\treceived_at\ttext\n"
LABELS = "sms_id\tlabelled_at\tlabel\n"


def write(tmp_path: Path, content: str | bytes, name: str = "b.tsv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_message_ids_are_stable_distinct_and_outside_the_initial_load() -> None:
    ids = [message_id_for(f"uci-{n}") for n in range(1, 2001)]
    assert ids == [message_id_for(f"uci-{n}") for n in range(1, 2001)]
    assert len(set(ids)) == len(ids)
    assert all(ARRIVAL_ID_FLAG <= i < 2**63 for i in ids)


def test_messages_batch(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MESSAGES + "a-1\t2026-05-01T12:00:00+02:00\tWin a prize!\na-2\t2026-05-01T10:00:01Z\tsee you\n",
    )
    batch = read_batch(path)
    assert batch.name == "b.tsv"
    assert batch.labels == []
    first, second = batch.messages
    assert (first.sms_id, first.text, first.message_id) == ("a-1", "Win a prize!", message_id_for("a-1"))
    assert first.event_timestamp == datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    assert first.event_timestamp.tzinfo == UTC
    assert second.event_timestamp - first.event_timestamp == timedelta(seconds=1)


def test_labels_batch(tmp_path: Path) -> None:
    batch = read_batch(write(tmp_path, LABELS + "a-1\t2026-05-02T00:00:00+00:00\tspam\n"))
    assert batch.messages == []
    [label] = batch.labels
    assert (label.sms_id, label.label, label.message_id) == ("a-1", "spam", message_id_for("a-1"))
    assert label.labelled_at == datetime(2026, 5, 2, tzinfo=UTC)


def test_header_only_batch_is_empty(tmp_path: Path) -> None:
    batch = read_batch(write(tmp_path, MESSAGES))
    assert batch.messages == [] and batch.labels == []


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", r"b\.tsv:1: empty file"),
        ("id\twhen\ttext\n", r"b\.tsv:1: unknown header 'id\|when\|text'"),
        (MESSAGES + "a-1\t2026-05-01T12:00:00Z\n", r"b\.tsv:2: expected 3 tab-separated fields, found 2"),
        (MESSAGES + "a-1\t2026-05-01T12:00:00Z\tok\n\n", r"b\.tsv:3: expected 3 tab-separated fields"),
        (MESSAGES + " \t2026-05-01T12:00:00Z\tok\n", r"b\.tsv:2: empty sms_id"),
        (MESSAGES + "a-1\tyesterday\tok\n", r"b\.tsv:2: 'yesterday' is not an ISO 8601 timestamp"),
        (MESSAGES + "a-1\t2026-05-01T12:00:00\tok\n", r"b\.tsv:2: timestamp '2026-05-01T12:00:00' has no"),
        (MESSAGES + "a-1\t2026-05-01T12:00:00Z\t  \n", r"b\.tsv:2: empty text"),
        (
            MESSAGES + "a-1\t2026-05-01T12:00:00Z\tx\na-1\t2026-05-01T12:00:01Z\ty\n",
            r"b\.tsv:3: sms_id 'a-1' already on line 2",
        ),
        (LABELS + "a-1\t2026-05-01T12:00:00Z\tmaybe\n", r"b\.tsv:2: unknown label 'maybe'"),
        (MESSAGES.encode() + b"a-1\t2026-05-01T12:00:00Z\t\xff\n", r"b\.tsv:2: invalid UTF-8 \(byte 0xff"),
    ],
)
def test_malformed_batches_name_file_and_line(tmp_path: Path, content: str | bytes, error: str) -> None:
    with pytest.raises(BatchError, match=error):
        read_batch(write(tmp_path, content))


def test_landing_folder_lifecycle(tmp_path: Path) -> None:
    folder = LandingFolder(tmp_path / "landing")
    assert folder.pending() == []
    now = datetime(2026, 5, 1, tzinfo=UTC)
    second = folder.land("2-messages.tsv", MESSAGES_HEADER, [("a-2", now, "later")])
    first = folder.land("1-labels.tsv", LABELS_HEADER, [("a-1", now, "ham")])
    (folder.root / "notes.txt").write_text("not a batch")
    # No temporary file is left behind, and only .tsv files at the top level wait.
    assert sorted(p.name for p in folder.root.iterdir()) == ["1-labels.tsv", "2-messages.tsv", "notes.txt"]
    assert folder.pending() == [first, second]
    assert read_batch(second).messages[0].event_timestamp == now

    archived = folder.archive(first)
    quarantined = folder.quarantine(second, "2-messages.tsv:2: bad")
    assert folder.pending() == []
    assert archived == folder.processed / "1-labels.tsv"
    assert quarantined == folder.quarantined / "2-messages.tsv"
    assert folder.quarantine_reason(quarantined) == "2-messages.tsv:2: bad"
    assert folder.find("1-labels.tsv") == archived
    assert folder.find("2-messages.tsv") == quarantined
    assert folder.find("3-messages.tsv") is None
    # Archiving a batch that is already processed is a no-op, as a re-run needs it to be.
    assert folder.archive(archived) == archived
