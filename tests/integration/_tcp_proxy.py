"""A TCP proxy of the test's own: the machine's PostgreSQL is shared, so a test never stops it.

A server reaches the database through the proxy; `cut()` is the database going away
(every connection closed, new ones refused) and `start()` brings it back on the same port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from oprun.testing import free_port


class TcpProxy:
    """Forwards a loopback port to `upstream` until cut; restored on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listening: threading.Event | None = None

    def start(self) -> TcpProxy:
        """Accept connections (again)."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(0.1)
        listening = self._listening = threading.Event()
        listening.set()
        threading.Thread(target=self._accept, args=(listener, listening), daemon=True).start()
        return self

    def cut(self) -> None:
        """Refuse new connections and close every open one: the database went away."""
        if self._listening is not None:
            self._listening.clear()
            self._listening = None
        time.sleep(0.2)  # the listener closes within its accept timeout
        with self._lock:
            doomed, self._open = self._open, set()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket, listening: threading.Event) -> None:
        with listener:
            while listening.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                try:
                    upstream = socket.create_connection(self.upstream, timeout=5)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                client.settimeout(None)
                with self._lock:
                    self._open |= {client, upstream}
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
