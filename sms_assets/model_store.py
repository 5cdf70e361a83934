"""Trained models on disk: one folder per version (model.joblib + manifest.json), one current pointer."""

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
        """Store a model as a new version named by the hash of its bytes and make it current."""
        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        payload = buffer.getvalue()
        version = hashlib.sha256(payload).hexdigest()[:16]
        manifest = {**manifest, "version": version, "sha256": hashlib.sha256(payload).hexdigest()}
        folder = self.root / version
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(folder / MODEL_FILE, payload)
        _write_atomic(folder / MANIFEST_FILE, json.dumps(manifest, indent=2).encode())
        # The pointer moves last, so a reader never sees a version whose files are incomplete.
        _write_atomic(self.root / CURRENT_FILE, version.encode())
        return ModelVersion(version, model, manifest)

    def current_version(self) -> str:
        pointer = self.root / CURRENT_FILE
        if not pointer.is_file():
            raise NoModelError(
                f"no trained model in {self.root}: materialize spam_model first "
                "(sms-assets run, or dagster asset materialize --select '*' -m sms_assets)"
            )
        return pointer.read_text().strip()

    def load(self, version: str | None = None) -> ModelVersion:
        version = version or self.current_version()
        folder = self.root / version
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        return ModelVersion(version, joblib.load(folder / MODEL_FILE), manifest)


def _write_atomic(path: Path, payload: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
        handle.write(payload)
    os.replace(handle.name, path)
