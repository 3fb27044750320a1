"""An HTTP proxy on loopback in front of a real Prometheus that misbehaves on purpose.

A ``decide`` function sees each request and either lets it through to the real server
or answers it (a status, a body, a delay). Every request is recorded with its headers.
The proxy bounds itself: after ``max_requests`` or ``deadline_s`` it answers 503 to
everything and stops serving.
"""

from __future__ import annotations

import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Seen:
    path: str
    params: dict[str, str]
    headers: dict[str, str]

    @property
    def query(self) -> str:
        return self.params.get("query", "")


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b""
    delay_s: float = 0.0
    content_type: str = "application/json"
    passthrough_after_delay: bool = False


Decide = Callable[[Seen], Answer | None]


def too_many_samples() -> Answer:
    return Answer(
        422,
        b'{"status":"error","errorType":"execution","error":"query processing would load '
        b'too many samples into memory in query execution"}',
    )


def overloaded() -> Answer:
    return Answer(503, b'{"status":"error","errorType":"unavailable","error":"overloaded"}')


@dataclass
class FaultProxy:
    upstream: str
    decide: Decide = lambda seen: None
    max_requests: int = 5000
    deadline_s: float = 120.0
    seen: list[Seen] = field(default_factory=list)
    tls: ssl.SSLContext | None = None
    """Serve HTTPS with this server context."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _over_bounds(self) -> bool:
        return (
            len(self.seen) > self.max_requests or time.monotonic() - self._started > self.deadline_s
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                params = dict(urllib.parse.parse_qsl(parsed.query))
                seen = Seen(parsed.path, params, {k: v for k, v in self.headers.items()})
                with proxy._lock:
                    proxy.seen.append(seen)
                    over = proxy._over_bounds()
                if over:
                    self._reply(Answer(503, b"proxy request bound reached"))
                    threading.Thread(target=proxy._server.shutdown, daemon=True).start()
                    return
                answer = proxy.decide(seen)
                if answer is not None and answer.delay_s:
                    time.sleep(answer.delay_s)
                if answer is None or answer.passthrough_after_delay:
                    answer = self._forward()
                self._reply(answer)

            def _forward(self) -> Answer:
                try:
                    with urllib.request.urlopen(proxy.upstream + self.path, timeout=60) as up:
                        return Answer(up.status, up.read())
                except urllib.error.HTTPError as exc:
                    return Answer(exc.code, exc.read())

            def _reply(self, answer: Answer) -> None:
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.content_type)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
