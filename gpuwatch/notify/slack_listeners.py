"""The daemon's two ways of hearing button clicks from Slack.

- Socket Mode (slack-sdk's own client, an app-level ``xapp-`` token): gpuwatch opens the
  websocket itself, so the cluster needs no public ingress. Every envelope is
  acknowledged by its id at once (Slack redelivers what is not acknowledged within
  3 s), then its payload is handled.
- An HTTP endpoint (``POST /slack/interactions``), for workspaces that prefer a Request
  URL. A request counts only with a valid signature of its body (slack-sdk's
  ``SignatureVerifier``, with the app's signing secret) made less than 5 minutes ago,
  and only once: a replayed signature is refused even within those minutes. Anything
  else is answered 401 and changes nothing.

Both hand clicks to one ``ClickHandler``; neither writes anything but the queue.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web import WebClient

from gpuwatch.config.settings import SlackSettings
from gpuwatch.notify.interactions import ClickHandler
from gpuwatch.notify.slack import client_options
from gpuwatch.util.redact import register_secret
from gpuwatch.util.redact_output import redact_logger

log = logging.getLogger(__name__)

INTERACTIONS_PATH = "/slack/interactions"
MAX_BODY_BYTES = 256 * 1024
"""Slack's interaction payloads are a few KiB; anything larger is not one."""
SIGNATURE_MAX_AGE_S = 300
"""Slack's own advice: a request signed more than 5 minutes ago may be a replay."""


class SocketModeListener:
    """Takes clicks over Socket Mode until closed."""

    def __init__(self, app_token: str, settings: SlackSettings, handler: ClickHandler) -> None:
        register_secret(app_token)
        logger = logging.getLogger("slack_sdk.socket_mode")
        redact_logger(logger)
        web = WebClient(
            base_url=settings.base_url,
            **client_options("slack_sdk.web.base_client", settings, time.sleep),
        )
        self._handler = handler
        self._client = SocketModeClient(
            app_token=app_token, web_client=web, logger=logger, auto_reconnect_enabled=True
        )
        self._client.socket_mode_request_listeners.append(self._on_request)

    def start(self) -> None:
        """Open the connection (``apps.connections.open``, then the websocket)."""
        self._client.connect()
        log.info("listening for Slack clicks over Socket Mode")

    def close(self) -> None:
        self._client.close()

    def _on_request(self, client: SocketModeClient, request: SocketModeRequest) -> None:
        client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        if request.type == "interactive" and isinstance(request.payload, dict):
            self._handler.handle(request.payload)


class InteractionsEndpoint:
    """Serves ``POST /slack/interactions`` on its own port until closed."""

    def __init__(
        self,
        signing_secret: str,
        handler: ClickHandler,
        address: str,
        port: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        register_secret(signing_secret)
        self._verifier = SignatureVerifier(signing_secret, clock=_Clock(clock))
        self._handler = handler
        self._clock = clock
        self._seen: dict[str, float] = {}
        """Signature -> when it stops being acceptable anyway: a replay within that time
        is refused."""
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((address, port), _Handler)
        self._server.daemon_threads = True
        self._server.endpoint = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="slack-interactions", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("serving Slack interactions on port %s%s", self.port, INTERACTIONS_PATH)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def receive(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """(HTTP status, answer) for one request; handles its clicks when it counts."""
        if path.partition("?")[0] != INTERACTIONS_PATH:
            return 404, "not found"
        refusal = self._refusal(headers, body)
        if refusal:
            log.warning("Slack interaction refused: %s", refusal)
            return 401, refusal
        try:
            payload = json.loads(parse_qs(body.decode("utf-8"))["payload"][0])
        except (KeyError, IndexError, UnicodeDecodeError, ValueError):
            return 400, "expected a form with a JSON payload"
        if not isinstance(payload, dict):
            return 400, "expected a form with a JSON payload"
        try:
            self._handler.handle(payload)
        except Exception:  # a bug must not take the endpoint down; Slack shows the error
            log.exception("Slack interaction not handled")
            return 500, "not handled"
        return 200, ""

    def _refusal(self, headers: dict[str, str], body: bytes) -> str:
        timestamp = headers.get("x-slack-request-timestamp", "")
        signature = headers.get("x-slack-signature", "")
        if not timestamp or not signature:
            return "unsigned: no X-Slack-Signature and X-Slack-Request-Timestamp"
        if not timestamp.isdigit() or not self._verifier.is_valid(body, timestamp, signature):
            return "bad signature, or signed more than 5 minutes ago"
        now = self._clock()
        with self._lock:
            self._seen = {s: t for s, t in self._seen.items() if t > now}
            if signature in self._seen:
                return "replayed: this signature was already used"
            self._seen[signature] = float(timestamp) + SIGNATURE_MAX_AGE_S
        return ""


class _Clock:
    """slack-sdk's clock interface over a plain function (tests move time)."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._send(413, "too large")
            return
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        endpoint: InteractionsEndpoint = self.server.endpoint  # type: ignore[attr-defined]
        status, text = endpoint.receive(self.path, headers, body)
        self._send(status, text)

    def do_GET(self) -> None:
        self._send(405, "POST only")

    def _send(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # refusals are logged with their reason
