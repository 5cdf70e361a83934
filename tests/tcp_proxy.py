"""A loopback TCP forwarder in front of a real server, which a test can cut, slow down and restore.

Outage tests need Postgres or Redis to go away and come back. Stopping the shared servers would break
every other test (and CI shares them), so the service under test talks to them through this proxy
instead: `stop()` refuses new connections and resets open ones, as a dead server does; `start()`
forwards again on the same port. Two slow faults keep connections open: `delayed(s)` holds every
chunk the server sends back for `s` seconds (a slow server), `black_hole()` drops every chunk the
client sends (a server that accepts connections and never answers). The bytes on the wire are the
real servers'; nothing is simulated.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from sms_core.embedded import free_port

Target = tuple[str, int] | str  # (host, port), or the path of a unix socket


class TcpProxy:
    def __init__(self, target: Target):
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._delay_s = 0.0
        self._black_hole = False
        self._held: set[int] = set()  # the connections (client sockets' ids) a fault held a chunk of

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Refuse new connections and reset the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """The server is unreachable inside the block, and reachable again after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    @contextlib.contextmanager
    def delayed(self, seconds: float) -> Iterator[None]:
        """Inside the block, every chunk the server sends back reaches the client `seconds` late."""
        self.fault(delay_s=seconds)
        try:
            yield
        finally:
            self.clear_fault()

    @contextlib.contextmanager
    def black_hole(self) -> Iterator[None]:
        """Inside the block, connections are accepted and what clients send is dropped: no answer."""
        self.fault(black_hole=True)
        try:
            yield
        finally:
            self.clear_fault()

    def fault(self, delay_s: float = 0.0, black_hole: bool = False) -> None:
        """From now on, delay what the server sends back, or drop what clients send."""
        with self._lock:
            self._delay_s, self._black_hole, self._held = delay_s, black_hole, set()

    def clear_fault(self) -> None:
        with self._lock:
            self._delay_s, self._black_hole = 0.0, False

    def held_connections(self) -> int:
        """How many connections the current fault has held a chunk of: clients left waiting."""
        with self._lock:
            return len(self._held)

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self.target, str):
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
        else:
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
        return upstream

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = self._connect_upstream()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, client: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    drop = self._black_hole and source is client
                    delay_s = self._delay_s if source is not client else 0.0
                    if drop or delay_s:
                        self._held.add(id(client))
                if drop:
                    continue
                if delay_s:
                    time.sleep(delay_s)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._open.difference_update((source, sink))
