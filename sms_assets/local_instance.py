"""The Dagster instance `sms-assets run` and `sms-assets dev` share: its folder, and one `dev` at a time."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from sms_assets.lib import settings

DEV_LOCK = "sms-assets-dev.lock"


class InstanceBusy(Exception):
    """Another process holds what this command needs on the instance."""


def home(env: Mapping[str, str]) -> Path:
    """DAGSTER_HOME, else `<state>/dagster_home`."""
    # Runs launched by `sms-assets run` then show up in `sms-assets dev` (the Dagster UI) too.
    folder = Path(env.get("DAGSTER_HOME") or Path(env[settings.STATE_ENV]) / "dagster_home")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def one_dev(folder: Path) -> Iterator[int]:
    """Holds the instance's dev lock (an flock, released by the OS when its holders exit, however they
    exit); yields its file descriptor, for the child that must keep holding it."""
    path = folder / DEV_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise InstanceBusy(
                f"sms-assets dev is already running on the Dagster instance at {folder} (pid {holder}); "
                "a second one would run a second daemon on it. Stop that one first, or set DAGSTER_HOME "
                "to another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield fd
    finally:
        os.close(fd)
