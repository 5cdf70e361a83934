"""Trained models on disk: one folder per version (model.joblib + manifest.json), one current pointer.

Saving a model only adds a version; `promote` moves the `CURRENT` pointer that serving reads, so a
candidate that fails the model gate is kept for inspection but never served. Every move is appended to
`HISTORY`; `rollback` moves the pointer back to the version served before and marks the one it leaves
as withdrawn (`WITHDRAWN`), which served_model then refuses to promote again. Every move, and what
decides it (served_model's gate against the served version, `sms-assets model rollback`), holds the
store's pointer lock (`moving`), so a rollback never lands between served_model reading the served
version and replacing it.

Unpickling a file runs whatever code it names, so `load` reads model.joblib once, compares its sha256
with the one the manifest recorded at save time, and unpickles those same bytes only when they match:
a file replaced after training is refused before any of it runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib

from sms_core import locks, moved

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

MODEL_FILE = "model.joblib"
MANIFEST_FILE = "manifest.json"
CURRENT_FILE = "CURRENT"
HISTORY_FILE = "HISTORY"
WITHDRAWN_FILE = "WITHDRAWN"
LOCK_FILE = ".pointer.lock"


SHORT_HASH = 12  # hex digits of a sha256 shown in messages


class ModelStoreError(Exception):
    """A model version could not be served from this store."""


class NoModelError(ModelStoreError, LookupError):
    """No model has been trained into this store yet, or no such version."""


class ModelIntegrityError(ModelStoreError):
    """A version's model file is not the one its manifest recorded: it is refused, never unpickled."""

    def __init__(self, folder: Path, reason: str):
        super().__init__(f"{folder}: {reason}; refusing to load it")
        self.version = folder.name
        self.reason = reason


@dataclass(frozen=True)
class ModelVersion:
    version: str
    model: Pipeline
    manifest: dict[str, Any]


