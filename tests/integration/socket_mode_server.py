"""A Slack Socket Mode server on loopback, for slack-sdk's own Socket Mode client.

Slack's side of Socket Mode: the Web API's ``apps.connections.open`` (served by the
Slack Web API test server, which answers with this server's ``ws://`` URL) hands the
client a websocket URL; the client connects; Slack sends envelopes (``type``,
``envelope_id``, ``payload``) and the client acknowledges each by sending back its
``envelope_id``. Tests push an interaction and wait for its acknowledgement.

aiohttp serves the websocket on its own event loop thread, bound to 127.0.0.1, with a
budget of envelopes and a deadline; the server stops with the test.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import WSMsgType, web


class SocketModeServer:
    """Use as a context manager; ``url`` is what ``apps.connections.open`` answers."""

    def __init__(self, *, max_envelopes: int = 100, deadline_s: float = 60.0) -> None:
        self.max_envelopes = max_envelopes
        self.deadline_s = deadline_s
        self.acks: list[str] = []
        """Envelope ids the client acknowledged, in order."""
        self.connections = 0
        self._sent = 0
        self._sockets: list[web.WebSocketResponse] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._started = 0.0
        self._acked = threading.Condition()

    # -- lifecycle ----------------------------------------------------------------------
    def __enter__(self) -> SocketModeServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self._started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/link", self._link)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/link?ticket=test"

    # -- serving ------------------------------------------------------------------------
    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        self.connections += 1
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1}))
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                continue
            try:
                envelope_id = json.loads(message.data).get("envelope_id")
            except ValueError:
                continue
            if isinstance(envelope_id, str):
                with self._acked:
                    self.acks.append(envelope_id)
                    self._acked.notify_all()
        self._sockets.remove(ws)
        return ws

    # -- scripting ----------------------------------------------------------------------
    def wait_connected(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._sockets:
            assert time.monotonic() < deadline, "the Socket Mode client never connected"
            time.sleep(0.02)

    def send_interactive(self, payload: dict[str, Any]) -> str:
        """Send one ``interactive`` envelope; its id."""
        assert self._sent < self.max_envelopes, "envelope budget spent"
        assert time.monotonic() - self._started < self.deadline_s, "deadline passed"
        self.wait_connected()
        self._sent += 1
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": "interactive",
            "payload": payload,
            "accepts_response_payload": False,
            "retry_attempt": 0,
            "retry_reason": "",
        }
        ws = self._sockets[-1]
        asyncio.run_coroutine_threadsafe(ws.send_str(json.dumps(envelope)), self._loop).result(5)
        return envelope_id

    def wait_ack(self, envelope_id: str, timeout_s: float = 10.0) -> None:
        with self._acked:
            done = self._acked.wait_for(lambda: envelope_id in self.acks, timeout_s)
        assert done, f"envelope {envelope_id} was never acknowledged"


def block_actions(
    user: str, action_id: str, value: str, channel: str, message_ts: str, action_ts: str
) -> dict[str, Any]:
    """An interaction payload as Slack sends it when a button is clicked."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T000"},
        "team": {"id": "T000", "domain": "gpuwatch-test"},
        "channel": {"id": channel, "name": "gpu-alerts"},
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "message": {"type": "message", "ts": message_ts},
        "trigger_id": "1.2.3",
        "response_url": "https://hooks.slack.invalid/actions/T000/1/abc",
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "gpuwatch_approval",
                "value": value,
                "action_ts": action_ts,
            }
        ],
    }


@pytest.fixture(name="socket_mode_server")
def socket_mode_server_fixture() -> Iterator[SocketModeServer]:
    with SocketModeServer() as server:
        yield server
