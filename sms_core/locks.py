"""Exclusive file locks between processes (flock), which a holder may take again."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Per lock file: a thread lock (this process's other threads wait on it) and, while held, the flock's file
# descriptor and how many times its holder took it.
_GUARD = threading.Lock()
_THREADS: dict[Path, threading.RLock] = {}
_HELD: dict[Path, list[int]] = {}


@contextmanager
def held(path: Path) -> Iterator[None]:
    """Hold `path`'s lock (the file is created if missing, with its folder): other processes and threads
    wait until this returns; the holding thread may take it again."""
    path = path.resolve()
    with _GUARD:
        thread_lock = _THREADS.setdefault(path, threading.RLock())
    with thread_lock:
        if path not in _HELD:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by the OS too, however the process ends
            _HELD[path] = [fd, 0]
        _HELD[path][1] += 1
        try:
            yield
        finally:
            _HELD[path][1] -= 1
            if not _HELD[path][1]:
                os.close(_HELD.pop(path)[0])
