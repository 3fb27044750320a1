"""Inputs every savings calculation shares, and the order they run in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

import numpy as np

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.ownership import OwnerIndex
from gpuwatch.analysis.pricing import PriceBook
from gpuwatch.config.settings import SavingsSettings
from gpuwatch.model.cluster import ClusterState, Controller, Pod
from gpuwatch.model.cost import HOURS_PER_MONTH, Price
from gpuwatch.model.findings import Finding
from gpuwatch.model.metrics import FloatArray, HistoryFrame
from gpuwatch.model.savings import Saving, SavingExcluded
from gpuwatch.model.tenant import ROLE, TenantField

T = TypeVar("T")

INFERENCE_IMAGES = ("vllm", "tritonserver", "text-generation-inference", "tgi", "sglang")
NOTEBOOK_HINTS = ("notebook", "jupyter")


@dataclass(frozen=True)
class SavingsInputs:
    at: datetime
    contexts: Sequence[GpuContext]
    """GPUs with metrics first (aligned with the stats arrays), then those without."""
    cluster: ClusterState
    book: PriceBook
    findings: Sequence[Finding]
    settings: SavingsSettings
    util_p95: FloatArray
    """p95 utilization of each GPU over the sharing window (NaN: no data)."""
    fb_used_max_ratio: FloatArray
    """Peak framebuffer used ratio of each GPU over the sharing window."""
    fb_total_mib: FloatArray
    attached_hourly: HistoryFrame | None = None
    """Per GPU and hour, 1 when a pod held it: the baseline for reserved capacity."""
    owners: OwnerIndex = field(init=False)
    pods: Mapping[tuple[str, str], Pod] = field(init=False)
    controllers: Mapping[tuple[str, str, str], Controller] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "owners", OwnerIndex(self.cluster.controllers))
        object.__setattr__(self, "pods", {p.key: p for p in self.cluster.pods})
        object.__setattr__(
            self,
            "controllers",
            {(c.kind, c.namespace, c.name): c for c in self.cluster.controllers},
        )

    def price(self, ctx: GpuContext, capacity_type: str | None = None) -> Price | None:
        """What the GPU costs now, or (``capacity_type``) would cost on other capacity."""
        labels = ctx.node.labels if ctx.node is not None else {}
        own = ctx.node_name if capacity_type is None else None
        found, _ = self.book.price(
            ctx.model, capacity_type or ctx.capacity_type, ctx.pool, labels, own
        )
        return found

    def annotation(self, pod: Pod, key: str) -> str | None:
        """``key`` on the pod, else on the nearest owner up its chain that has it."""
        if key in pod.annotations:
            return pod.annotations[key]
        owner = pod.owner
        for _ in range(16):
            if owner is None:
                return None
            controller = self.controllers.get((owner.kind, pod.namespace, owner.name))
            if controller is None:
                return None
            if key in controller.annotations:
                return controller.annotations[key]
            owner = controller.owner
        return None

    def tenant(self, pod: Pod, field: TenantField[T]) -> tuple[T | None, bool]:
        """``field`` on the pod or its nearest owner that has it, as (value, present): a
        value present but unreadable is ``(None, True)``, and counts as not opted in (the
        cycle's ``tenant_input`` note says why)."""
        if field.on == "annotation":
            text = self.annotation(pod, field.key)
        else:
            text = pod.labels.get(field.key)
        if text is None:
            return None, False
        return field.get({field.key: text}), True

    def role(self, pod: Pod) -> str:
        """``inference``, ``notebook`` or ``training``/``other`` for a GPU pod."""
        labelled = ROLE.get(pod.labels)
        if labelled is not None:
            return labelled
        images = " ".join(pod.images).lower()
        if any(hint in images for hint in INFERENCE_IMAGES):
            return "inference"
        workload = (self.owners.workload_of(pod) or "").lower()
        if workload.startswith("notebook/") or any(h in images for h in NOTEBOOK_HINTS):
            return "notebook"
        if workload.split("/")[0] in ("pytorchjob", "tfjob", "mpijob", "job", "rayjob"):
            return "training"
        return "other"


@dataclass(frozen=True)
class SavingsResult:
    savings: tuple[Saving, ...] = ()
    excluded: tuple[SavingExcluded, ...] = ()


def monthly(per_hour: Decimal | float) -> Decimal:
    """An hourly amount over 30 days (720 hours)."""
    return Decimal(str(per_hour)) * HOURS_PER_MONTH


def finite(values: FloatArray, i: int) -> float | None:
    return float(values[i]) if i < len(values) and not np.isnan(values[i]) else None
