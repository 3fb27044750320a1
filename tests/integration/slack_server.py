"""A Slack Web API on loopback that the real slack_sdk can talk to.

It speaks enough of Slack for gpuwatch: ``auth.test``, ``chat.postMessage`` (thread
replies included), ``chat.update``, the three steps of ``files_upload_v2``
(``files.getUploadURLExternal``, the upload URL it hands out,
``files.completeUploadExternal``) and one incoming webhook. It answers as Slack does:
HTTP 200 with ``{"ok": false, "error": ...}`` for a refusal (``not_authed``,
``invalid_auth``, ``channel_not_found``, ``message_not_found``...), 429 with
``Retry-After`` for a rate limit, plain-text bodies (``ok``, ``invalid_token``) from the
webhook. Bodies may be JSON or form-encoded (slack_sdk sends JSON for ``chat.*`` and a
form for ``files.*``).

Channels: a name (``#gpu-alerts`` or ``gpu-alerts``) gets a stable id (``C0001``) the
first time it is used; answers name the channel by id, and ``chat.update`` needs the id,
as on Slack. With ``channels=None`` any name written with ``#`` exists; otherwise only
the names given do. It is stricter than Slack in one place: a reply to a message that
does not exist answers ``thread_not_found``.

Tests script it (``fail_next``, ``rate_limit_next``, ``delay_next``, ``refuse_channel``,
a per-channel posting interval that it enforces with 429s) and read back what happened
(``messages``, ``replies``, ``webhook_messages``, ``files``, ``calls``). It bounds
itself: after ``max_requests`` requests or ``deadline_s`` seconds it answers 503 and
stops serving.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.integration.loopback import LoopbackHTTPServer, ServedDouble, Serving
from tests.integration.slack_server_interactive import InteractiveApi, InteractiveState

TOKEN = "xoxb-1234567890-0987654321-gpuwatchTestToken0001"
"""The bot token the server expects unless told otherwise."""
WEBHOOK_PATH = "/services/T000/B000/XXXX"
API_PREFIX = "/api/"
UPLOAD_PREFIX = "/upload/v1/"
TEAM_ID, BOT_USER_ID, BOT_ID = "T000", "U000", "B000"
WEBHOOK = "webhook"
"""The ``method`` of a request to the webhook (for faults and ``calls``)."""
UPLOAD = "upload"
"""The ``method`` of a request to an upload URL (for faults and ``calls``)."""


@dataclass
class Call:
    """One request as the server saw it, and what it answered."""

    method: str
    """The Web API method (``chat.postMessage``), or ``webhook``, or ``upload``."""
    params: dict[str, Any]
    """Query and body together, JSON values decoded (``blocks`` is a list)."""
    headers: dict[str, str]
    """Lower-case names."""
    status: int = 0
    error: str | None = None
    """The Slack error code answered, if any (``ratelimited``, ``invalid_auth``...)."""


@dataclass
class Message:
    channel: str
    """The channel's id."""
    ts: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    """The parent's ts, for a reply in a thread."""
    files: list[str] = field(default_factory=list)
    """Ids of the files shared with this message."""
    edits: int = 0
    """How many times ``chat.update`` changed it."""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "ts": self.ts,
            "text": self.text,
            "blocks": self.blocks,
        }
        if self.thread_ts is not None:
            out["thread_ts"] = self.thread_ts
        return out


@dataclass
class UploadedFile:
    id: str
    filename: str
    length: int
    """As announced to ``files.getUploadURLExternal``."""
    content: bytes | None = None
    """What was sent to the upload URL (None until then)."""
    title: str | None = None
    channels: list[str] = field(default_factory=list)
    """Ids of the channels it was shared to on completion."""
    completed: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.filename,
            "title": self.title or self.filename,
            "size": len(self.content or b""),
            "channels": self.channels,
            "user": BOT_USER_ID,
        }


