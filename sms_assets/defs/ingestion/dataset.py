"""The SMS Spam Collection: fetched (or read locally), checked, parsed line by line."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

UCI_ZIP_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
MEMBER = "SMSSpamCollection"
# sha256 of SMSSpamCollection as published in the UCI zip (5,574 lines).
UCI_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
LABELS = ("ham", "spam")
# Message n arrives at EPOCH + (n - 1) minutes: deterministic, so every run builds the same history.
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
ARRIVAL_INTERVAL = timedelta(minutes=1)


class DatasetError(ValueError):
    """The dataset could not be obtained or holds a malformed line."""


@dataclass(frozen=True)
class Message:
    message_id: int
    event_timestamp: datetime
    label: str
    text: str


def fetch_dataset(local_path: str | None, cache_dir: Path, url: str = UCI_ZIP_URL) -> Path:
    """The dataset file: `local_path` as given, else the upstream zip downloaded once and checked."""
    if local_path:
        path = Path(local_path).expanduser()
        if not path.is_file():
            raise DatasetError(f"SMS_DATASET_PATH={local_path} does not name a file")
        return path
    target = cache_dir / MEMBER
    if target.is_file() and sha256(target) == UCI_SHA256:
        return target
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            payload = response.read()
    except (urllib.error.URLError, TimeoutError) as exc:
        raise DatasetError(
            f"Could not download the SMS Spam Collection from {url} ({exc}). On a machine without "
            "internet, set SMS_DATASET_PATH to a local copy of the SMSSpamCollection file "
            "(one 'ham|spam<TAB>text' per line)."
        ) from exc
    try:
        data = zipfile.ZipFile(io.BytesIO(payload)).read(MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DatasetError(f"{url} is not the expected zip holding {MEMBER}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != UCI_SHA256:
        raise DatasetError(f"{MEMBER} from {url} has sha256 {digest}, expected {UCI_SHA256}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def count_lines(path: Path) -> int:
    """The number of lines `parse_messages` reads from `path`."""
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def decode_line(raw: bytes, where: str, error: type[Exception]) -> str:
    """One line as text without its line ending; invalid UTF-8 or a NUL raises `error` naming `where`."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        raise error(f"{where}: invalid UTF-8 (byte 0x{bad} at column {exc.start + 1})") from exc
    line = line.removesuffix("\n").removesuffix("\r")
    if "\x00" in line:
        # Postgres text cannot hold it: refused here, by line, rather than by a failing COPY.
        raise error(f"{where}: NUL character at column {line.index(chr(0)) + 1}")
    return line


def check_message_length(text: str, where: str, error: type[Exception]) -> None:
    """Raise `error` naming `where` when `text` is longer than the API takes: by size, never the text."""
    # Imported here: the schema loads Feast, and `sms-assets run` imports this module to name a missing
    # dataset in a line before anything else starts.
    from sms_core.features.schema import MAX_TEXT_CHARS

    if len(text) > MAX_TEXT_CHARS:
        size = f"text of {len(text):,} characters"
        raise error(f"{where}: {size}, above the limit of {MAX_TEXT_CHARS:,} (MAX_TEXT_CHARS)")


def parse_messages(path: Path) -> Iterator[Message]:
    """Each line `label<TAB>text` as a Message whose id is its line number.

    A malformed line raises DatasetError naming the file and the line; nothing after it is read.
    """
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            line = decode_line(raw, where, DatasetError)
            fields = line.split("\t")
            if len(fields) != 2:
                raise DatasetError(
                    f"{where}: expected 2 tab-separated fields (label, text), found {len(fields)}"
                )
            label, text = fields
            if label not in LABELS:
                raise DatasetError(f"{where}: unknown label {label!r}, expected one of {LABELS}")
            if not text.strip():
                raise DatasetError(f"{where}: empty text")
            check_message_length(text, where, DatasetError)
            yield Message(number, EPOCH + (number - 1) * ARRIVAL_INTERVAL, label, text)


def check_load(path: Path, balance: Mapping[str, int], min_messages: int, held_back: int = 0) -> None:
    """Raise DatasetError, naming the file and its label counts, when the messages loaded from it are
    fewer than `min_messages` or carry one label only: a model could not be trained, or judged, on them.
    """
    problems = []
    total = sum(balance.values())
    if total < min_messages:
        problems.append(f"below the floor of {min_messages} messages (RawMessagesConfig.min_messages)")
    present = [label for label in LABELS if balance.get(label)]
    if len(present) < len(LABELS):
        problems.append(f"only {present[0]}" if present else "no messages")
    if problems:
        counts = ", ".join(f"{label} {balance.get(label, 0)}" for label in LABELS)
        held = f"; {held_back} more held back" if held_back else ""
        raise DatasetError(
            f"{path}: {total} message{'' if total == 1 else 's'} ({counts}{held}): {'; '.join(problems)}"
        )
