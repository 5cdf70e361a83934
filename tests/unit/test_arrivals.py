"""The landing folder's batch format and file moves: pure functions and a temporary folder."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sms_assets.defs.ingestion.batches import (
    ARRIVAL_ID_FLAG,
    LABELS_HEADER,
    MESSAGES_HEADER,
    BatchError,
    message_id_for,
    read_batch,
)
from sms_assets.defs.ingestion.landing import LandingFolder
from sms_core.features.schema import MAX_TEXT_CHARS

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
        ("id\twhen\ttext\n", r"b\.tsv:1: unknown header \(3 tab-separated fields\), expected 'sms_id\|"),
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
        (MESSAGES + "a-1\t2026-05-01T12:00:00Z\tnul \x00 here\n", r"b\.tsv:2: NUL character at column 30"),
        (
            MESSAGES + f"a-1\t2026-05-01T12:00:00Z\t{'x' * (MAX_TEXT_CHARS + 1)}\n",
            r"b\.tsv:2: text of 2,001 characters, above the limit of 2,000 \(MAX_TEXT_CHARS\)$",
        ),
        (
            MESSAGES + f"a-1\t{'9' * 300}\tok\n",
            r"b\.tsv:2: '9{40}'\.\.\. \(300 characters\) is not an ISO 8601 timestamp$",
        ),
    ],
)
def test_malformed_batches_name_file_and_line(tmp_path: Path, content: str | bytes, error: str) -> None:
    with pytest.raises(BatchError, match=error):
        read_batch(write(tmp_path, content))


def test_a_text_of_the_longest_length_allowed_is_stored(tmp_path: Path) -> None:
    text = "é" * MAX_TEXT_CHARS  # the limit counts characters, as the API does, not bytes
    [message] = read_batch(write(tmp_path, MESSAGES + f"a-1\t2026-05-01T12:00:00Z\t{text}\n")).messages
    assert message.text == text


def test_a_file_that_is_no_batch_is_not_quoted(tmp_path: Path) -> None:
    secret = "root:SECRET-LINE:0:0:root:/root:/bin/bash"
    with pytest.raises(BatchError) as error:
        read_batch(write(tmp_path, f"{secret}\nmore\tsecret\tlines\n"))
    assert "b.tsv:1: unknown header (1 tab-separated fields)" in str(error.value)
    assert "SECRET" not in str(error.value)


def test_a_too_long_text_is_named_by_size_never_quoted(tmp_path: Path) -> None:
    text = "SECRET " * 7_500_000  # a 52 MB message
    path = write(tmp_path, MESSAGES + f"a-1\t2026-05-01T12:00:00Z\tok\na-2\t2026-05-01T12:00:00Z\t{text}\n")
    with pytest.raises(BatchError) as error:
        read_batch(path, max_bytes=64 * 2**20)
    assert str(error.value) == (
        f"{path}:3: text of 52,500,000 characters, above the limit of 2,000 (MAX_TEXT_CHARS)"
    )


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
