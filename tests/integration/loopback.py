"""The HTTP server under the test doubles that speak a real service's API on loopback
(the Kubernetes API emulator, the Slack Web API): threaded, keep-alive, and able to
close its open connections so that stopping it never waits on a client."""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Any, Self


class LoopbackHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any) -> None:
        if address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"test servers listen on loopback only, not {address[0]}")
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Close kept-alive connections so that their handler threads end now."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)


class Serving:
    """A loopback server answering on its own thread until ``stop()``, or until its
    deadline passes (then ``on_expire`` runs and it stops answering): a test double that
    is forgotten does not outlive its test by long."""

    def __init__(
        self, server: LoopbackHTTPServer, name: str, deadline_s: float, on_expire: Any = None
    ) -> None:
        self.server = server
        self._on_expire = on_expire
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )
        self._thread.start()
        self._timer = threading.Timer(deadline_s, self.expire)
        self._timer.daemon = True
        self._timer.start()

    def expire(self) -> None:
        """Stop answering now (the request budget or the deadline ran out)."""
        if self._on_expire is not None:
            self._on_expire()
        threading.Thread(target=self.server.shutdown, daemon=True).start()

    def stop(self) -> None:
        """Stop answering and close the port: a client then finds the connection refused."""
        self._timer.cancel()
        self.server.shutdown()
        self.server.close_connections()
        self.server.server_close()
        self._thread.join(timeout=5)


class ServedDouble:
    """Start, stop and ``with`` for a test double served on loopback: a subclass builds
    its server (``_new_server``) and names its thread; the request budget calls
    ``_exhaust``."""

    thread_name = "test-double"
    deadline_s: float
    exhausted: bool
    _server: Any
    _serving: Serving | None

    def _new_server(self) -> LoopbackHTTPServer:
        raise NotImplementedError

    def start(self) -> Self:
        server = self._new_server()
        self._server = server
        self._serving = Serving(server, self.thread_name, self.deadline_s, self._expired)
        return self

    def stop(self) -> None:
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.stop()

    def _expired(self) -> None:
        self.exhausted = True

    def _exhaust(self) -> None:
        """Stop answering now: the request budget ran out."""
        if self._serving is not None:
            self._serving.expire()
        else:
            self.exhausted = True

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