@dataclass(frozen=True)
class ModelStore:
    root: Path

    def save(self, model: Pipeline, manifest: dict[str, Any]) -> ModelVersion:
        """Store a model as a version named by the hash of its bytes; the served version is unchanged."""
        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        payload = buffer.getvalue()
        version = hashlib.sha256(payload).hexdigest()[:16]
        manifest = {**manifest, "version": version, "sha256": hashlib.sha256(payload).hexdigest()}
        folder = self.root / version
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(folder / MODEL_FILE, payload)
        # The manifest is written last: a folder with a manifest holds a complete version.
        _write_atomic(folder / MANIFEST_FILE, json.dumps(manifest, indent=2).encode())
        return ModelVersion(version, model, manifest)

    def moving(self) -> AbstractContextManager[None]:
        """Hold the pointer lock: no other process or thread moves the pointer until it is released."""
        return locks.held(self.root / LOCK_FILE)

    def promote(self, version: str, how: str = "promoted") -> None:
        """Make a saved version the served one, in one atomic rename of the pointer file."""
        if not (self.root / version / MANIFEST_FILE).is_file():
            raise NoModelError(f"no model version {version!r} in {self.root}")
        with self.moving():
            previous = self.served_version()
            if version == previous:
                return  # already served: no move, so nothing to record (a rollback would find itself)
            _write_atomic(self.root / CURRENT_FILE, version.encode())
            entry = {"version": version, "previous": previous, "how": how, "at": _now()}
            with (self.root / HISTORY_FILE).open("a") as history:
                history.write(json.dumps(entry) + "\n")

    def versions(self) -> dict[str, dict[str, Any]]:
        """Every kept version's manifest, by version."""
        if not self.root.is_dir():
            return {}
        return {
            folder.name: self.manifest(folder.name)
            for folder in sorted(self.root.iterdir())
            if (folder / MANIFEST_FILE).is_file()
        }

    def history(self) -> list[dict[str, Any]]:
        """Every move of the pointer, oldest first."""
        try:
            lines = (self.root / HISTORY_FILE).read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def withdrawn(self) -> dict[str, str]:
        """The versions rolled back, each with when and to what; served_model does not promote them."""
        try:
            return json.loads((self.root / WITHDRAWN_FILE).read_text())
        except FileNotFoundError:
            return {}

    def rollback(self) -> tuple[str, str]:
        """Serve again the version served before the current one; returns (left, now served).

        The version left is withdrawn, so a retrain that gives the same bytes does not bring it back.
        The earlier version must load (its sha256 checked) before the pointer moves.
        """
        with self.moving():
            current = self.current_version()
            withdrawn = self.withdrawn()
            earlier = [
                entry["previous"]
                for entry in self.history()
                if entry["version"] == current
                and entry["previous"] not in (None, current, *withdrawn)
                and not entry["how"].startswith("rolled back")
            ]
            if not earlier:
                raise NoModelError(
                    f"no version was served before {current} in {self.root}: nothing to roll back to"
                )
            target = earlier[-1]
            self.load(target)
            withdrawn[current] = f"rolled back to {target} at {_now()}"
            _write_atomic(self.root / WITHDRAWN_FILE, json.dumps(withdrawn, indent=2).encode())
            self.promote(target, how=f"rolled back from {current}")
            return current, target

    def restore(self, version: str) -> None:
        """Serve a version on purpose (after checking it loads), withdrawn or not."""
        self.load(version)
        with self.moving():
            withdrawn = self.withdrawn()
            if withdrawn.pop(version, None) is not None:
                _write_atomic(self.root / WITHDRAWN_FILE, json.dumps(withdrawn, indent=2).encode())
            self.promote(version, how="promoted by hand")

    def current_version(self) -> str:
        version = self.served_version()
        if version is None:
            raise NoModelError(
                f"no served model in {self.root}: materialize spam_model and served_model first "
                "(sms-assets run, or dagster asset materialize --select '*' -m sms_assets.definitions)"
            )
        return version

    def served_version(self) -> str | None:
        """The version `CURRENT` names, or None before any model was promoted. One small file read."""
        try:
            return (self.root / CURRENT_FILE).read_text().strip() or None
        except FileNotFoundError:
            return None

    def manifest(self, version: str) -> dict[str, Any]:
        """A version's manifest, without loading its model."""
        folder = self.root / version
        try:
            manifest = json.loads((folder / MANIFEST_FILE).read_text())
        except FileNotFoundError as exc:
            raise NoModelError(f"no model version {version!r} in {self.root}") from exc
        except ValueError as exc:  # invalid JSON or invalid UTF-8
            raise ModelIntegrityError(folder, f"{MANIFEST_FILE} is not valid JSON ({exc})") from None
        if not isinstance(manifest, dict):
            raise ModelIntegrityError(folder, f"{MANIFEST_FILE} is not a JSON object")
        return manifest

    def load(self, version: str | None = None) -> ModelVersion:
        """A version's model, unpickled only after its bytes matched the manifest's sha256.

        The file is read once: the bytes that were hashed are the bytes that are unpickled, so a file
        swapped between the check and the load cannot slip through.
        """
        version = version or self.current_version()
        manifest = self.manifest(version)
        payload = self._verified_payload(version, manifest)
        moved.install()  # a version pickled before a module moved names it by its old path
        return ModelVersion(version, joblib.load(io.BytesIO(payload)), manifest)

    def stamp(self, version: str) -> tuple[tuple[int, int, int] | None, ...]:
        """(inode, mtime_ns, size) of a version's model file and manifest, None for a missing one:
        a cheap way to tell whether a refused version's files were changed since."""
        stamps: list[tuple[int, int, int] | None] = []
        for name in (MODEL_FILE, MANIFEST_FILE):
            try:
                stat = (self.root / version / name).stat()
            except OSError:
                stamps.append(None)
            else:
                stamps.append((stat.st_ino, stat.st_mtime_ns, stat.st_size))
        return tuple(stamps)

    def _verified_payload(self, version: str, manifest: dict[str, Any]) -> bytes:
        folder = self.root / version
        expected = manifest.get("sha256")
        if not isinstance(expected, str) or not expected:
            raise ModelIntegrityError(folder, f"{MANIFEST_FILE} records no sha256 of {MODEL_FILE}")
        try:
            payload = (folder / MODEL_FILE).read_bytes()
        except FileNotFoundError:
            raise ModelIntegrityError(folder, f"{MODEL_FILE} is missing") from None
        actual = hashlib.sha256(payload).hexdigest()
        if actual != expected.lower():
            raise ModelIntegrityError(
                folder,
                f"sha256 mismatch: {MODEL_FILE} has {actual[:SHORT_HASH]}, "
                f"{MANIFEST_FILE} records {expected[:SHORT_HASH]}",
            )
        return payload


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_atomic(path: Path, payload: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
        handle.write(payload)
    os.replace(handle.name, path)
