"""Findings (a rule fired for a GPU) and data-quality notes (why a GPU was not judged).

The JSON names of these fields are a published interface: other tools, the Slack
notifier and the reports read them. Add fields; do not rename them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from gpuwatch.model.durations import rfc3339
from gpuwatch.model.fields import HOLDER, PLACEMENT, fields_of
from gpuwatch.model.metrics import NO_NODE


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Role(StrEnum):
    """What a rule means to the parts of gpuwatch that act on its findings.

    Rule ids are the user's to choose and rename; consumers find the rules they build
    on by role (at most one enabled rule has each), and the rule loader checks that a
    rule's kind and signal fit its role.
    """

    IDLE = "idle"
    """An allocated GPU doing (almost) nothing: the idle saving; idle opted-in pods on
    a node the scale-down planner may drain."""
    UNALLOCATED = "unallocated"
    """A GPU no pod held: the scale-down planner's empty capacity."""
    NEAR_OOM = "near_oom"
    """GPU memory nearly full: the weekly report's memory-headroom figures."""
    DATA_GAP = "data_gap"
    """Metrics missing or stale: the planners act on no GPU that has a gap."""
    OVERHEAT = "overheat"
    XID = "xid"
    BUDGET = "budget"
    """A team, namespace or pool near or over its monthly budget: the weekly report's
    budget figures."""
    OOM_FORECAST = "oom_forecast"
    """GPU memory predicted to reach the near-OOM level soon: the weekly report's
    forecast quality (warnings given, OOMs that followed, false alarms)."""


@dataclass(frozen=True)
class GpuHolder:
    """A pod holding (part of) a GPU. ``share`` is the fraction of the GPU it holds: 1
    for a whole GPU, the memory share for cGPU, the slice for MIG."""

    namespace: str
    pod: str
    workload: str | None
    team: str
    share: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**fields_of(self, *HOLDER), "share": round(self.share, 4)}


@dataclass(frozen=True)
class PendingGpuPod:
    """A pod waiting for GPUs (Pending, not scheduled): why a pool must not shrink."""

    namespace: str
    pod: str
    workload: str | None
    team: str
    gpus_requested: float
    """Whole GPUs plus MIG slices; 0 for a cGPU memory request."""

    def to_dict(self) -> dict[str, Any]:
        return {
            **fields_of(self, *HOLDER),
            "gpus_requested": self.gpus_requested,
        }


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    gpu_uuid: str | None
    node: str
    pool: str | None
    value: float | None
    threshold: float | None
    window_s: int
    since: datetime
    message: str
    gpu_index: int | None = None
    model: str | None = None
    capacity_type: str | None = None
    namespace: str | None = None
    pod: str | None = None
    workload: str | None = None
    team: str | None = None
    unit: str = ""
    coverage_ratio: float | None = None
    attribution: str = "none"
    """``exact`` (the exporter's pod labels or the scheduler's record), ``approximate``
    (inferred from the node's allocations) or ``none`` (nobody holds the GPU)."""
    holders: tuple[GpuHolder, ...] = ()
    device_id: str | None = None
    """The GPU's UUID, or ``UUID/mig-N`` for a MIG instance (``GpuDevice.device_id``)."""
    role: Role | None = None
    """The role of the rule that fired, where it has one."""
    eta_s: float | None = None
    """Forecasts: seconds from the newest sample until the signal is predicted to cross
    the threshold."""
    fit_r2: float | None = None
    """Forecasts: the share of the samples' variance the fitted line explains (0..1)."""
    rate_per_h: float | None = None
    """Forecasts: the fitted growth per hour, in the finding's unit."""
    subject: str | None = None
    """What the finding is about when it is not a GPU (``budget perception``)."""

    @property
    def key(self) -> str:
        """Identity across cycles: the same rule on the same GPU (or MIG instance) is the
        same finding."""
        return f"{self.rule}|{self.node}|{self.device_id or self.gpu_uuid or '-'}|{self.gpu_index}"

    @property
    def where(self) -> str:
        """``node-a/gpu3`` (the node alone when the exporter gives no GPU index); the
        subject of a finding about no GPU."""
        if self.subject:
            return self.subject
        node = self.node or NO_NODE
        return node if self.gpu_index is None else f"{node}/gpu{self.gpu_index}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "role": None if self.role is None else str(self.role),
            "severity": str(self.severity),
            **fields_of(self, "gpu_uuid", "device_id", "gpu_index", *PLACEMENT),
            "value": _round(self.value),
            "threshold": self.threshold,
            "unit": self.unit,
            "window_s": self.window_s,
            "coverage_ratio": _round(self.coverage_ratio),
            "since": rfc3339(self.since),
            "attribution": self.attribution,
            "holders": [h.to_dict() for h in self.holders],
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "fit_r2": _round(self.fit_r2),
            "rate_per_h": _round(self.rate_per_h),
            "subject": self.subject,
            "message": self.message,
        }


@dataclass(frozen=True)
class DataQualityNote:
    """Something that limits what a cycle could judge: a gap, a stale exporter, a GPU the
    cluster reports but the metrics do not, an approximate attribution, a source error."""

    kind: str
    message: str
    node: str | None = None
    gpu_uuid: str | None = None
    window_s: int | None = None
    coverage_ratio: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "node": self.node,
            "gpu_uuid": self.gpu_uuid,
            "window_s": self.window_s,
            "coverage_ratio": _round(self.coverage_ratio),
            "message": self.message,
            **({"details": self.details} if self.details else {}),
        }


def format_value(value: float | None, unit: str) -> str:
    """A value as people read it: ratios as percentages, codes as integers, else with unit."""
    if value is None or math.isnan(value):
        return "n/a"
    if unit == "ratio":
        return f"{value:.0%}" if abs(value) >= 0.01 or value == 0 else f"{value:.1%}"
    if unit in ("code", "flag"):
        return str(int(value))
    return f"{value:.0f} {unit}" if abs(value) >= 10 else f"{value:.1f} {unit}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)
