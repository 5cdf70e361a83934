"""The served model, swapped without a restart when the model store's CURRENT pointer moves."""

from __future__ import annotations

import logging
import threading

from sms_assets.lib.model_store import ModelStore, ModelVersion, NoModelError

log = logging.getLogger(__name__)


class ModelWatcher:
    """The served model, swapped without a restart when the model store's CURRENT pointer moves.

    A background thread reads the pointer (a few bytes) every `poll_s` seconds and, when it names
    another version, loads that version completely before replacing `current` in one reference
    assignment. A request reads `current` once and scores with that one ModelVersion (model,
    manifest and version together), so it never sees half of a swap, and never touches the disk.
    """

    def __init__(self, store: ModelStore, poll_s: float = 1.0):
        self.store = store
        self.poll_s = poll_s
        self.current: ModelVersion | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self) -> ModelVersion:
        model = self.current
        if model is None:
            raise NoModelError(
                f"no served model in {self.store.root} yet: materialize spam_model and served_model"
            )
        return model

    def refresh(self) -> bool:
        """Load the version CURRENT names if it is not the one served; True when it swapped."""
        version = self.store.served_version()
        if version is None or (self.current is not None and self.current.version == version):
            return False
        loaded = self.store.load(version)
        previous, self.current = self.current, loaded
        log.info("serving model %s (was %s)", version, previous.version if previous else "none")
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
            except Exception:  # a bad version must not kill the watcher: keep serving the last good one
                log.exception("could not load the model CURRENT names; still serving the previous one")
