"""Everything gpuwatch reads from what tenants write on their objects, parsed in one place.

Annotations and labels are free text that any namespace owner can set, so no value may
stop a cycle or be used on a guess: each field here knows what it expects, ``get``
answers the typed value or None (absent, or unreadable: the object is then treated as
not opted in), and ``problem`` says what was wrong, for the ``data_quality`` note that
``notes_for`` writes once per object and key. gpuwatch's own bookkeeping on objects
(migration steps, the replica count before a scale-down) is read the same way: a tenant
can edit it too.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from gpuwatch.model.cluster import CGPU_INDEX_ANNOTATION, ClusterState
from gpuwatch.model.durations import parse_duration_s, parse_instant
from gpuwatch.model.findings import DataQualityNote

T = TypeVar("T")
Where = Literal["annotation", "label"]


@dataclass(frozen=True)
class TenantField(Generic[T]):
    """One annotation or label gpuwatch reads, with what it expects."""

    key: str
    on: Where
    expected: str
    """What a valid value looks like, as the note says it."""
    parse: Callable[[str], T]
    """Raises ``ValueError`` (or any arithmetic error) for an unreadable value."""

    def get(self, metadata: Mapping[str, str]) -> T | None:
        """The value, or None when absent or unreadable."""
        text = metadata.get(self.key)
        if text is None:
            return None
        try:
            return self.parse(text)
        except (ValueError, ArithmeticError, TypeError, OSError):
            return None

    def problem(self, metadata: Mapping[str, str]) -> str | None:
        """Why the value present is unreadable; None when absent or fine."""
        text = metadata.get(self.key)
        if text is None:
            return None
        try:
            self.parse(text)
        except (ValueError, ArithmeticError, TypeError, OSError):
            shown = text if len(text) <= 80 else text[:77] + "..."
            return f"{self.on} {self.key}={shown!r}: expected {self.expected}"
        return None


# ---------------------------------------------------------------- parsers


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ValueError(text)
    return value == "true"


def _instant(text: str) -> datetime:
    """RFC 3339, or unix seconds (as the reference training job writes them)."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        return parse_instant(value)
    if not math.isfinite(seconds):
        raise ValueError(text)
    return datetime.fromtimestamp(seconds, tz=UTC)  # OverflowError/OSError past year 9999


def _positive_duration(text: str) -> int:
    value = text.strip()
    seconds = int(value) if value.isdigit() else parse_duration_s(value)
    if seconds <= 0:
        raise ValueError(text)
    return seconds


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmbt])\s*$", re.IGNORECASE)
_SCALE = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def _params(text: str) -> float:
    """``7B`` -> 7e9, ``1.5b``, ``500M``, ``7e9``, ``7000000000``."""
    match = _SIZE.match(text)
    count = float(match[1]) * _SCALE[match[2].lower()] if match else float(text)
    if not math.isfinite(count) or count <= 0:
        raise ValueError(text)
    return count


def _index(text: str) -> int:
    value = text.strip()
    if not value.isdigit():
        raise ValueError(text)
    return int(value)


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(text)
        return value

    return parse


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(text)
    return value


def _steps(text: str) -> dict[str, int | None]:
    """``{"step_at_signal": 1200, "checkpoint_step": 1100}``: whole steps or null."""
    value = _json_object(text)
    out: dict[str, int | None] = {}
    for key, step in value.items():
        if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
            raise ValueError(text)
        out[str(key)] = step
    return out


def flag(key: str, on: Where = "annotation") -> TenantField[bool]:
    """A ``"true"``/``"false"`` switch (any case)."""
    return TenantField(key, on, '"true" or "false"', _flag)


# ---------------------------------------------------------------- the fields

CHECKPOINT = flag("gpuwatch.io/checkpoint")
CHECKPOINT_INTERVAL = TenantField(
    "gpuwatch.io/checkpoint-interval",
    "annotation",
    "a positive duration: seconds (300) or 5m",
    _positive_duration,
)
LAST_CHECKPOINT = TenantField(
    "gpuwatch.io/last-checkpoint",
    "annotation",
    "an RFC 3339 time (2026-11-24T02:00:00Z) or unix seconds",
    _instant,
)
MODEL_PARAMS = TenantField(
    "gpuwatch.io/model-params",
    "annotation",
    'a parameter count such as "7B", "350M" or 7000000000',
    _params,
)
ROLE = TenantField(
    "gpuwatch.io/role", "label", "inference, notebook or training", _choice(
        "inference", "notebook", "training"
    )
)  # fmt: skip
CAPACITY_TYPE = TenantField(
    "gpuwatch.io/capacity-type",
    "label",
    "spot, on-demand or reserved",
    _choice("spot", "on-demand", "reserved"),
)
SAFE_TO_EVICT = flag("cluster-autoscaler.kubernetes.io/safe-to-evict")
SCALE_DOWN_DISABLED = flag("cluster-autoscaler.kubernetes.io/scale-down-disabled")
DO_NOT_DISRUPT = flag("karpenter.sh/do-not-disrupt")
CGPU_INDEX = TenantField(
    CGPU_INDEX_ANNOTATION, "annotation", "a GPU index (0, 1, ...)", _index
)  # fmt: skip

