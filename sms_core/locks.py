"""Exclusive file locks between processes (flock), which a holder may take again."""

from __future__ import annotations

import fcntl
import os
import threading
import time
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


class Busy(Exception):
    """Another process holds the lock `sole` asked for; `holder` is what it wrote: its role, if it gave
    one, and its pid ("unknown" if nothing)."""

    def __init__(self, path: Path, holder: str):
        super().__init__(f"{path} is held by pid {holder}")
        self.holder = holder


# A `holder` probe takes the lock shared for an instant: `sole` tries this long before calling it busy.
_SOLE_TRIES, _SOLE_PAUSE_S = 20, 0.01


@contextmanager
def sole(path: Path, role: str = "") -> Iterator[int]:
    """Hold `path`'s lock with this process's pid (after `role`, when given) written in it, or raise Busy
    naming the process that holds it; yields the lock's file descriptor (a child given it keeps the lock
    held)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for attempt in range(_SOLE_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == _SOLE_TRIES - 1:
                    raise Busy(path, _pid_in(fd)) from None
                time.sleep(_SOLE_PAUSE_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{role} {os.getpid()}".strip().encode() + b"\n", 0)
        yield fd
    finally:
        os.close(fd)


def holder(path: Path) -> str | None:
    """What the process that holds `path`'s lock through `sole` wrote (its role, if any, and its pid);
    None when none holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _pid_in(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _pid_in(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
