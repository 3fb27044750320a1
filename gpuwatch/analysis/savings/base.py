"""What every lever of the savings plan shares: its inputs, the claims that keep it from
counting a GPU-hour or node twice, and the draft a lever proposes before the plan
decides what it adds to the net.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.feasibility import SpotPool, spot_pools
from gpuwatch.analysis.ownership import OwnerIndex
from gpuwatch.analysis.pricing import PriceBook
from gpuwatch.analysis.savings.use import HourlyUse
from gpuwatch.config.settings import ActionsSettings, SavingsSettings
from gpuwatch.model.cluster import ClusterState, Controller, Pod
from gpuwatch.model.cost import HOURS_PER_MONTH, Price, money
from gpuwatch.model.findings import Finding, GpuHolder
from gpuwatch.model.metrics import FloatArray
from gpuwatch.model.savings import HIGH, LOW, MEDIUM, Saving, SavingExcluded
from gpuwatch.model.tenant import ROLE, TenantField

T = TypeVar("T")

INFERENCE_IMAGES = ("vllm", "tritonserver", "text-generation-inference", "tgi", "sglang")
NOTEBOOK_HINTS = ("notebook", "jupyter")
IDLE_THRESHOLD = 0.10
"""Below this hourly utilization a held GPU idles, where no rule has role ``idle``."""


@dataclass(frozen=True)
class Holdings:
    """The pods holding (part of) each GPU, as columns (a fleet's worth of objects, one
    per holder, would mostly keep the garbage collector busy): the GPU's row in the
    contexts, the holder, and its pod's role (``SavingsInputs.role``)."""

    rows: list[int]
    holders: list[GpuHolder]
    roles: list[str]

    def by_workload(
        self, role: str, contexts: Sequence[GpuContext], unless_on: str | None = None
    ) -> dict[str, list[tuple[int, GpuHolder]]]:
        """Workload -> its (row, holder) pairs whose pods have ``role``, in this order;
        ``unless_on``: leaving out GPUs on that capacity type."""
        found: dict[str, list[tuple[int, GpuHolder]]] = defaultdict(list)
        for row, holder, held_as in zip(self.rows, self.holders, self.roles, strict=True):
            if held_as == role and (unless_on is None or contexts[row].capacity_type != unless_on):
                found[holder.workload or f"Pod/{holder.namespace}/{holder.pod}"].append(
                    (row, holder)
                )
        return found


