"""Savings as a finance team could bank them: one plan, each GPU-hour and node claimed once.

A saving is **cash** when a bill changes: a node goes away, a workload's capacity type
changes (on-demand to spot or reserved), or its GPU type changes. GPUs freed without a
node going away are **reclaimed capacity**: GPU-hours a month, and what buying them would
cost, shown beside the cash and never added to it (unless the pool is billed per GPU).

Every item has ``gross_monthly`` (the lever alone, on the cluster as it is) and
``net_monthly`` (what it adds in the plan's order, after the levers before it claimed
their GPU-hours and nodes; zero when blocked, and for reclaimed capacity). The items'
``net_monthly`` add up to the total's, to the cent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

HIGH, MEDIUM, LOW = "high", "medium", "low"
CONFIDENCE = {
    HIGH: "feasible now by gpuwatch's own action, measured over the whole lookback",
    MEDIUM: "feasible now under the assumptions named, or measured over less than the "
    "whole lookback",
    LOW: "needs a change outside gpuwatch (to the workload, or a purchase decision)",
}
"""What each confidence means, as every output states it."""

METHOD = (
    "How to read these figures. Every saving is measured over the last week of hourly "
    "data (savings.lookback), not a snapshot, and scaled to 30 days. The levers are "
    "applied in one order - release what idles, share, right-size or quantize, remove "
    "nodes, move to spot, reserve the steady baseline - and each counts only the GPU-hours "
    "and nodes the ones before it left, so nothing is counted twice. Only a change to a "
    "bill is cash: a node that goes, a workload moved to spot or reserved capacity, or to "
    "another GPU type. GPUs freed without a node going are reclaimed capacity, shown "
    "beside the cash and never added to it. A lever whose action cannot be taken now (no "
    "spot pool with the GPU, a pool gpuwatch may not scale down) counts nothing and says "
    "what would unblock it. The net is the sum of the items' net, to the cent; gross is "
    "each lever alone."
)
"""The method in one paragraph a finance reader follows."""


@dataclass(frozen=True)
class Saving:
    """One lever applied to one scope: what it would save per 30 days, and how."""

    kind: str
    scope: Mapping[str, str | None]
    monthly: Decimal
    """The lever alone (gross), on the cluster as it is; what a blocked lever would
    save once unblocked."""
    currency: str
    inputs: Mapping[str, Any]
    """Every number the formula used, so that a person can redo it by hand."""
    formula: str
    assumptions: tuple[str, ...]
    confidence: str
    """``high``, ``medium`` or ``low``: see ``CONFIDENCE``."""
    action: str
    gpu_uuids: tuple[str, ...] = ()
    """GPUs whose hours this lever claims in the plan's order (would claim, when
    blocked)."""
    plan: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    net_monthly: Decimal = Decimal(0)
    """What it adds to the net in the plan's order: 0 when blocked or not cash."""
    cash: bool = True
    """A bill changes (a node goes, a capacity type or GPU type changes)."""
    reclaimed_gpu_hours_monthly: float = 0.0
    """For reclaimed capacity: GPU-hours a month freed, in the plan's order."""
    reclaimed_monthly: Decimal = Decimal(0)
    """What buying the reclaimed GPU-hours would cost a month."""
    nodes: tuple[str, ...] = ()
    """Nodes this lever removes (claimed once in the plan)."""
    blocked: str | None = None
    """Why the lever cannot be taken now; None when it can."""
    unblock: str | None = None
    """What would unblock it (it would then save ``monthly``)."""
    lookback_s: int = 0
    hours_counted: float = 0.0
    """Hours of history the figure rests on (the lookback's, where data was there)."""
    order: int = 0
    """The lever's place in the plan (release 1 ... reserved 6)."""
    counted_before: bool = False
    """It would save by itself, but the levers before it in the plan took its GPU-hours."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "order": self.order,
            "scope": dict(self.scope),
            "monthly": _num(self.monthly),
            "gross_monthly": _num(self.monthly),
            "net_monthly": _num(self.net_monthly),
            "cash": self.cash,
            "reclaimed_gpu_hours_monthly": round(self.reclaimed_gpu_hours_monthly, 3),
            "reclaimed_monthly": _num(self.reclaimed_monthly),
            "currency": self.currency,
            "blocked": self.blocked,
            "unblock": self.unblock,
            "lookback_s": self.lookback_s,
            "hours_counted": round(self.hours_counted, 3),
            "formula": self.formula,
            "inputs": dict(self.inputs),
            "assumptions": list(self.assumptions),
            "confidence": self.confidence,
            "action": self.action,
            "gpus": list(self.gpu_uuids),
            "nodes": list(self.nodes),
            "counted_before": self.counted_before,
        }
        if self.plan:
            out["plan"] = [dict(step) for step in self.plan]
        return out


@dataclass(frozen=True)
class SavingExcluded:
    """A candidate that gets no saving, and why (a job without checkpoints, say)."""

    kind: str
    scope: Mapping[str, str | None]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "scope": dict(self.scope), "reason": self.reason}


@dataclass(frozen=True)
class SavingsTotal:
    """Per currency: the plan's net cash, and the reclaimed capacity beside it."""

    currency: str
    gross_monthly: Decimal
    """The cash levers' gross, each alone: never a total anyone can bank."""
    overlap_monthly: Decimal
    """Gross less net: what the levers would claim twice, or cannot take now."""
    net_monthly: Decimal
    """The sum of the items' ``net_monthly``: the cash the plan banks."""
    how: str
    reclaimed_gpu_hours_monthly: float = 0.0
    reclaimed_monthly: Decimal = Decimal(0)
    blocked_monthly: Decimal = Decimal(0)
    """What the blocked cash levers would save once unblocked (each alone)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "net_monthly": _num(self.net_monthly),
            "gross_monthly": _num(self.gross_monthly),
            "overlap_monthly": _num(self.overlap_monthly),
            "reclaimed_gpu_hours_monthly": round(self.reclaimed_gpu_hours_monthly, 3),
            "reclaimed_monthly": _num(self.reclaimed_monthly),
            "blocked_monthly": _num(self.blocked_monthly),
            "how": self.how,
        }


def _num(value: Decimal | None) -> float | None:
    return None if value is None else float(value)
