"""State in a ConfigMap, so that a CronJob, which has no disk between runs, has a memory.

A gpuwatch CronJob starts every 5 minutes in a fresh pod: which findings fire since
when, the Slack message of each alert group and the messages not yet delivered must
outlive it, and the cluster is the one place every run can reach. A ConfigMap in
gpuwatch's own namespace is the smallest thing that holds them (no volume, no database).

How it is written, and why:

- **one writer wins, never silently**: ``load()`` remembers the ``resourceVersion`` it
  read and ``save()`` replaces the ConfigMap with it. When another instance (a manual
  ``gpuwatch once`` beside the CronJob, a run that overlapped the next) wrote in between,
  the API server answers 409 Conflict and ``save()`` raises ``StateError`` instead of
  overwriting that instance's state. Likewise a ConfigMap this instance never read
  (``load()`` failed or was not called) is never overwritten: it is only ever created;
- **compact when small, compressed when large**: the state is JSON under
  ``data["state.json"]``, readable with ``kubectl get configmap -o yaml``; from 256 KiB
  of JSON on it is gzipped into ``binaryData["state.json.gz"]`` (and the other key
  dropped). A ConfigMap holds at most 1 MiB (data and binaryData together); a state
  that would exceed 90 % of that even compressed is refused with the sizes, rather than
  answered 422 by the API server, or worse, grown until etcd refuses it;
- **unreadable state is kept**: content that cannot be parsed is copied aside to a
  ConfigMap ``<name>-corrupt-<UTC stamp>`` and ``load()`` raises ``StateError`` (the
  cycle then starts afresh and records a note). If the copy cannot be made, ``save()``
  refuses to overwrite the original, so that nothing is lost without a person deciding;
- requests, retries (429, 5xx, connection failures) and the wording of refusals (a 403
  names the Role rule to grant) are the Kubernetes layer's (``gpuwatch.kube``); every
  failure reaches the cycle as a ``StateError``. A write whose answer was lost and
  whose retry then meets a 409 is read back: when the ConfigMap holds exactly what was
  written, the write landed and all is well.

The ConfigMap is gpuwatch's own: ``save()`` writes its data whole (keys other than the
two above are not kept), keeping only the labels and annotations found on it.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from gpuwatch.kube.api import Json, KubeApi
from gpuwatch.kube.errors import KubeConflict, KubeError, KubeNotFound
from gpuwatch.kube.resources import CONFIGMAPS
from gpuwatch.model.errors import StateError
from gpuwatch.model.state import CycleState
from gpuwatch.util.redact import redact

log = logging.getLogger(__name__)

STATE_KEY = "state.json"
"""``data`` key of the state as plain JSON."""
STATE_GZ_KEY = "state.json.gz"
"""``binaryData`` key of the state as gzipped JSON."""
INLINE_MAX_BYTES = 256 * 1024
"""JSON below this size is stored as text; from it on, gzipped."""
CONFIGMAP_MAX_BYTES = 1024 * 1024
"""What the API server accepts in one ConfigMap, data and binaryData together (422)."""
STORED_MAX_BYTES = int(CONFIGMAP_MAX_BYTES * 0.9)
"""What gpuwatch writes at most: 10 % short of the limit, so that a state growing
between two cycles is refused by gpuwatch with its sizes, not by the API server."""
JSON_MAX_BYTES = 64 * 1024 * 1024
"""Uncompressed JSON beyond this is refused on save and treated as unreadable on load:
a small ``binaryData`` that inflates without end (corrupt, or planted) must not exhaust
the pod's memory."""

LABELS = {"app.kubernetes.io/name": "gpuwatch", "app.kubernetes.io/component": "state"}
COPIED_FROM_ANNOTATION = "gpuwatch.io/copied-from"
UNREADABLE_ANNOTATION = "gpuwatch.io/unreadable-because"
_MAX_NAME = 253  # a ConfigMap name is a DNS subdomain

