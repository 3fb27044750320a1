"""``/metrics`` and ``/healthz`` for the daemon, on a stdlib HTTP server in a thread.

Prometheus scrapes ``/metrics``; the kubelet's liveness probe calls ``/healthz``. The
two answer different questions: ``/metrics`` is served whatever the cycles do (a
failing gpuwatch must still be observable), while ``/healthz`` fails when cycles have
stopped succeeding for too long, so that Kubernetes restarts a daemon that is stuck.
What "too long" means is the daemon's call: it passes a ``health`` function, usually
``freshness(...)`` over ``SelfMetrics.last_success_s``.

The stdlib server (rather than ``prometheus_client.start_http_server``) is used so
that both endpoints share one port, one thread and one ``close()``.
"""

from __future__ import annotations

import gzip
import logging
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.1
"""How often the serving loop checks for ``close()``: the most ``close()`` waits."""

Health = Callable[[], tuple[bool, str]]
"""Returns (healthy, reason); the reason is the body of ``/healthz``."""


class TelemetryServer:
    """A running ``/metrics`` + ``/healthz`` server; ``close()`` stops it."""

    def __init__(self, httpd: _Server, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def address(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The bound port: the one asked for, or the one the OS chose for port 0."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.address
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop serving, close the socket and wait for the serving thread. Idempotent."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout_s)
        self._httpd.server_close()

    def __enter__(self) -> TelemetryServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def serve(
    registry: CollectorRegistry, address: str, port: int, *, health: Health
) -> TelemetryServer:
    """Serve ``registry`` on ``/metrics`` and ``health`` on ``/healthz`` from a daemon
    thread. ``port`` 0 binds a free port (read it back from ``.port``). An IPv6
    ``address`` ("::") listens on IPv6. Raises ``OSError`` when the port cannot be bound.
    """
    server_class = _Server6 if ":" in address else _Server
    httpd = server_class((address, port), _Handler)
    httpd.registry = registry
    httpd.health = health
    thread = threading.Thread(
        target=httpd.serve_forever,
        args=(POLL_INTERVAL_S,),
        name=f"gpuwatch-telemetry-{httpd.server_port}",
        daemon=True,
    )
    thread.start()
    log.info("serving /metrics and /healthz on %s:%d", address, httpd.server_port)
    return TelemetryServer(httpd, thread)


def freshness(
    last_success_s: Callable[[], float | None],
    max_age_s: float,
    *,
    clock: Callable[[], float] = time.time,
) -> Health:
    """Healthy while the last successful cycle finished at most ``max_age_s`` ago
    (3 x the cycle interval is a good limit: one slow or failed cycle is not a reason
    to restart). Before the first success, the time since this call counts instead,
    so a daemon gets ``max_age_s`` to succeed once after it starts."""
    started = clock()

    def check() -> tuple[bool, str]:
        now = clock()
        last = last_success_s()
        if last is None:
            waited = now - started
            if waited <= max_age_s:
                return True, f"no successful cycle yet ({waited:.0f} s since start)"
            return False, (
                f"no successful cycle in the {waited:.0f} s since start (limit {max_age_s:.0f} s)"
            )
        age = now - last
        if age <= max_age_s:
            return True, f"last successful cycle finished {age:.0f} s ago"
        return False, (
            f"last successful cycle finished {age:.0f} s ago, over the {max_age_s:.0f} s limit"
        )

    return check


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    health: Health


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._metrics()
        elif path == "/healthz":
            self._healthz()
        else:
            self._answer(HTTPStatus.NOT_FOUND, b"not found: try /metrics or /healthz\n")

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encoder(self.server.registry)
        except Exception as exc:  # a broken collector must not kill the server thread
            log.exception("collecting metrics failed")
            self._answer(HTTPStatus.INTERNAL_SERVER_ERROR, f"collecting failed: {exc}\n".encode())
            return
        headers = {}
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        self._answer(HTTPStatus.OK, body, content_type, headers)

    def _healthz(self) -> None:
        try:
            healthy, reason = self.server.health()
        except Exception as exc:  # an unanswerable health check is an unhealthy one
            log.exception("health check raised")
            healthy, reason = False, f"health check raised {type(exc).__name__}: {exc}"
        if healthy:
            self._answer(HTTPStatus.OK, f"ok: {reason}\n".encode() if reason else b"ok\n")
        else:
            self._answer(HTTPStatus.SERVICE_UNAVAILABLE, f"unhealthy: {reason}\n".encode())

    def _answer(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)
