"""New messages and late labels after the initial load: the landing folder, its batch format, its tables.

Producers drop batches as TSV files into the landing folder (written under another name, then renamed,
so that a batch appears whole). A batch holds either messages or labels, as its header says:

    sms_id<TAB>received_at<TAB>text        one new message per line, received_at its arrival time
    sms_id<TAB>labelled_at<TAB>label       a label (ham or spam) for a message sent earlier, or later

`sms_id` is the producer's own id. The pipeline derives `message_id` from it, so a batch landed twice
adds nothing the second time. A batch is valid whole or rejected whole: one bad line and none of its
rows is stored; it moves to `quarantine/` beside a `.error` file that says why. Stored batches move to
`processed/`, so the folder's top level is exactly what waits to be ingested.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from sms_assets.defs.ingestion.dataset import LABELS, decode_line
from sms_assets.lib.postgres import insert_new

MESSAGES_TABLE = "sms_arrivals"
LABELS_TABLE = "sms_arrival_labels"
MESSAGES_HEADER = ("sms_id", "received_at", "text")
LABELS_HEADER = ("sms_id", "labelled_at", "label")
BATCH_SUFFIX = ".tsv"
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


class BatchError(ValueError):
    """A landed batch is malformed; the message names the file and the line."""


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


def read_batch(path: Path) -> Batch:
    """The batch in `path`, checked line by line; the first bad line raises BatchError."""
    lines = _decoded_lines(path)
    if not lines:
        raise BatchError(f"{path}:1: empty file, expected a header line")
    header = tuple(lines[0].split("\t"))
    if header not in (MESSAGES_HEADER, LABELS_HEADER):
        raise BatchError(
            f"{path}:1: unknown header {'|'.join(header)!r}, expected "
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
            raise BatchError(f"{where}: sms_id {sms_id!r} already on line {seen[sms_id]}")
        seen[sms_id] = number
        when = _timestamp(stamp, where)
        if header == MESSAGES_HEADER:
            if not value.strip():
                raise BatchError(f"{where}: empty text")
            batch.messages.append(ArrivedMessage(sms_id, message_id_for(sms_id), when, value))
        else:
            if value not in LABELS:
                raise BatchError(f"{where}: unknown label {value!r}, expected one of {LABELS}")
            batch.labels.append(ArrivedLabel(sms_id, message_id_for(sms_id), when, value))
    return batch


def _decoded_lines(path: Path) -> list[str]:
    raw_lines = path.read_bytes().split(b"\n")
    if raw_lines[-1] == b"":
        raw_lines.pop()  # the newline that ends the last line
    return [decode_line(raw, f"{path}:{number}", BatchError) for number, raw in enumerate(raw_lines, start=1)]


def _timestamp(value: str, where: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BatchError(f"{where}: {value!r} is not an ISO 8601 timestamp") from exc
    if parsed.tzinfo is None:
        raise BatchError(f"{where}: timestamp {value!r} has no UTC offset")
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class LandingFolder:
    """The landing folder: batches wait at its top level, then move to processed/ or quarantine/."""

    root: Path

    @property
    def processed(self) -> Path:
        return self.root / "processed"

    @property
    def quarantined(self) -> Path:
        return self.root / "quarantine"

    def pending(self) -> list[Path]:
        """The batches waiting to be ingested, in name order (producers name them by landing time)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.suffix == BATCH_SUFFIX and p.is_file())

    def select(self, names: Sequence[str]) -> list[Path]:
        """The batches named (waiting, processed or quarantined), or every waiting one if none is."""
        if not names:
            return self.pending()
        found = {name: self.find(name) for name in names}
        missing = [name for name, path in found.items() if path is None]
        if missing:
            raise BatchError(f"batch {missing[0]} is in none of {self.root}, processed/, quarantine/")
        return [path for path in found.values() if path is not None]

    def find(self, name: str) -> Path | None:
        """Where the batch `name` is now: waiting, processed or quarantined; None if nowhere."""
        for folder in (self.root, self.processed, self.quarantined):
            if (folder / name).is_file():
                return folder / name
        return None

    def archive(self, path: Path) -> Path:
        return _move(path, self.processed)

    def quarantine(self, path: Path, reason: str) -> Path:
        """Move a rejected batch aside, with the reason in `<name>.error` next to it."""
        target = _move(path, self.quarantined)
        target.with_name(target.name + ".error").write_text(reason + "\n", encoding="utf-8")
        return target

    def quarantine_reason(self, path: Path) -> str:
        return path.with_name(path.name + ".error").read_text(encoding="utf-8").strip()

    def land(self, name: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
        """Write a batch as a producer should: under a temporary name, then renamed into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / name
        partial = self.root / f".{name}.part"
        lines = ["\t".join(header), *("\t".join(_field(value) for value in row) for row in rows)]
        partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(partial, target)
        return target


def _field(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if path != target:
        os.replace(path, target)
    return target


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
