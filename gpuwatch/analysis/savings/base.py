"""Inputs every savings calculation shares, and the order they run in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import numpy as np

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.ownership import OwnerIndex
from gpuwatch.analysis.pricing import PriceBook
from gpuwatch.config.settings import SavingsSettings
from gpuwatch.model.cluster import ClusterState, Controller, Pod
from gpuwatch.model.cost import HOURS_PER_MONTH, Price, Saving, SavingExcluded
from gpuwatch.model.findings import Finding
from gpuwatch.model.metrics import FloatArray, HistoryFrame

CHECKPOINT_ANNOTATION = "gpuwatch.io/checkpoint"
CHECKPOINT_INTERVAL_ANNOTATION = "gpuwatch.io/checkpoint-interval"
MODEL_PARAMS_ANNOTATION = "gpuwatch.io/model-params"
ROLE_LABEL = "gpuwatch.io/role"  # inference | notebook | training, where images cannot tell
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

    def role(self, pod: Pod) -> str:
        """``inference``, ``notebook`` or ``training``/``other`` for a GPU pod."""
        if pod.labels.get(ROLE_LABEL):
            return pod.labels[ROLE_LABEL]
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