@dataclass
class _Fault:
    status: int
    error: str
    remaining: int
    methods: frozenset[str] | None
    retry_after_s: float | None = None
    delay_s: float = 0.0

    def matches(self, method: str) -> bool:
        return self.remaining > 0 and (self.methods is None or method in self.methods)


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class SlackServer(InteractiveApi, ServedDouble):
    """The server. Use as a context manager, or ``start()``/``stop()``."""

    thread_name = "slack-server"

    def __init__(
        self,
        *,
        token: str | None = TOKEN,
        channels: Iterable[str] | None = None,
        min_interval_s: float = 0.0,
        max_requests: int = 2_000,
        deadline_s: float = 60.0,
    ) -> None:
        """``token``: the bot token every Web API call must carry (None: any, or none).
        ``channels``: the channel names that exist (None: any name written with ``#``).
        ``min_interval_s``: least time between two posts to one channel (the webhook
        counts as one channel); a post sooner answers 429 with ``Retry-After``."""
        self.token = token
        self.min_interval_s = min_interval_s
        self.max_requests = max_requests
        self.deadline_s = deadline_s
        self.calls: list[Call] = []
        self.files: dict[str, UploadedFile] = {}
        self.webhook_messages: list[dict[str, Any]] = []
        """The JSON bodies posted to the webhook, in order."""
        self.exhausted = False
        """True once the request budget or the deadline ran out (it then stopped)."""
        self._known = None if channels is None else {_bare(c) for c in channels}
        self._channel_ids: dict[str, str] = {}
        self._channel_refusals: dict[str, str] = {}
        self._messages: list[Message] = []
        self._faults: list[_Fault] = []
        self._last_post: dict[str, float] = {}
        self._last_ts_us = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._serving: Serving | None = None
        self.interactive = InteractiveState()

    # -- addresses -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "the Slack server is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def base_url(self) -> str:
        """For ``WebClient(base_url=...)``: ``http://127.0.0.1:PORT/api/``."""
        return self.url + API_PREFIX

    @property
    def webhook_url(self) -> str:
        return self.url + WEBHOOK_PATH

    # -- arranging, scripting ------------------------------------------------------------
    def channel_id(self, name: str) -> str:
        """The id of a channel, given its name (``#gpu-alerts``); it is created if it
        may exist. Raises KeyError for a channel that does not exist."""
        with self._lock:
            channel = self._resolve(name, create=True)
        if channel is None:
            raise KeyError(f"no channel {name!r}")
        return channel

    def refuse_channel(self, name: str, error: str = "not_in_channel") -> None:
        """Every post and update to this channel answers ``error`` from now on
        (``not_in_channel``, ``is_archived``...)."""
        channel = self.channel_id(name)
        with self._lock:
            self._channel_refusals[channel] = error

    def fail_next(
        self,
        status: int = 500,
        times: int = 1,
        *,
        error: str | None = None,
        method: str | Collection[str] | None = None,
        retry_after_s: float | None = None,
        delay_s: float = 0.0,
    ) -> None:
        """Answer the next ``times`` requests (to ``method``: a Web API method,
        ``webhook`` or ``upload``; None: any) with ``status`` and ``error`` (by default
        ``ratelimited`` for 429, ``internal_error`` otherwise) without acting on them.
        ``status=200`` with an ``error`` scripts a refusal: ``fail_next(200,
        error="missing_scope")``."""
        if error is None:
            error = "ratelimited" if status == 429 else "internal_error"
        methods = (
            None if method is None else frozenset([method] if isinstance(method, str) else method)
        )
        with self._lock:
            self._faults.append(_Fault(status, error, times, methods, retry_after_s, delay_s))

    def rate_limit_next(
        self, times: int = 1, retry_after_s: float = 1, *, method: str | None = None
    ) -> None:
        """The next ``times`` requests answer 429 with ``Retry-After: retry_after_s``."""
        self.fail_next(429, times, method=method, retry_after_s=retry_after_s)

    def clear_faults(self) -> None:
        """Forget every scripted fault: the outage is over."""
        with self._lock:
            self._faults.clear()

    def delay_next(self, delay_s: float, times: int = 1, *, method: str | None = None) -> None:
        """The next ``times`` requests are answered (normally) only after ``delay_s``."""
        with self._lock:
            methods = None if method is None else frozenset([method])
            self._faults.append(_Fault(0, "", times, methods, delay_s=delay_s))

    # -- reading back --------------------------------------------------------------------
    def messages(self, channel: str) -> list[Message]:
        """The messages posted to a channel (name or id), oldest first; thread replies
        are not among them (see ``replies``)."""
        with self._lock:
            channel_id = self._resolve(channel, create=False)
            return [m for m in self._messages if m.channel == channel_id and m.thread_ts is None]

    def replies(self, channel: str, ts: str) -> list[Message]:
        """The replies in the thread of message ``ts``, oldest first."""
        with self._lock:
            channel_id = self._resolve(channel, create=False)
            return [m for m in self._messages if m.channel == channel_id and m.thread_ts == ts]

    def calls_to(self, method: str | None = None, *, status: int | None = None) -> list[Call]:
        """Requests (to ``method``) (answered with ``status``)."""
        with self._lock:
            return [
                c for c in self.calls if method in (None, c.method) and status in (None, c.status)
            ]

    @property
    def requests(self) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
        """Every request as (method, params, headers), oldest first."""
        with self._lock:
            return [(c.method, c.params, c.headers) for c in self.calls]

    # -- lifecycle -----------------------------------------------------------------------
    def _new_server(self) -> LoopbackHTTPServer:
        return _Server(("127.0.0.1", 0), _Handler, self)

    def stop(self) -> None:
        self._stopping.set()
        super().stop()

    # -- answering -----------------------------------------------------------------------
    def handle(self, path: str, headers: dict[str, str], body: bytes) -> _Answer:
        parts = urlsplit(path)
        if parts.path == WEBHOOK_PATH:
            method = WEBHOOK
        elif parts.path.startswith(UPLOAD_PREFIX):
            method = UPLOAD
        elif parts.path.startswith(API_PREFIX):
            method = parts.path.removeprefix(API_PREFIX)
        else:
            method = parts.path
        params = self._params(method, parts.query, headers, body)
        call = Call(method, params if isinstance(params, dict) else {}, headers)
        with self._lock:
            self.calls.append(call)
            over = len(self.calls) > self.max_requests
            fault = None if over else next((f for f in self._faults if f.matches(method)), None)
            if fault is not None:
                fault.remaining -= 1
        if over:
            self._exhaust()
            answer = _Answer(503, b"slack server request budget exhausted; stopping", "text/plain")
        elif fault is not None and self._stopping.wait(fault.delay_s):
            answer = _Answer(503, b"stopping", "text/plain")
        elif fault is not None and fault.status:
            answer = self._fault_answer(method, fault)
        elif isinstance(params, str):
            answer = _refusal(params)
        else:
            answer = self._answer(method, parts.path, params, headers, body)
        call.status = answer.status
        call.error = _error_of(answer)
        return answer

    def _params(
        self, method: str, query: str, headers: dict[str, str], body: bytes
    ) -> dict[str, Any] | str:
        """Query and body as one dict, or the Slack error code for a body it cannot read."""
        params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
        if method == UPLOAD or not body:
            return params
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if content_type == "application/json":
                decoded = json.loads(body)
                if not isinstance(decoded, dict):
                    return "invalid_json"
                params.update(decoded)
            elif content_type == "application/x-www-form-urlencoded":
                params.update(parse_qsl(body.decode(), keep_blank_values=True))
            else:
                return "invalid_form_data"
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "invalid_json" if content_type == "application/json" else "invalid_form_data"
        if isinstance(params.get("blocks"), str):  # form-encoded: blocks come as JSON text
            try:
                params["blocks"] = json.loads(params["blocks"])
            except json.JSONDecodeError:
                params["blocks"] = None
        return params

    def _fault_answer(self, method: str, fault: _Fault) -> _Answer:
        headers: tuple[tuple[str, str], ...] = ()
        if fault.retry_after_s is not None:
            headers = (("Retry-After", f"{fault.retry_after_s:g}"),)
        if method == WEBHOOK:
            return _Answer(fault.status, fault.error.encode(), "text/plain", headers)
        body = json.dumps({"ok": False, "error": fault.error}).encode()
        return _Answer(fault.status, body, headers=headers)

    def _answer(
        self, method: str, path: str, params: dict[str, Any], headers: dict[str, str], body: bytes
    ) -> _Answer:
        if method == WEBHOOK:
            return self._webhook(params)
        if method == UPLOAD:
            return self._upload(path, body)
        if path.startswith("/services/"):
            return _Answer(404, b"no_service", "text/plain")
        if not path.startswith(API_PREFIX):
            return _Answer(404, b"not found", "text/plain")
        if method == "apps.connections.open":
            auth = headers.get("authorization", "").removeprefix("Bearer ")
            ok, fields = self.connections_open(auth or params.get("token"))
            return _ok(**fields) if ok else _refusal(fields["error"])
        refused = self._check_token(params, headers)
        if refused is not None:
            return _refusal(refused)
        more = self.interactive_methods().get(method)
        if more is not None:
            with self._lock:
                ok, fields = more(params)
            return _ok(**fields) if ok else _refusal(fields["error"])
        serve = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete_upload,
        }.get(method)
        if serve is None:
            return _refusal("unknown_method")
        with self._lock:
            return serve(params)

    def _check_token(self, params: dict[str, Any], headers: dict[str, str]) -> str | None:
        if self.token is None:
            return None
        auth = headers.get("authorization", "")
        given = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else params.get("token")
        if not given:
            return "not_authed"
        return None if given == self.token else "invalid_auth"

    # -- Web API methods (called with the lock held) --------------------------------------
    def _auth_test(self, params: dict[str, Any]) -> _Answer:
        return _ok(
            url="https://gpuwatch-test.slack.com/",
            team="gpuwatch-test",
            user="gpuwatch",
            team_id=TEAM_ID,
            user_id=BOT_USER_ID,
            bot_id=BOT_ID,
        )

    def _post_message(self, params: dict[str, Any]) -> _Answer:
        channel = self._resolve(str(params.get("channel", "")), create=True)
        if channel is None:
            return _refusal("channel_not_found")
        if channel in self._channel_refusals:
            return _refusal(self._channel_refusals[channel])
        text, blocks = params.get("text"), params.get("blocks")
        if blocks is not None and not _valid_blocks(blocks):
            return _refusal("invalid_blocks")
        if not text and not blocks:
            return _refusal("no_text")
        thread_ts = params.get("thread_ts") or None
        if thread_ts is not None and self._find(channel, str(thread_ts)) is None:
            return _refusal("thread_not_found")
        limited = self._rate_limit(channel)
        if limited is not None:
            return limited
        message = Message(channel, self._next_ts(), text or "", blocks or [], thread_ts)
        self._messages.append(message)
        return _ok(channel=channel, ts=message.ts, message=message.as_json())

    def _update(self, params: dict[str, Any]) -> _Answer:
        channel = str(params.get("channel", ""))
        if channel not in self._channel_ids.values():  # chat.update takes an id only
            return _refusal("channel_not_found")
        if channel in self._channel_refusals:
            return _refusal(self._channel_refusals[channel])
        message = self._any_message(channel, str(params.get("ts", "")))
        if message is None:
            return _refusal("message_not_found")
        text, blocks = params.get("text"), params.get("blocks")
        if blocks is not None and not _valid_blocks(blocks):
            return _refusal("invalid_blocks")
        if not text and not blocks:
            return _refusal("no_text")
        message.text = text or ""
        if blocks is not None:  # absent: the old blocks stay, as on Slack
            message.blocks = blocks
        message.edits += 1
        return _ok(channel=channel, ts=message.ts, text=message.text, message=message.as_json())

    def _get_upload_url(self, params: dict[str, Any]) -> _Answer:
        filename, length = params.get("filename"), params.get("length")
        if not filename or length is None or not str(length).isdigit():
            return _refusal("invalid_arguments")
        file_id = f"F{len(self.files) + 1:04d}"
        self.files[file_id] = UploadedFile(file_id, str(filename), int(length))
        return _ok(upload_url=f"{self.url}{UPLOAD_PREFIX}{file_id}", file_id=file_id)

    def _complete_upload(self, params: dict[str, Any]) -> _Answer:
        try:
            wanted = json.loads(params.get("files", ""))
        except (TypeError, json.JSONDecodeError):
            return _refusal("invalid_arguments")
        if not isinstance(wanted, list) or not wanted:
            return _refusal("invalid_arguments")
        files: list[UploadedFile] = []
        for item in wanted:
            file = self.files.get(str(item.get("id"))) if isinstance(item, dict) else None
            if file is None or file.content is None:
                return _refusal("file_not_found")
            file.title = item.get("title") or file.filename
            files.append(file)
        names = [params["channel_id"]] if params.get("channel_id") else []
        names += [c for c in str(params.get("channels", "")).split(",") if c]
        channels = [self._resolve(name, create=True) for name in names]
        if None in channels:
            return _refusal("channel_not_found")
        thread_ts = params.get("thread_ts") or None
        for channel in channels:
            assert channel is not None
            if thread_ts is not None and self._find(channel, str(thread_ts)) is None:
                return _refusal("thread_not_found")
            message = Message(
                channel,
                self._next_ts(),
                params.get("initial_comment") or "",
                thread_ts=thread_ts,
                files=[f.id for f in files],
            )
            self._messages.append(message)
        for file in files:
            file.completed = True
            file.channels = [c for c in channels if c is not None]
        return _ok(files=[f.as_json() for f in files])

    # -- other endpoints -----------------------------------------------------------------
    def _upload(self, path: str, body: bytes) -> _Answer:
        with self._lock:
            file = self.files.get(path.removeprefix(UPLOAD_PREFIX))
            if file is None:
                return _Answer(404, b"file not found", "text/plain")
            if len(body) != file.length:
                return _Answer(400, b"length mismatch", "text/plain")
            file.content = body
        return _Answer(200, f"OK - {len(body)}".encode(), "text/plain")

    def _webhook(self, params: dict[str, Any]) -> _Answer:
        if not params.get("text") and not params.get("blocks"):
            return _Answer(400, b"no_text", "text/plain")
        with self._lock:
            limited = self._rate_limit(WEBHOOK)
            if limited is not None:
                return _Answer(429, b"rate_limited", "text/plain", limited.headers)
            self.webhook_messages.append(params)
        return _Answer(200, b"ok", "text/plain")

    # -- helpers (lock held) -------------------------------------------------------------
    def _resolve(self, name: str, *, create: bool) -> str | None:
        """A channel's id from its name or id; None when it does not exist."""
        if name in self._channel_ids.values():
            return name
        bare = _bare(name)
        if bare in self._channel_ids:
            return self._channel_ids[bare]
        exists = name.startswith("#") if self._known is None else bare in self._known
        if not exists or not create or not bare:
            return None
        self._channel_ids[bare] = f"C{len(self._channel_ids) + 1:04d}"
        return self._channel_ids[bare]

    def _find(self, channel: str, ts: str) -> Message | None:
        return next(
            (m for m in self._messages if m.channel == channel and m.ts == ts and not m.thread_ts),
            None,
        )

    def _any_message(self, channel: str, ts: str) -> Message | None:
        """A message or a reply in a thread: either may be updated or reacted to."""
        return next((m for m in self._messages if m.channel == channel and m.ts == ts), None)

    def _rate_limit(self, channel: str) -> _Answer | None:
        """429 for a post sooner than ``min_interval_s`` after the last to ``channel``."""
        now = time.monotonic()
        last = self._last_post.get(channel)
        if last is not None and now - last < self.min_interval_s:
            retry_after = max(1, math.ceil(self.min_interval_s - (now - last)))
            body = json.dumps({"ok": False, "error": "ratelimited"}).encode()
            return _Answer(429, body, headers=(("Retry-After", str(retry_after)),))
        self._last_post[channel] = now
        return None

    def _next_ts(self) -> str:
        """Slack's message ids: seconds.microseconds, unique and increasing."""
        self._last_ts_us = max(time.time_ns() // 1000, self._last_ts_us + 1)
        return f"{self._last_ts_us // 1_000_000}.{self._last_ts_us % 1_000_000:06d}"


def _bare(name: str) -> str:
    return name.removeprefix("#")


def _valid_blocks(blocks: object) -> bool:
    return isinstance(blocks, list) and all(
        isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks
    )


def _ok(**fields: Any) -> _Answer:
    return _Answer(200, json.dumps({"ok": True, **fields}).encode())


def _refusal(error: str) -> _Answer:
    return _Answer(200, json.dumps({"ok": False, "error": error}).encode())


def _error_of(answer: _Answer) -> str | None:
    if answer.content_type.startswith("text/plain"):
        text = answer.body.decode(errors="replace")
        return None if answer.status == 200 else text
    try:
        decoded = json.loads(answer.body)
    except json.JSONDecodeError:
        return None
    return decoded.get("error") if isinstance(decoded, dict) else None


# --- HTTP plumbing ------------------------------------------------------------------------


class _Server(LoopbackHTTPServer):
    def __init__(self, address: tuple[str, int], handler: Any, slack: SlackServer) -> None:
        super().__init__(address, handler)
        self.slack = slack


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.server.slack.handle(self.path, headers, body)
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the server records requests itself


@pytest.fixture(name="slack_server")
def slack_server_fixture() -> Iterator[SlackServer]:
    """A started ``SlackServer`` with the defaults (token ``TOKEN``, any ``#`` channel,
    no posting interval); tests change its attributes or script it as they need.

    Import it as ``slack_server_fixture``: the fixture is named ``slack_server``, and a
    test's parameter of the same name as an imported function would shadow it."""
    with SlackServer() as server:
        yield server
