"""The landing folder: batches wait at its top level, then move to processed/ or quarantine/.

Every entry is read, moved and written through `landing_files`, so nothing the folder holds (a link, a
FIFO, a hard link) makes a run read or write outside it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sms_assets.defs.ingestion.batches import Batch, read_batch
from sms_assets.defs.ingestion.landing_files import (
    DEFAULT_MAX_BATCH_BYTES,
    REASON_MAX_BYTES,
    BatchError,
    batch_name_problem,
    check_batch_name,
    lexists,
    move,
    opened_folder,
    read_regular,
    write_text,
)
from sms_core import locks

# Held by the arrivals worker (sms_assets/arrivals_worker.py) while it takes the batches as they land; a
# hidden name, which is never taken for a batch.
WORKER_LOCK = ".arrivals-worker.lock"


@dataclass(frozen=True)
class LandingFolder:
    """The landing folder: batches wait at its top level, then move to processed/ or quarantine/."""

    root: Path
    max_bytes: int = DEFAULT_MAX_BATCH_BYTES

    @property
    def processed(self) -> Path:
        return self.root / "processed"

    @property
    def quarantined(self) -> Path:
        return self.root / "quarantine"

    def pending(self) -> list[Path]:
        """What waits to be ingested, in name order (producers name batches by landing time): every
        entry whose name may name a batch, whatever it is; a run quarantines those that are not
        regular files. Other names (hidden or partial files, other suffixes) are left alone."""
        if not self.root.is_dir():
            return []
        with os.scandir(self.root) as entries:
            return sorted(Path(entry.path) for entry in entries if batch_name_problem(entry.name) is None)

    @contextmanager
    def watched(self) -> Iterator[None]:
        """Hold the folder's worker lock: arrivals_sensor leaves the batches to its holder meanwhile.
        Raises locks.Busy, naming the pid, when another process holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        with locks.sole(self.root / WORKER_LOCK):
            yield

    def watcher(self) -> str | None:
        """The pid of the process that takes this folder's batches as they land; None when none does."""
        return locks.holder(self.root / WORKER_LOCK)

    def select(self, names: Sequence[str]) -> list[Path]:
        """The batches named (waiting, processed or quarantined), or every waiting one if none is.

        Every name is checked (check_batch_name) before any is looked up, so a refused name moves nothing.
        """
        if not names:
            return self.pending()
        for name in names:
            check_batch_name(name)
        found = {name: self.find(name) for name in names}
        missing = [name for name, path in found.items() if path is None]
        if missing:
            raise BatchError(f"batch {missing[0]} is in none of {self.root}, processed/, quarantine/")
        return [path for path in found.values() if path is not None]

    def find(self, name: str) -> Path | None:
        """Where the batch `name` is now: waiting, processed or quarantined; None if nowhere."""
        check_batch_name(name)
        for folder in (self.root, self.processed, self.quarantined):
            if not os.path.lexists(folder):
                continue
            with self._opened(folder) as folder_fd:
                if lexists(folder_fd, name):
                    return folder / name
        return None

    def read(self, path: Path) -> Batch:
        """The batch at `path`, one of this folder's entries (see `read_batch`)."""
        return read_batch(path, self.max_bytes, follow_folder=path.parent == self.root)

    def archive(self, path: Path) -> Path:
        return self._move(path, self.processed)

    def quarantine(self, path: Path, reason: str) -> Path:
        """Move a rejected entry aside (a link itself, never its target), with the reason in
        `<name>.error` next to it."""
        target = self._move(path, self.quarantined)
        with self._opened(self.quarantined) as folder_fd:
            write_text(folder_fd, target.name + ".error", reason + "\n")
        return target

    def quarantine_reason(self, path: Path) -> str:
        where = self.quarantined / (path.name + ".error")
        try:
            with self._opened(self.quarantined) as folder_fd:
                data = read_regular(folder_fd, where.name, str(where), REASON_MAX_BYTES)
        except BatchError as exc:
            return f"{path} is in quarantine, and its reason cannot be read: {exc}"
        return data.decode("utf-8", errors="replace").strip()

    def land(self, name: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
        """Write a batch as a producer should: under a temporary name, then renamed into place."""
        check_batch_name(name)
        self.root.mkdir(parents=True, exist_ok=True)
        lines = ["\t".join(header), *("\t".join(_field(value) for value in row) for row in rows)]
        with self._opened(self.root) as folder_fd:
            write_text(folder_fd, name, "\n".join(lines) + "\n")
        return self.root / name

    @contextmanager
    def _opened(self, folder: Path, create: bool = False) -> Iterator[int]:
        # The root may be a link (SMS_LANDING_DIR is the operator's); its subfolders may not.
        with opened_folder(folder, follow=folder == self.root, create=create) as folder_fd:
            yield folder_fd

    def _move(self, path: Path, folder: Path) -> Path:
        if path.parent != folder:
            with self._opened(path.parent) as from_fd, self._opened(folder, create=True) as to_fd:
                move(path.name, from_fd, to_fd)
        return folder / path.name


def _field(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)
