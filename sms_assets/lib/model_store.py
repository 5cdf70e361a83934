"""Trained models on disk: one folder per version (model.joblib + manifest.json), one current pointer.

Saving a model only adds a version; `promote` moves the `CURRENT` pointer that serving reads, so a
candidate that fails the model gate is kept for inspection but never served.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
from sklearn.pipeline import Pipeline

MODEL_FILE = "model.joblib"
MANIFEST_FILE = "manifest.json"
CURRENT_FILE = "CURRENT"


class NoModelError(LookupError):
    """No model has been trained into this store yet."""


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

    def promote(self, version: str) -> None:
        """Make a saved version the served one, in one atomic rename of the pointer file."""
        if not (self.root / version / MANIFEST_FILE).is_file():
            raise NoModelError(f"no model version {version!r} in {self.root}")
        _write_atomic(self.root / CURRENT_FILE, version.encode())

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
        try:
            return json.loads((self.root / version / MANIFEST_FILE).read_text())
        except FileNotFoundError as exc:
            raise NoModelError(f"no model version {version!r} in {self.root}") from exc

    def load(self, version: str | None = None) -> ModelVersion:
        version = version or self.current_version()
        manifest = self.manifest(version)
        return ModelVersion(version, joblib.load(self.root / version / MODEL_FILE), manifest)


def _write_atomic(path: Path, payload: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
        handle.write(payload)
    os.replace(handle.name, path)
