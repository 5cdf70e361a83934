"""The served model, swapped without a restart when the model store's CURRENT pointer moves."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from sms_core.model.store import (
    ModelIntegrityError,
    ModelStore,
    ModelStoreError,
    ModelVersion,
    NoModelError,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    """A version CURRENT names that the store would not load, and why."""

    version: str
    reason: str
    # The version's files as they were when refused: they are tried again only once they change.
    stamp: tuple[tuple[int, int, int] | None, ...]


class ModelWatcher:
    """The served model, swapped without a restart when the model store's CURRENT pointer moves.

    A background thread reads the pointer (a few bytes) every `poll_s` seconds and, when it names
    another version, loads that version completely before replacing `current` in one reference
    assignment. A request reads `current` once and scores with that one ModelVersion (model,
    manifest and version together), so it never sees half of a swap, and never touches the disk.

    A version the store refuses (its model file does not match its manifest's sha256, or it does not
    exist) is never swapped in: the previous model stays served, `refused` says which version was
    refused and why, and the refusal is logged once, not at every poll. The version is tried again
    when its files change, and the refusal is cleared once CURRENT names a version that loads.
    """

    def __init__(self, store: ModelStore, poll_s: float = 1.0):
        self.store = store
        self.poll_s = poll_s
        self.current: ModelVersion | None = None
        self.refused: Refusal | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self) -> ModelVersion:
        model = self.current
        if model is None:
            refused = self.refused
            if refused is not None:
                raise NoModelError(
                    f"no model to serve from {self.store.root}: refused version {refused.version}: "
                    f"{refused.reason}"
                )
            raise NoModelError(
                f"no served model in {self.store.root} yet: materialize spam_model and served_model"
            )
        return model

    def refresh(self) -> bool:
        """Load the version CURRENT names if it is not the one served; True when it swapped.

        A version the store refuses is recorded in `refused` (and logged once), not raised.
        """
        version = self.store.served_version()
        current = self.current
        if version is None or (current is not None and current.version == version):
            self.refused = None
            return False
        stamp = self.store.stamp(version)
        refused = self.refused
        if refused is not None and refused.version == version and refused.stamp == stamp:
            return False  # these very files were refused already
        try:
            loaded = self.store.load(version)
        except ModelStoreError as exc:
            reason = exc.reason if isinstance(exc, ModelIntegrityError) else str(exc)
            self.refused = Refusal(version, reason, stamp)
            log.error(
                "refused model version %s in %s: %s; %s",
                version,
                self.store.root,
                reason,
                f"still serving {current.version}" if current else "no model is served",
            )
            return False
        self.current, self.refused = loaded, None
        log.info("serving model %s (was %s)", version, current.version if current else "none")
        return True

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception:  # an unexpected failure must not kill the watcher: keep serving
                log.exception("could not load the model CURRENT names; still serving the previous one")
