"""HTTP answers, and the ``Status`` bodies kube-apiserver sends with every error.

Clients branch on ``code`` and ``reason`` (``NotFound``, ``Conflict``, ``AlreadyExists``,
``Invalid``, ``TooManyRequests``...) and people read ``message``, so each helper here
words its message the way the API server does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from tests.integration.kube_emulator.resources import ResourceType


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def status_answer(
    code: int,
    reason: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """A ``Status`` object, the body of every error the API server returns."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": dict(details or {}),
        "code": code,
    }
    return Answer(code, json.dumps(body).encode(), dict(headers or {}))


def success_answer(code: int = 200, details: Mapping[str, Any] | None = None) -> Answer:
    """``Status`` with ``status: Success`` (an eviction's 201, a delete's 200)."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "code": code,
    }
    if details:
        body["details"] = dict(details)
    return Answer(code, json.dumps(body).encode())


def object_answer(obj: Mapping[str, Any], code: int = 200) -> Answer:
    return Answer(code, json.dumps(obj).encode())


def reason_for(code: int) -> str:
    """The ``StatusReason`` the API server pairs with an HTTP code."""
    known = {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        405: "MethodNotAllowed",
        409: "Conflict",
        410: "Expired",
        415: "UnsupportedMediaType",
        422: "Invalid",
        429: "TooManyRequests",
        500: "InternalError",
        503: "ServiceUnavailable",
        504: "Timeout",
    }
    return known.get(code) or HTTPStatus(code).phrase.replace(" ", "")


def _details(rtype: ResourceType, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "group": rtype.group, "kind": rtype.plural, **extra}


def not_found_resource() -> Answer:
    return status_answer(404, "NotFound", "the server could not find the requested resource")


def not_found(rtype: ResourceType, name: str) -> Answer:
    return status_answer(
        404, "NotFound", f'{rtype.qualified} "{name}" not found', _details(rtype, name)
    )


def already_exists(rtype: ResourceType, name: str) -> Answer:
    return status_answer(
        409, "AlreadyExists", f'{rtype.qualified} "{name}" already exists', _details(rtype, name)
    )


def conflict(rtype: ResourceType, name: str, why: str | None = None) -> Answer:
    why = why or (
        "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    message = f'Operation cannot be fulfilled on {rtype.qualified} "{name}": {why}'
    return status_answer(409, "Conflict", message, _details(rtype, name))


def invalid(
    rtype: ResourceType, name: str, causes: Iterable[tuple[str, str, str]], kind: str = ""
) -> Answer:
    """422 with one cause per ``(field, cause reason, message)``, e.g.
    ``("spec.replicas", "FieldValueInvalid", "Invalid value: -1: must be ...")``."""
    causes = list(causes)
    summary = ", ".join(f"{f}: {m}" for f, _, m in causes)
    qualified = kind or rtype.qualified_kind
    return status_answer(
        422,
        "Invalid",
        f'{qualified} "{name}" is invalid: {summary}',
        {
            "name": name,
            "group": rtype.group,
            "kind": qualified.split(".")[0],
            "causes": [{"reason": r, "message": m, "field": f} for f, r, m in causes],
        },
    )


def bad_request(message: str) -> Answer:
    return status_answer(400, "BadRequest", message)


def not_implemented(what: str) -> Answer:
    """405 for what the emulator deliberately leaves out (watch, deletecollection)."""
    return status_answer(405, "MethodNotAllowed", f"the emulator does not implement {what}")