# The verbs this module needs, in the state's namespace (a Role, not a ClusterRole).
# get and update may be narrowed with resourceNames to the state ConfigMap; create
# cannot be (the name is not known to RBAC at create time). create is needed for the
# first save when the ConfigMap is not deployed beforehand, and for corrupt copies.
RBAC_RULES: tuple[dict[str, Any], ...] = (
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "update", "create"]},
)


@dataclass(frozen=True)
class _Seen:
    """What ``load()`` found: the version to replace (None: absent), and the metadata
    people or tools put on it, which ``save()`` keeps."""

    resource_version: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, found: Mapping[str, Any]) -> _Seen:
        meta = found.get("metadata") or {}
        return cls(
            meta.get("resourceVersion"),
            dict(meta.get("labels") or {}),
            dict(meta.get("annotations") or {}),
        )


class ConfigMapState:
    """``StateStore`` in the ConfigMap ``namespace/name`` (see the module docstring).

    No I/O at construction; ``api`` carries the retry policy (the wiring gives the state
    a shorter one than the cluster source: a cycle should not wait minutes to save)."""

    name = "configmap"

    def __init__(self, api: KubeApi, namespace: str, name: str) -> None:
        self.api = api
        self.namespace = namespace
        self.config_map = name
        self._seen: _Seen | None = None
        """None: not read (or the read failed): the ConfigMap may only be created."""
        self._keep: str | None = None
        """Set when unreadable content could not be copied aside: why save() refuses."""

    @property
    def where(self) -> str:
        return f"configmap {self.namespace}/{self.config_map}"

    # -- StateStore ----------------------------------------------------------------------
    def load(self) -> CycleState:
        """The saved state; an empty one when the ConfigMap or its state key is absent.

        Raises StateError when the ConfigMap cannot be read, or holds unreadable state
        (then copied aside; see the module docstring)."""
        self._seen, self._keep = None, None
        try:
            found = self.api.get(CONFIGMAPS, self.config_map, self.namespace)
        except KubeNotFound:
            self._seen = _Seen(None)
            return CycleState()
        except KubeError as exc:
            raise self._failure(exc) from exc
        self._seen = _Seen.of(found)
        try:
            return _decode(found.get("data") or {}, found.get("binaryData") or {})
        except (ValueError, TypeError) as exc:
            raise self._unreadable(found, str(exc)) from exc

    def save(self, state: CycleState) -> None:
        """Write ``state`` over what ``load()`` read, or create the ConfigMap.

        Raises StateError, leaving the ConfigMap as it was, when another writer changed
        it since it was read, when the state is too large for a ConfigMap, or when the
        API server refuses or keeps failing."""
        if self._keep is not None:
            raise StateError(self._keep)
        content = self._encode(state)
        seen = self._seen
        if seen is not None and seen.resource_version is not None:
            stored = self._replace(content, seen)
        else:
            why = (
                "was created by another writer since it was read (it did not exist then)"
                if seen is not None
                else "exists, but this instance has not read it (load() failed or was not called)"
            )
            stored = self._create(content, seen, why)
        self._seen = _Seen.of(stored)

    # -- writing -------------------------------------------------------------------------
    def _encode(self, state: CycleState) -> dict[str, Any]:
        """``{"data": ...}`` or ``{"binaryData": ...}`` for ``state``; StateError when it
        cannot fit in a ConfigMap."""
        document = state.to_dict()
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
        raw = redact(text).encode("utf-8")  # an undelivered message's error, say
        if len(raw) < INLINE_MAX_BYTES:
            return {"data": {STATE_KEY: raw.decode("utf-8")}}
        if len(raw) > JSON_MAX_BYTES:
            limit = f"gpuwatch reads back at most {_size(JSON_MAX_BYTES)} of JSON"
            raise self._too_big(document, f"{_size(len(raw))} of JSON", limit)
        packed = gzip.compress(raw, compresslevel=6, mtime=0)
        if len(packed) > STORED_MAX_BYTES:
            sizes = f"{_size(len(raw))} of JSON, {_size(len(packed))} gzipped"
            limit = (
                f"a ConfigMap holds at most {_size(CONFIGMAP_MAX_BYTES)} and gpuwatch "
                f"writes at most {_size(STORED_MAX_BYTES)}"
            )
            raise self._too_big(document, sizes, limit)
        log.debug("%s: %s of JSON gzipped to %s", self.where, _size(len(raw)), _size(len(packed)))
        return {"binaryData": {STATE_GZ_KEY: base64.b64encode(packed).decode("ascii")}}

    def _too_big(self, document: Mapping[str, Any], sizes: str, limit: str) -> StateError:
        return StateError(
            f"{self.where}: state not saved: it is {sizes}; {limit} "
            f"(largest parts: {_largest_parts(document)}). The ConfigMap is left as it "
            "was; keep state in a file on a volume instead, or reduce what it remembers "
            "(fewer findings or alert groups)"
        )

    def _body(self, content: Mapping[str, Any], seen: _Seen | None, *, version: bool) -> Json:
        meta: dict[str, Any] = {
            "name": self.config_map,
            "namespace": self.namespace,
            "labels": {**(seen.labels if seen else {}), **LABELS},
        }
        if seen is not None and seen.annotations:
            meta["annotations"] = dict(seen.annotations)
        if version and seen is not None and seen.resource_version is not None:
            meta["resourceVersion"] = seen.resource_version
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, **content}

    def _replace(self, content: Mapping[str, Any], seen: _Seen) -> Json:
        body = self._body(content, seen, version=True)
        try:
            return self.api.replace(CONFIGMAPS, self.config_map, body, self.namespace)
        except KubeNotFound:
            why = "was deleted and created again by another writer since it was read"
            return self._create(content, seen, why)
        except KubeConflict as exc:
            landed = self._landed(content) if exc.retried else None
            if landed is not None:
                return landed
            raise StateError(
                f"{self.where} was changed by another writer since it was read "
                f"(resourceVersion {seen.resource_version} is stale); not overwriting "
                "it. Is another gpuwatch instance running (a manual `gpuwatch once` "
                "beside the CronJob, an overlapping run)? This cycle's state is not saved"
            ) from exc
        except KubeError as exc:
            raise self._failure(exc) from exc

    def _create(self, content: Mapping[str, Any], seen: _Seen | None, why: str) -> Json:
        body = self._body(content, seen, version=False)
        try:
            return self.api.create(CONFIGMAPS, body, self.namespace)
        except KubeConflict as exc:
            landed = self._landed(content) if exc.retried else None
            if landed is not None:
                return landed
            raise StateError(
                f"{self.where} {why}; not overwriting state this instance has not "
                "read. This cycle's state is not saved; the next cycle reads it first"
            ) from exc
        except KubeError as exc:
            raise self._failure(exc) from exc

    def _landed(self, content: Mapping[str, Any]) -> Json | None:
        """After a retried write met 409: the ConfigMap if it holds exactly ``content``
        (the first attempt landed, its answer was lost), else None."""
        try:
            found = self.api.get(CONFIGMAPS, self.config_map, self.namespace)
        except KubeError:
            return None
        data, binary = content.get("data") or {}, content.get("binaryData") or {}
        if (found.get("data") or {}) == data and (found.get("binaryData") or {}) == binary:
            log.info("%s: a retried write had landed; its answer was lost", self.where)
            return found
        return None

    # -- unreadable state ----------------------------------------------------------------
    def _unreadable(self, found: Mapping[str, Any], reason: str) -> StateError:
        """Copy ``found`` aside and word the error; when the copy fails, make ``save()``
        refuse to overwrite it."""
        aside, trouble = self._copy_aside(found, reason)
        if aside is not None:
            log.warning("%s: unreadable state copied to configmap %s", self.where, aside)
            return StateError(
                f"{self.where}: unreadable state ({reason}); copied to configmap "
                f"{self.namespace}/{aside}, starting afresh",
                set_aside=True,
            )
        self._keep = (
            f"{self.where}: not overwriting unreadable state that could not be copied "
            f"aside ({trouble}); fix it, or delete it to start afresh: kubectl -n "
            f"{self.namespace} delete configmap {self.config_map}"
        )
        return StateError(
            f"{self.where}: unreadable state ({reason}); it could not be copied aside "
            f"({trouble}), so it is left in place and will not be overwritten: fix it, or "
            f"delete it to start afresh (kubectl -n {self.namespace} delete configmap "
            f"{self.config_map})"
        )

    def _copy_aside(self, found: Mapping[str, Any], reason: str) -> tuple[str | None, str]:
        """(name of the copy, "") or (None, why it could not be made)."""
        stamp = self.api.now().astimezone(UTC).strftime("%Y%m%d-%H%M%S")
        suffix = f"-corrupt-{stamp}"  # lowercase: a ConfigMap name is an RFC 1123 subdomain
        aside = self.config_map[: _MAX_NAME - len(suffix)].rstrip("-.") + suffix
        body: Json = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": aside,
                "namespace": self.namespace,
                "labels": dict(LABELS),
                "annotations": {
                    COPIED_FROM_ANNOTATION: f"{self.namespace}/{self.config_map}",
                    UNREADABLE_ANNOTATION: reason[:1000],
                },
            },
        }
        for key in ("data", "binaryData"):
            if found.get(key):
                body[key] = dict(found[key])
        try:
            self.api.create(CONFIGMAPS, body, self.namespace)
        except KubeError as exc:
            return None, str(exc)
        return aside, ""

    def _failure(self, exc: KubeError) -> StateError:
        """The layer's words, and what the state store needs in all."""
        if exc.status == 403:
            return StateError(f"{exc} (the state store needs get, update and create)")
        return StateError(str(exc))