# gpuwatch's own bookkeeping, written by its actuators.
ACTION_KEY = TenantField("gpuwatch.io/action-key", "annotation", "an action key", str)
ACTION_PHASE = TenantField(
    "gpuwatch.io/action-phase",
    "annotation",
    "draining, drained, removing or done (a node); marked or scaled (a Machine)",
    _choice("draining", "drained", "removing", "done", "marked", "scaled"),
)
REPLICAS_BEFORE = TenantField(
    "gpuwatch.io/replicas-before", "annotation", "a replica count (0, 1, ...)", _index
)
MIGRATION_KEY = TenantField("gpuwatch.io/migration-key", "annotation", "an action key", str)
MIGRATION_STARTED = TenantField(
    "gpuwatch.io/migration-started", "annotation", "an RFC 3339 time", _instant
)
MIGRATION_FROM = TenantField(
    "gpuwatch.io/migration-from",
    "annotation",
    "a JSON object (the job's scheduling before the move)",
    _json_object,
)
MIGRATION_TO = TenantField(
    "gpuwatch.io/migration-to",
    "annotation",
    "a JSON object (the job's scheduling on spot)",
    _json_object,
)
MIGRATION_STEPS = TenantField(
    "gpuwatch.io/migration-steps",
    "annotation",
    'a JSON object of whole steps, e.g. {"checkpoint_step": 1100}',
    _steps,
)
MIGRATION_PHASE = TenantField(
    "gpuwatch.io/migration-phase",
    "annotation",
    "suspended, rescheduled or moved",
    _choice("suspended", "rescheduled", "moved"),
)

POD_FIELDS: tuple[TenantField[Any], ...] = (
    CHECKPOINT, CHECKPOINT_INTERVAL, LAST_CHECKPOINT, MODEL_PARAMS, ROLE, SAFE_TO_EVICT,
    DO_NOT_DISRUPT, CGPU_INDEX,
)  # fmt: skip
CONTROLLER_FIELDS: tuple[TenantField[Any], ...] = (
    CHECKPOINT, CHECKPOINT_INTERVAL, LAST_CHECKPOINT, MODEL_PARAMS, MIGRATION_STARTED,
    MIGRATION_FROM, MIGRATION_TO, MIGRATION_STEPS, MIGRATION_PHASE,
)  # fmt: skip
NODE_FIELDS: tuple[TenantField[Any], ...] = (
    CAPACITY_TYPE, SCALE_DOWN_DISABLED, DO_NOT_DISRUPT, ACTION_PHASE,
)  # fmt: skip
ALL_FIELDS: tuple[TenantField[Any], ...] = tuple(
    dict.fromkeys((*POD_FIELDS, *CONTROLLER_FIELDS, *NODE_FIELDS, REPLICAS_BEFORE))
)


def protects(field: TenantField[bool], annotations: Mapping[str, str]) -> bool:
    """A protective annotation is in force: ``"true"``, or present and unreadable (a
    tenant who wrote ``"yes"`` meant to protect; the note says it was unreadable)."""
    return field.key in annotations and field.get(annotations) is not False


def eviction_protection(annotations: Mapping[str, str]) -> str:
    """What on a pod forbids evicting it (``karpenter.sh/do-not-disrupt``, or
    ``cluster-autoscaler.kubernetes.io/safe-to-evict`` other than ``"true"``); empty
    when nothing does."""
    if protects(DO_NOT_DISRUPT, annotations):
        return f"{DO_NOT_DISRUPT.key}: {annotations[DO_NOT_DISRUPT.key]!r}"
    if SAFE_TO_EVICT.key in annotations and SAFE_TO_EVICT.get(annotations) is not True:
        return f"{SAFE_TO_EVICT.key}: {annotations[SAFE_TO_EVICT.key]!r}"
    return ""


def _metadata(
    field: TenantField[Any], annotations: Mapping[str, str], labels: Mapping[str, str]
) -> Mapping[str, str]:
    return annotations if field.on == "annotation" else labels


def notes_for(
    cluster: ClusterState, opt_in_flags: Iterable[str] = ()
) -> tuple[DataQualityNote, ...]:
    """One note per object and key whose value is unreadable: what it says, what was
    expected, and that the object is treated as not opted in. ``opt_in_flags``: the
    configured opt-in annotations (migrate-to-spot, reclaimable), read as flags."""
    extra = tuple(flag(key) for key in opt_in_flags)
    objects: list[tuple[str, Mapping[str, str], Mapping[str, str], tuple[TenantField[Any], ...]]]
    objects = [(f"Node/{n.name}", n.annotations, n.labels, NODE_FIELDS) for n in cluster.nodes]
    objects += [
        (f"Pod/{p.namespace}/{p.name}", p.annotations, p.labels, POD_FIELDS + extra)
        for p in cluster.pods
    ]
    objects += [
        (f"{c.kind}/{c.namespace}/{c.name}", c.annotations, c.labels, CONTROLLER_FIELDS + extra)
        for c in cluster.controllers
    ]
    notes = []
    for name, notes_on, labels, fields in objects:
        for field in fields:
            problem = field.problem(_metadata(field, notes_on, labels))
            if problem is not None:
                notes.append(
                    DataQualityNote(
                        kind="tenant_input",
                        message=f"{name}: {problem}; treated as absent (not opted in)",
                        details={"object": name, "key": field.key},
                    )
                )
    return tuple(notes)
