"""Budgets: a monthly amount for a team, namespace or pool, and what it stands at.

A budget is in one currency and counts only GPU-hours priced in it: currencies are
never mixed, and a GPU without a price is named, never priced at zero. The month is
the calendar month in the user's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from gpuwatch.model.durations import rfc3339

BudgetScope = Literal["team", "namespace", "pool"]


@dataclass(frozen=True)
class Budget:
    """``amount`` in ``currency`` per calendar month for the GPU-hours of ``value`` (a
    team, a namespace or a pool, by ``scope``)."""

    name: str
    scope: BudgetScope
    value: str
    amount: Decimal
    currency: str
    channel: str | None = None
    """Where its findings go; None: routed like any finding (a team's route)."""


@dataclass(frozen=True)
class RecordedSpend:
    """Priced GPU-hours as the weekly report's dataset recorded them (``holder_hourly``):
    one entry per holder and hour, aligned arrays. Fills the hours of a month the
    metrics no longer hold (a Prometheus that keeps 15 days)."""

    hour_end_s: npt.NDArray[np.int64]
    cost: npt.NDArray[np.float64]
    currency: tuple[str | None, ...]
    team: tuple[str | None, ...]
    namespace: tuple[str | None, ...]
    pool: tuple[str | None, ...]
    workload: tuple[str | None, ...]


def budget_subject(name: str) -> str:
    """How findings about budget ``name`` name it (and routes select them): ``budget X``."""
    return f"budget {name}"


@dataclass(frozen=True)
class BudgetStatus:
    """A budget's month so far, and where the month is heading."""

    budget: Budget
    month_start: datetime
    month_end: datetime
    at: datetime
    spent: Decimal
    """Month to date, in the budget's currency, over the hours measured."""
    projected: Decimal | None
    """Month-end projection: ``spent`` plus the remaining hours at this month's run-rate
    with the week's daily shape; None with no measured hour to project from."""
    measured_hours: int
    """Hours of the month so far with metrics."""
    elapsed_hours: int
    top_workloads: tuple[tuple[str, Decimal], ...] = ()
    """The workloads that spent most this month, largest first."""
    unpriced: tuple[str, ...] = ()
    """GPUs in the budget's scope with no price: not counted (never priced at zero)."""
    other_currency: tuple[str, ...] = ()
    """GPUs in scope priced in another currency: not counted (currencies never mix)."""

    @property
    def spent_ratio(self) -> float:
        return float(self.spent / self.budget.amount) if self.budget.amount else 0.0

    @property
    def projected_ratio(self) -> float | None:
        if self.projected is None or not self.budget.amount:
            return None
        return float(self.projected / self.budget.amount)

    def to_dict(self) -> dict[str, Any]:
        b = self.budget
        return {
            "budget": b.name,
            "scope": b.scope,
            "value": b.value,
            "amount": float(b.amount),
            "currency": b.currency,
            "month_start": rfc3339(self.month_start),
            "month_end": rfc3339(self.month_end),
            "spent": float(self.spent),
            "spent_ratio": round(self.spent_ratio, 6),
            "projected": None if self.projected is None else float(self.projected),
            "projected_ratio": None
            if self.projected_ratio is None
            else round(self.projected_ratio, 6),
            "measured_hours": self.measured_hours,
            "elapsed_hours": self.elapsed_hours,
            "top_workloads": [{"workload": w, "spent": float(a)} for w, a in self.top_workloads],
            "unpriced": list(self.unpriced),
            "other_currency": list(self.other_currency),
        }
