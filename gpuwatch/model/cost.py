"""Money: prices and the allocation of GPU cost (savings are ``gpuwatch.model.savings``).

Amounts are ``Decimal`` in the price book's currency, rounded to the cent per line item,
so that totals are sums of what is printed and reconcile to the cent. Amounts in
different currencies are never added together: totals are kept per currency.
OpenCost's habit is kept: ``gpu_hours``, ``cost``, ``idle_cost``, ``request_avg`` and
``usage_avg`` are separate numeric fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from gpuwatch.model.fields import PLACEMENT, fields_of

CENT = Decimal("0.01")
HOURS_PER_MONTH = Decimal(720)  # 30 days: what "monthly" means everywhere


def money(value: Decimal | float | int) -> Decimal:
    """Round to the cent, half to even (banker's rounding, what ledgers use)."""
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Price:
    """A price per GPU-hour, with where it came from."""

    per_gpu_hour: Decimal
    currency: str
    source: str
    """``book:<model>:<capacity type>`` or ``override:<what matched>``."""
    example: bool = False
    """From a price book marked ``example: true``: not what anyone pays, and every output
    that shows money from it says so."""


@dataclass(frozen=True)
class CostLine:
    """One pod's share of one GPU over the window, or a GPU's unallocated remainder."""

    gpu_uuid: str | None
    node: str
    pool: str | None
    model: str | None
    capacity_type: str
    namespace: str | None
    pod: str | None
    workload: str | None
    team: str | None
    gpu_hours: float
    request_avg: float
    """The share of the GPU requested: 1 whole, the cGPU memory share, a MIG slice."""
    usage_avg: float | None
    """Measured utilization of the GPU over the window (DCGM), 0..1; None without data."""
    price: Price | None
    cost: Decimal | None
    idle_cost: Decimal | None
    """cost x (1 - usage_avg); None when unpriced or unmeasured."""

    @property
    def allocated(self) -> bool:
        return self.pod is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            **fields_of(self, "gpu_uuid", *PLACEMENT),
            "gpu_hours": round(self.gpu_hours, 6),
            "request_avg": round(self.request_avg, 6),
            "usage_avg": None if self.usage_avg is None else round(self.usage_avg, 6),
            "price_per_gpu_hour": _num(self.price.per_gpu_hour) if self.price else None,
            "price_source": self.price.source if self.price else None,
            "currency": self.price.currency if self.price else None,
            "cost": _num(self.cost),
            "idle_cost": _num(self.idle_cost),
        }


@dataclass(frozen=True)
class CostGroup:
    """Cost summed over lines sharing one value of one dimension, in one currency."""

    dimension: str
    key: str
    currency: str
    gpu_hours: float
    cost: Decimal
    idle_cost: Decimal
    request_avg: float
    """GPUs requested on average over the window (GPU-hours requested / window hours)."""
    usage_avg: float | None
    """GPU-hour-weighted utilization of the GPUs in the group."""

    def to_dict(self) -> dict[str, Any]:
        return {
            self.dimension: self.key,
            "currency": self.currency,
            "gpu_hours": round(self.gpu_hours, 6),
            "cost": _num(self.cost),
            "idle_cost": _num(self.idle_cost),
            "request_avg": round(self.request_avg, 6),
            "usage_avg": None if self.usage_avg is None else round(self.usage_avg, 6),
        }


@dataclass(frozen=True)
class CostTotal:
    """Per currency: capacity = allocated + unallocated, to the cent."""

    currency: str
    capacity_cost: Decimal
    allocated_cost: Decimal
    unallocated_cost: Decimal
    idle_cost: Decimal
    gpu_hours: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "capacity_cost": _num(self.capacity_cost),
            "allocated_cost": _num(self.allocated_cost),
            "unallocated_cost": _num(self.unallocated_cost),
            "idle_cost": _num(self.idle_cost),
            "gpu_hours": round(self.gpu_hours, 6),
        }


@dataclass(frozen=True)
class CostReport:
    window_s: int
    lines: tuple[CostLine, ...]
    totals: tuple[CostTotal, ...]
    groups: Mapping[str, tuple[CostGroup, ...]]
    """Dimension (team, pool, workload, model, capacity_type) -> its groups, costliest first."""
    unpriced: tuple[Mapping[str, Any], ...] = ()
    """GPUs with no price: never priced at zero, listed here with the reason."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "totals": [t.to_dict() for t in self.totals],
            **{f"by_{dim}": [g.to_dict() for g in groups] for dim, groups in self.groups.items()},
            "unpriced": list(self.unpriced),
            "lines": [line.to_dict() for line in self.lines],
        }


def _num(value: Decimal | None) -> float | None:
    return None if value is None else float(value)
