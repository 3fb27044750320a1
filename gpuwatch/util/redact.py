"""The one place that takes secrets out of text before it leaves the process.

Two kinds of redaction, applied together by ``redact``:

- by shape, needing no knowledge of the secret: the password of a URL's user info
  (``http://user:***@host``), the value of a query parameter whose name says it is a
  secret (``?token=***``), and a bearer token (``Bearer ***``);
- by value: every secret gpuwatch has read (a token file's content, a password from an
  environment variable, a header's value, a webhook URL) is registered here when it is
  read, and every occurrence of it, anywhere in a text, is replaced. A registered secret
  is also searched for as it looks percent-encoded, JSON-escaped and HTML-escaped, the
  forms in which URLs, the cycle JSON and the report page would carry it.

Secrets are registered for the life of the process: a rotated token's old value stays
masked. An empty secret is never registered (it would mask everything), and neither is
one shorter than ``MIN_SECRET_CHARS``, which cannot be searched for without mangling
ordinary text; such a secret is still masked where its shape gives it away.

The boundaries that call this: the log filter and the standard streams
(``gpuwatch.util.redact_output``), the cycle JSON, the state, the report page, and the
errors the adapters build from their clients' exceptions.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import re
import threading
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

MASK = "***"
MIN_SECRET_CHARS = 4
"""Shorter values are not searched for: masking every ``ab`` would garble any output."""

T = TypeVar("T")

_USERINFO = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:\[\]]*):(?P<password>[^\s/?#]*)@"
)
"""``scheme://user:password@``: everything up to the last ``@`` of the authority is the
password, as ``urllib.parse`` reads it (people write ``@`` in passwords unencoded)."""
_ANY_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#]*@")
_SECRET_QUERY = re.compile(
    r"(?P<head>[?&;](?:[^=&#\s]*(?:secret|token|passw|pwd|signature|credential|api[_-]?key)"
    r"[^=&#\s]*|sig|key|auth)=)[^&#\s]+",
    re.IGNORECASE,
)
"""A query parameter whose name says it holds a secret (pyarrow's ``secret_key``, a
presigned URL's ``X-Amz-Signature``, ``?token=``)."""
_BEARER = re.compile(r"(?P<head>\bBearer\s+)[A-Za-z0-9._~+/=-]{8,}")


def redact_url(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***`` (the user name
    kept) and secret-named query values masked; a URL without them comes back as it is.
    Textual, so safe for malformed URLs and for IPv6 hosts."""
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", url, count=1)
    return _SECRET_QUERY.sub(lambda m: f"{m['head']}{MASK}", text)


def without_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` cut out (a bare ``host`` gets ``http://``)."""
    return _ANY_USERINFO.sub(r"\g<head>", url if "://" in url else f"http://{url}", count=1)


def redact_webhook(url: str) -> str:
    """A webhook URL as it may be shown: scheme and host, then ``/***``. Its path (and
    query) is the credential: ``https://hooks.slack.com/services/T../B../XXXX`` is
    shown as ``https://hooks.slack.com/***``."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return MASK
    if not parts.scheme or not host:
        return MASK
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}/{MASK}"


class SecretRegistry:
    """The secrets read so far, each with what it is replaced by. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replacements: dict[str, str] = {}
        self._matcher: tuple[re.Pattern[str] | None, dict[str, str]] = (None, {})
        """Read without the lock: replaced whole, never changed in place."""

    def register(self, secret: str | None, replacement: str = MASK) -> None:
        """Mask ``secret`` (and its encoded forms) from now on. Empty, blank or shorter
        than ``MIN_SECRET_CHARS``: ignored."""
        if secret is None or len(secret.strip()) < MIN_SECRET_CHARS:
            return
        with self._lock:
            new = {f: replacement for f in _forms(secret) if f not in self._replacements}
            if new:
                self._replacements.update(new)
                self._matcher = _matcher(self._replacements)

    def register_url(self, url: str | None) -> None:
        """Mask the password in ``url``'s user info wherever it shows, in the URL or not,
        and in the basic-auth header a client makes of it."""
        match = _USERINFO.search(url or "")
        if match:
            self.register(match["password"])
            user = unquote(match["head"].rpartition("/")[2])
            self.register_basic_auth(user, unquote(match["password"]))

    def register_basic_auth(self, user: str, password: str) -> None:
        """Mask ``password``, and the ``Authorization: Basic`` value it makes with ``user``."""
        if len(password.strip()) < MIN_SECRET_CHARS:
            return
        self.register(password)
        self.register(base64.b64encode(f"{user}:{password}".encode()).decode("ascii"))

    def register_webhook(self, url: str | None) -> None:
        """Mask a webhook URL whole, as ``redact_webhook`` shows it, and its path and
        query wherever they show alone (HTTP libraries log the path without the host)."""
        if not url or not url.strip():
            return
        url = url.strip()
        self.register(url, redact_webhook(url))
        try:
            parts = urlsplit(url)
        except ValueError:
            return
        self.register_url(url)
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        for part in (tail, parts.path):
            if part.strip("/"):
                self.register(part, f"/{MASK}")
        self.register(parts.query)

    def clear(self) -> None:
        """Forget every secret (for tests)."""
        with self._lock:
            self._replacements.clear()
            self._matcher = (None, {})

    def __contains__(self, secret: object) -> bool:
        with self._lock:
            return secret in self._replacements

    def redact(self, text: str) -> str:
        """``text`` with every registered secret and every secret-shaped part masked."""
        if not text:
            return text
        pattern, replacements = self._matcher
        if pattern is not None:
            text = pattern.sub(lambda m: replacements[m[0]], text)
        if "://" in text:
            text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
        if "=" in text:
            text = _SECRET_QUERY.sub(lambda m: f"{m['head']}{MASK}", text)
        if " " in text:
            text = _BEARER.sub(lambda m: f"{m['head']}{MASK}", text)
        return text


def _matcher(replacements: dict[str, str]) -> tuple[re.Pattern[str], dict[str, str]]:
    """One pattern for every registered form, longest first (a secret that contains
    another is replaced whole), and a copy of what each is replaced by."""
    ordered = sorted(replacements, key=len, reverse=True)
    return re.compile("|".join(re.escape(form) for form in ordered)), dict(replacements)


def _forms(secret: str) -> list[str]:
    """The ways a secret is written where gpuwatch writes it: as it is, stripped,
    percent-encoded (URLs), JSON-escaped (the cycle JSON), HTML-escaped (the report)."""
    forms = [secret, secret.strip()]
    for form in list(forms):
        forms += [quote(form, safe=""), json.dumps(form)[1:-1], html.escape(form)]
    return [form for form in dict.fromkeys(forms) if len(form) >= MIN_SECRET_CHARS]


REGISTRY = SecretRegistry()
"""The process's secrets: what ``register_secret`` adds and ``redact`` masks."""


def register_secret(secret: str | None, replacement: str = MASK) -> None:
    """Mask ``secret`` in every text gpuwatch lets out from now on."""
    REGISTRY.register(secret, replacement)


def register_url(url: str | None) -> None:
    """Mask the password of ``url``'s user info from now on, wherever it shows."""
    REGISTRY.register_url(url)


def register_basic_auth(user: str, password: str) -> None:
    """Mask a basic-auth password and the header value it makes, from now on."""
    REGISTRY.register_basic_auth(user, password)


def register_webhook(url: str | None) -> None:
    """Mask the webhook URL ``url`` (its path is its credential) from now on."""
    REGISTRY.register_webhook(url)


def redact(text: str) -> str:
    """``text`` as it may leave the process: no registered secret, no secret-shaped part."""
    return REGISTRY.redact(text)


def redact_tree(value: T) -> T:
    """``value`` with every string in it redacted: strings, lists, tuples, dicts (keys
    and values) and dataclass instances, rebuilt only where something changed (so an
    unchanged tree is the same object)."""
    return _redact_any(value)  # type: ignore[no-any-return]


_SCALARS = (int, float, bool, type(None))


def _redact_any(value: Any) -> Any:
    if type(value) in _SCALARS:
        return value
    if isinstance(value, str):
        clean = redact(value)
        return value if clean == value else clean  # a StrEnum stays itself
    if isinstance(value, list | tuple):
        items = [_redact_any(item) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return type(value)(items) if not hasattr(value, "_fields") else type(value)(*items)
    if isinstance(value, Mapping):
        pairs = [(_redact_any(k), _redact_any(v)) for k, v in value.items()]
        if all(nk is k and nv is v for (nk, nv), (k, v) in zip(pairs, value.items(), strict=True)):
            return value
        return dict(pairs)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changed = {}
        for field in dataclasses.fields(value):
            if not field.init:
                continue
            old = getattr(value, field.name)
            new = _redact_any(old)
            if new is not old:
                changed[field.name] = new
        return dataclasses.replace(value, **changed) if changed else value
    return value
