"""New messages and late labels after the initial load: the batch format, and the tables batches fill.

Producers drop batches as TSV files into the landing folder (written under another name, then renamed,
so that a batch appears whole). A batch holds either messages or labels, as its header says:

    sms_id<TAB>received_at<TAB>text        one new message per line, received_at its arrival time
    sms_id<TAB>labelled_at<TAB>label       a label (ham or spam) for a message sent earlier, or later

`sms_id` is the producer's own id. The pipeline derives `message_id` from it, so a batch landed twice
adds nothing the second time. A batch is valid whole or rejected whole: one bad line, a text longer
than MAX_TEXT_CHARS, a file above the size limit, or an entry that is not a regular file (a link, a
folder, a FIFO) and none of its rows is stored; it moves to `quarantine/` beside a `.error` file that
says why without quoting the file. Stored batches move to `processed/`, so the folder's top level is exactly
what waits to be ingested (`landing.py` moves them, `landing_files.py` reads them without leaving the
folder).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from sms_assets.defs.ingestion.dataset import LABELS, check_message_length, decode_line
from sms_assets.defs.ingestion.landing_files import (
    DEFAULT_MAX_BATCH_BYTES,
    BatchError,
    opened_folder,
    read_regular,
    shown,
)
from sms_core.postgres import insert_new

MESSAGES_TABLE = "sms_arrivals"
LABELS_TABLE = "sms_arrival_labels"
MESSAGES_HEADER = ("sms_id", "received_at", "text")
LABELS_HEADER = ("sms_id", "labelled_at", "label")
# Arrival ids live in [2**62, 2**63): never a line number of the initial load, always a Postgres bigint.
ARRIVAL_ID_FLAG = 1 << 62

# Labels may come before their message, so a label has no foreign key. A label sent again with a later
# labelled_at replaces the earlier one; the same label sent again changes nothing.
_DDL = f"""
CREATE TABLE IF NOT EXISTS {MESSAGES_TABLE} (
    message_id bigint PRIMARY KEY,
    sms_id text NOT NULL UNIQUE,
    event_timestamp timestamptz NOT NULL,
    text text NOT NULL,
    batch text NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {LABELS_TABLE} (
    message_id bigint PRIMARY KEY,
    sms_id text NOT NULL,
    label text NOT NULL,
    labelled_at timestamptz NOT NULL,
    batch text NOT NULL
);
"""
_NEWER_LABEL_WINS = (
    "(message_id) DO UPDATE SET label = EXCLUDED.label, labelled_at = EXCLUDED.labelled_at, "
    f"batch = EXCLUDED.batch WHERE EXCLUDED.labelled_at > {LABELS_TABLE}.labelled_at"
)

# Arrived messages whose label has arrived too, at the message's own time: features are joined as of
# when the message came in (what a prediction would have seen), whenever its label came.
LABELLED_ARRIVALS_SQL = (
    f"SELECT a.message_id, a.event_timestamp, l.label, a.text "
    f"FROM {MESSAGES_TABLE} a JOIN {LABELS_TABLE} l USING (message_id)"
)


@dataclass(frozen=True)
class ArrivedMessage:
    sms_id: str
    message_id: int
    event_timestamp: datetime
    text: str


@dataclass(frozen=True)
class ArrivedLabel:
    sms_id: str
    message_id: int
    labelled_at: datetime
    label: str


@dataclass(frozen=True)
class Batch:
    name: str
    messages: list[ArrivedMessage] = field(default_factory=list)
    labels: list[ArrivedLabel] = field(default_factory=list)


def message_id_for(sms_id: str) -> int:
    """The message_id of a producer's sms_id: the same on every run, so re-landed batches dedupe."""
    digest = hashlib.blake2b(sms_id.encode("utf-8"), digest_size=8).digest()
    return ARRIVAL_ID_FLAG | (int.from_bytes(digest, "big") >> 2)


def read_batch(path: Path, max_bytes: int = DEFAULT_MAX_BATCH_BYTES, follow_folder: bool = True) -> Batch:
    """The batch in `path`, checked line by line; the first bad line raises BatchError.

    `path` must be a regular file of at most `max_bytes` (landing_files.read_regular); with
    follow_folder=False its folder must not be a link either.
    """
    with opened_folder(path.parent, follow=follow_folder) as folder_fd:
        lines = _decoded_lines(read_regular(folder_fd, path.name, str(path), max_bytes), path)
    if not lines:
        raise BatchError(f"{path}:1: empty file, expected a header line")
    header = tuple(lines[0].split("\t"))
    if header not in (MESSAGES_HEADER, LABELS_HEADER):
        # Not quoted: a file that is no batch at all should not see its first line copied anywhere.
        raise BatchError(
            f"{path}:1: unknown header ({len(header)} tab-separated fields), expected "
            f"{'|'.join(MESSAGES_HEADER)!r} or {'|'.join(LABELS_HEADER)!r} (tab-separated)"
        )
    seen: dict[str, int] = {}
    batch = Batch(path.name)
    for number, line in enumerate(lines[1:], start=2):
        where = f"{path}:{number}"
        fields = line.split("\t")
        if len(fields) != 3:
            raise BatchError(f"{where}: expected 3 tab-separated fields, found {len(fields)}")
        sms_id, stamp, value = fields
        if not sms_id.strip():
            raise BatchError(f"{where}: empty sms_id")
        if sms_id in seen:
            raise BatchError(f"{where}: sms_id {shown(sms_id)} already on line {seen[sms_id]}")
        seen[sms_id] = number
        when = _timestamp(stamp, where)
        if header == MESSAGES_HEADER:
            if not value.strip():
                raise BatchError(f"{where}: empty text")
            check_message_length(value, where, BatchError)
            batch.messages.append(ArrivedMessage(sms_id, message_id_for(sms_id), when, value))
        else:
            if value not in LABELS:
                raise BatchError(f"{where}: unknown label {shown(value)}, expected one of {LABELS}")
            batch.labels.append(ArrivedLabel(sms_id, message_id_for(sms_id), when, value))
    return batch


def _decoded_lines(data: bytes, path: Path) -> list[str]:
    raw_lines = data.split(b"\n")
    if raw_lines[-1] == b"":
        raw_lines.pop()  # the newline that ends the last line
    return [decode_line(raw, f"{path}:{number}", BatchError) for number, raw in enumerate(raw_lines, start=1)]


def _timestamp(value: str, where: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BatchError(f"{where}: {shown(value)} is not an ISO 8601 timestamp") from exc
    if parsed.tzinfo is None:
        raise BatchError(f"{where}: timestamp {shown(value)} has no UTC offset")
    return parsed.astimezone(UTC)


def ensure_tables(conn: psycopg.Connection) -> None:
    """Create the arrival tables if they are missing; every reader and writer of them calls this."""
    with conn.transaction():
        # Two runs starting at once would otherwise race on CREATE TABLE IF NOT EXISTS.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('sms_assets.arrivals'))")
        conn.execute(_DDL)  # type: ignore[arg-type]


def store_batch(conn: psycopg.Connection, batch: Batch) -> tuple[int, int]:
    """Store a batch's rows in one transaction; returns (messages added, labels added or replaced)."""
    with conn.transaction():
        messages = insert_new(
            conn,
            MESSAGES_TABLE,
            ("message_id", "sms_id", "event_timestamp", "text", "batch"),
            ((m.message_id, m.sms_id, m.event_timestamp, m.text, batch.name) for m in batch.messages),
            # Keyed on sms_id: a message sent again is skipped, while two sms_ids hashing to one
            # message_id would fail loudly on the primary key instead of losing a message.
            on_conflict="(sms_id) DO NOTHING",
        )
        labels = insert_new(
            conn,
            LABELS_TABLE,
            ("message_id", "sms_id", "label", "labelled_at", "batch"),
            ((x.message_id, x.sms_id, x.label, x.labelled_at, batch.name) for x in batch.labels),
            on_conflict=_NEWER_LABEL_WINS,
        )
    return messages, labels
