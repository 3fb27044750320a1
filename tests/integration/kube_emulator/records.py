"""What the emulator records and what tests script: requests, faults, eviction refusals."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tests.integration.kube_emulator.answers import Answer, reason_for, status_answer


@dataclass
class Request:
    """One request as the emulator saw it, recorded before it is answered."""

    method: str
    path: str
    query: Mapping[str, str]
    verb: str = ""
    """RBAC verb once routed: get, list, watch, create, update, patch, delete."""
    body: Any = None
    """The decoded JSON body (the text where it is not JSON; None when empty)."""
    content_type: str = ""
    group: str = ""
    plural: str = ""
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    status: int = 0
    """The HTTP status it was answered with (0 while it is being answered)."""


@dataclass
class Fault:
    path: str
    """An exact path, or a glob (``/api/v1/namespaces/*/pods/*/eviction``)."""
    status: int
    remaining: int
    retry_after_s: int | None = None
    methods: frozenset[str] | None = None
    """Only these HTTP methods; None: any."""
    message: str | None = None
    after_effect: bool = False
    """Apply the request, then answer with the fault (an answer lost on the way back)."""

    def matches(self, method: str, path: str) -> bool:
        if self.remaining <= 0 or (self.methods is not None and method not in self.methods):
            return False
        return fnmatch.fnmatchcase(path, self.path) if "*" in self.path else path == self.path

    def answer(self) -> Answer:
        if self.status == 429:
            retry = self.retry_after_s if self.retry_after_s is not None else 1
            return status_answer(
                429,
                "TooManyRequests",
                self.message or "Too many requests, please try again later.",
                {"retryAfterSeconds": retry},
                {"Retry-After": str(retry)},
            )
        headers = {"Retry-After": str(self.retry_after_s)} if self.retry_after_s else {}
        message = self.message or f"injected fault {self.status}"
        return status_answer(self.status, reason_for(self.status), message, None, headers)


@dataclass
class EvictionRefusal:
    remaining: int
    namespace: str | None
    pod: str | None

    def matches(self, pod: Mapping[str, Any]) -> bool:
        meta = pod["metadata"]
        return (
            self.remaining > 0
            and self.namespace in (None, meta.get("namespace"))
            and self.pod in (None, meta["name"])
        )


def decode_body(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
