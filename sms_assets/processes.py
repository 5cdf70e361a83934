"""A command's child process gets the signals the command gets, and nothing it started outlives it.

`dagster dev` starts a webserver, a daemon and code servers, and those start run workers, all in the
process group of whoever started `dagster dev` (Dagster never starts a group of its own on POSIX): it
expects Ctrl-C in a terminal to reach the whole group at once. `sms-assets` starts such a command in a
group of its own and sends that group each SIGINT, SIGTERM or SIGHUP it receives, so a signal to the
`sms-assets` process alone (a service manager, `kill`, a closed terminal) stops everything as Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import IO

HANDED_ON = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_in_own_group(
    command: Sequence[str],
    env: Mapping[str, str],
    pass_fds: Sequence[int] = (),
    output: IO[str] | None = None,
    while_running: Callable[[], None] | None = None,
    every_s: float = 1.0,
    beside: Sequence[Sequence[str]] = (),
) -> int:
    """Run `command` as the leader of a new process group, hand the group every signal in `HANDED_ON`,
    and wait for the command; returns its exit code (negative: the signal that ended it).

    `output`: where its stdout and stderr go (else this process's); `while_running`: called every
    `every_s` seconds until it exits; `beside`: commands started in the same group after it, which get
    its signals and are stopped (SIGTERM) when it exits."""
    child: subprocess.Popen[bytes] | None = None
    early: list[int] = []

    def hand_on(signum: int, _frame: FrameType | None) -> None:
        if child is None:
            early.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):  # the group has exited already
            os.killpg(child.pid, signum)

    # Installed before the child starts: a handler (unlike SIG_IGN, which a shell gives the commands
    # it starts in the background) is reset to the default in the child, so the child's own handlers
    # decide (Dagster maps SIGTERM onto whatever SIGINT does, ignoring included).
    previous = {signum: signal.signal(signum, hand_on) for signum in HANDED_ON}
    try:
        child = subprocess.Popen(
            list(command),
            env=dict(env),
            process_group=0,
            pass_fds=tuple(pass_fds),
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
        )
        others = [
            subprocess.Popen(
                list(other), env=dict(env), process_group=child.pid, stdout=output, stderr=output
            )
            for other in beside
        ]
        for signum in early:
            os.killpg(child.pid, signum)
        while while_running is not None and child.poll() is None:
            while_running()
            time.sleep(every_s)
        code = child.wait()
        for other in others:
            if other.poll() is None:
                other.terminate()
            other.wait()
        return code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
