"""Reading fields of untrusted Kubernetes JSON, and the metadata every object shares.

The objects come from an API server or from a file someone wrote, as plain dicts (no
client model such as ``V1Pod`` crosses the seam), so nothing about their types is taken
on trust. Absent and ``null`` fields read as empty, because the API omits what is empty;
a field of the wrong type raises ``SourceBadResponse`` naming the object and the field
(``pod llm/train-0: metadata.labels['team']: expected a string``), because that is what
the person reading the error must go and fix.

Also here, as every kind has them: an object's identity (namespace, name), its
timestamps (RFC 3339), and its controlling owner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from gpuwatch.model.cluster import OwnerRef
from gpuwatch.model.errors import SourceBadResponse


def read_mapping(value: object, where: str) -> Mapping[str, Any]:
    """A JSON object; ``{}`` when absent."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SourceBadResponse(f"{where}: expected an object, got {type(value).__name__}")
    return value


def read_sequence(value: object, where: str) -> Sequence[Any]:
    """A JSON list; ``()`` when absent."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise SourceBadResponse(f"{where}: expected a list, got {type(value).__name__}")
    return value


def read_string_map(value: object, where: str) -> dict[str, str]:
    """A JSON object of strings (labels, annotations, a node selector); ``{}`` when absent."""
    out: dict[str, str] = {}
    for key, item in read_mapping(value, where).items():
        if not isinstance(item, str):
            raise SourceBadResponse(
                f"{where}[{key!r}]: expected a string, got {type(item).__name__}"
            )
        out[key] = item
    return out


def read_string(value: object, where: str) -> str:
    """A JSON string; ``""`` when absent."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SourceBadResponse(f"{where}: expected a string, got {type(value).__name__}")
    return value


def parse_time(value: object, where: str) -> datetime | None:
    """An RFC 3339 timestamp (``2026-11-24T02:00:00Z``) as an aware datetime; None if absent."""
    text = read_string(value, where)
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise SourceBadResponse(
            f"{where}: malformed timestamp {text!r}; expected RFC 3339 such as 2026-11-24T02:00:00Z"
        ) from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC, whole seconds as Kubernetes writes them (fractions kept if any)."""
    utc = value.astimezone(UTC)
    spec = "seconds" if utc.microsecond == 0 else "microseconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def object_identity(obj: Mapping[str, Any], what: str, namespaced: bool) -> tuple[str, str, str]:
    """(namespace, name, description) of an object; raises when it has no name."""
    meta = read_mapping(obj.get("metadata"), f"{what}: metadata")
    name = read_string(meta.get("name"), f"{what}: metadata.name")
    if not name:
        raise SourceBadResponse(f"{what} without metadata.name")
    # An object of a namespaced kind that omits its namespace lives in ``default``, as
    # ``kubectl apply`` would place it.
    namespace = read_string(meta.get("namespace"), f"{what} {name}: metadata.namespace")
    if namespaced:
        namespace = namespace or "default"
        return namespace, name, f"{what} {namespace}/{name}"
    return namespace, name, f"{what} {name}"


def controlling_owner(meta: Mapping[str, Any], where: str) -> OwnerRef | None:
    """The owner reference with ``controller: true``; None for a bare object.

    Other owner references (garbage-collection parents without control) do not make a
    workload: a pod belongs to the one controller that manages it.
    """
    for i, ref in enumerate(
        read_sequence(meta.get("ownerReferences"), f"{where}: ownerReferences")
    ):
        at = f"{where}: ownerReferences[{i}]"
        ref_map = read_mapping(ref, at)
        if ref_map.get("controller") is True:
            kind = read_string(ref_map.get("kind"), f"{at}.kind")
            name = read_string(ref_map.get("name"), f"{at}.name")
            if not kind or not name:
                raise SourceBadResponse(f"{at}: a controller reference needs kind and name")
            return OwnerRef(kind, name)
    return None