@dataclass(frozen=True)
class SavingsInputs:
    at: datetime
    contexts: Sequence[GpuContext]
    """GPUs with metrics first (aligned with the stats arrays), then those without."""
    cluster: ClusterState
    book: PriceBook
    findings: Sequence[Finding]
    settings: SavingsSettings
    use: HourlyUse
    """Every GPU's hours over the lookback, aligned with ``contexts``."""
    fb_total_mib: FloatArray
    """Each GPU's framebuffer size (MiB); NaN where unknown."""
    actions: ActionsSettings = field(default_factory=ActionsSettings)
    """The pools gpuwatch may scale down and their floors, the opt-in annotations: what
    makes a lever's action possible."""
    idle_threshold: float = IDLE_THRESHOLD
    """The idle rule's threshold: below it, a held GPU-hour is idle."""
    owners: OwnerIndex = field(init=False)
    pods: Mapping[tuple[str, str], Pod] = field(init=False)
    controllers: Mapping[tuple[str, str, str], Controller] = field(init=False)
    _prices: dict[tuple[str | None, ...], Price | None] = field(init=False, repr=False)
    _roles: dict[tuple[str, str], str] = field(init=False, repr=False)
    _catalog: dict[tuple[str, str], Price | None] = field(init=False, repr=False)
    _holdings: Holdings | None = field(init=False, repr=False)
    _once: dict[Callable[[SavingsInputs], Any], Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_prices", {})
        object.__setattr__(self, "_roles", {})
        object.__setattr__(self, "_catalog", {})
        object.__setattr__(self, "_holdings", None)
        object.__setattr__(self, "_once", {})
        object.__setattr__(self, "owners", OwnerIndex(self.cluster.controllers))
        object.__setattr__(self, "pods", {p.key: p for p in self.cluster.pods})
        object.__setattr__(
            self,
            "controllers",
            {(c.kind, c.namespace, c.name): c for c in self.cluster.controllers},
        )

    def per_gpu_billing(self, pool: str | None) -> bool:
        """The pool is billed per GPU (serverless GPUs, chargeback): a GPU released is
        cash there."""
        return self.settings.billing.get(pool or "", "per-node") == "per-gpu"

    def to_month(self, amount: float | Decimal, hours: int) -> Decimal:
        """An amount measured over ``hours`` of the lookback, per 30 days."""
        if hours <= 0:
            return Decimal(0)
        return Decimal(str(amount)) * HOURS_PER_MONTH / Decimal(hours)

    def price(self, ctx: GpuContext, capacity_type: str | None = None) -> Price | None:
        """What the GPU costs now, or (``capacity_type``) would cost on other capacity;
        each node's answer looked up once (its GPUs share its labels and price)."""
        key = (ctx.model, capacity_type, ctx.capacity_type, ctx.pool, ctx.node_name)
        if key in self._prices:
            return self._prices[key]
        labels = ctx.node.labels if ctx.node is not None else {}
        own = ctx.node_name if capacity_type is None else None
        found, _ = self.book.price(
            ctx.model, capacity_type or ctx.capacity_type, ctx.pool, labels, own
        )
        self._prices[key] = found
        return found

    def once(self, compute: Callable[[SavingsInputs], T]) -> T:
        """``compute(self)``, worked out on the first call only: what a lever derives
        from the inputs alone, the same for its run alone and its run in the plan."""
        if compute not in self._once:
            self._once[compute] = compute(self)
        return self._once[compute]  # type: ignore[no-any-return]

    def catalog_price(self, model: str, capacity_type: str) -> Price | None:
        """The book's price of a GPU-hour of ``model`` on ``capacity_type`` capacity, for
        no pool or node in particular (each asked once)."""
        key = (model, capacity_type)
        if key not in self._catalog:
            self._catalog[key] = self.book.price(model, capacity_type)[0]
        return self._catalog[key]

    def holdings(self) -> Holdings:
        """Every GPU's holders whose pod the cluster has, with the pod's role, in the
        order of the contexts and their holders (worked out once: three levers ask, each
        of them twice)."""
        if self._holdings is None:
            found = Holdings([], [], [])
            for i, ctx in enumerate(self.contexts):
                for holder in ctx.holders:
                    pod = self.pods.get((holder.namespace, holder.pod))
                    if pod is not None:
                        found.rows.append(i)
                        found.holders.append(holder)
                        found.roles.append(self.role(pod))
            object.__setattr__(self, "_holdings", found)
        return self._holdings

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
        """``inference``, ``notebook`` or ``training``/``other`` for a GPU pod (each
        pod's worked out once: every lever asks it of every GPU's holders)."""
        found = self._roles.get(pod.key)
        if found is None:
            found = self._roles[pod.key] = self._role(pod)
        return found

    def _role(self, pod: Pod) -> str:
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


@dataclass
class Claims:
    """What the levers before this one took: GPU-hours freed, node-hours removed, spot
    room filled. A lever counts only what is left."""

    freed: npt.NDArray[np.bool_]
    """(GPUs x hours): a lever already freed or moved this GPU-hour."""
    removed: dict[str, npt.NDArray[np.bool_]]
    """Node -> the hours a lever removed it."""
    spot: list[SpotPool]
    banked: npt.NDArray[np.bool_]
    """(GPUs x hours): a cash lever already counted what this GPU-hour costs (a workload
    moved to cheaper GPUs, a GPU released where it is billed alone). Removing its node
    in that hour would count the same money again."""

    @classmethod
    def fresh(cls, inputs: SavingsInputs) -> Claims:
        n, hours = len(inputs.contexts), inputs.use.hours
        nothing = np.zeros((n, hours), dtype=bool)
        spot = [
            replace(p, tolerations=list(p.tolerations), nodes=list(p.nodes))
            for p in inputs.once(_spot_pools)
        ]
        return cls(nothing, {}, spot, nothing.copy())

    def untouched(self, rows: Sequence[int]) -> bool:
        return not bool(self.freed[list(rows)].any()) if rows else True


def _spot_pools(inputs: SavingsInputs) -> list[SpotPool]:
    """The cluster's spot pools as they are, before any lever fills them."""
    return spot_pools(inputs.contexts)


@dataclass
class Draft:
    """What one lever proposes for one scope, before the plan decides its net."""

    kind: str
    scope: Mapping[str, str | None]
    value: Decimal
    """Per 30 days: cash, or what buying the reclaimed capacity would cost."""
    currency: str
    formula: str
    inputs: Mapping[str, Any]
    assumptions: tuple[str, ...]
    confidence: str
    action: str
    cash: bool = True
    reclaimed_gpu_hours: float = 0.0
    """Per 30 days, for capacity freed without a bill changing."""
    gpu_rows: tuple[int, ...] = ()
    nodes: tuple[str, ...] = ()
    blocked: str | None = None
    unblock: str | None = None
    hours_counted: int = 0
    plan: Sequence[Mapping[str, Any]] = ()
    claim: Callable[[Claims], None] = lambda claims: None
    """Takes this lever's GPU-hours, nodes and spot room (only when it is not blocked)."""

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str | None], ...]]:
        return self.kind, tuple(sorted(self.scope.items()))


def measured(confidence: str, hours: int, lookback_hours: int) -> tuple[str, tuple[str, ...]]:
    """``confidence``, one level lower (and said so) when the figure rests on less than
    the whole lookback."""
    if hours >= lookback_hours:
        return confidence, ()
    lower = {HIGH: MEDIUM, MEDIUM: LOW, LOW: LOW}[confidence]
    return lower, (f"measured over {hours} of the lookback's {lookback_hours} hours",)


def monthly(per_hour: Decimal | float) -> Decimal:
    """An hourly amount over 30 days (720 hours)."""
    return money(Decimal(str(per_hour)) * HOURS_PER_MONTH)


def finite(values: FloatArray, i: int) -> float | None:
    """``values[i]`` when it is a number; None when absent, NaN or out of range."""
    if i >= len(values):
        return None
    value = float(values[i])
    return value if np.isfinite(value) else None