# -- the stored form -----------------------------------------------------------------------
def _decode(data: Mapping[str, str], binary: Mapping[str, str]) -> CycleState:
    """The state in a ConfigMap's data/binaryData; ValueError (or TypeError) naming the
    key and what is wrong when it cannot be read."""
    if STATE_KEY in data and STATE_GZ_KEY in binary:
        raise ValueError(
            f"both data[{STATE_KEY}] and binaryData[{STATE_GZ_KEY}] are set; expected one"
        )
    if STATE_GZ_KEY in binary:
        where = f"binaryData[{STATE_GZ_KEY}]"
        try:
            packed = base64.b64decode(binary[STATE_GZ_KEY], validate=True)
            text = _gunzip(packed, JSON_MAX_BYTES).decode("utf-8")
        except ValueError as exc:  # bad base64 (binascii.Error), gzip or UTF-8
            raise ValueError(f"{where}: {exc}") from exc
    elif STATE_KEY in data:
        where, text = f"data[{STATE_KEY}]", data[STATE_KEY]
    else:
        return CycleState()  # an empty ConfigMap, deployed beforehand: nothing saved yet
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where}: not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(document).__name__}")
    try:
        return CycleState.from_dict(document)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _gunzip(packed: bytes, limit: int) -> bytes:
    """Inflate one gzip member, refusing more than ``limit`` bytes of output."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        raw = inflater.decompress(packed, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"not gzip data: {exc}") from exc
    if len(raw) > limit:
        raise ValueError(f"inflates to more than {_size(limit)}")
    if not inflater.eof:
        raise ValueError("truncated gzip data")
    return raw


def _largest_parts(document: Mapping[str, Any]) -> str:
    """``findings_since 2.9 MiB, alert_groups 310 KiB``: the top-level keys that weigh
    (a tenth of the whole or more, three at most)."""
    sizes = sorted(
        ((len(json.dumps(value, separators=(",", ":"))), key) for key, value in document.items()),
        reverse=True,
    )
    total = sum(size for size, _ in sizes)
    return ", ".join(f"{key} {_size(size)}" for size, key in sizes[:3] if size * 10 >= total)


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    if count < 1024 * 1024:
        return f"{count / 1024:.0f} KiB"
    return f"{count / (1024 * 1024):.1f} MiB"
