"""Each team's cost and utilization week by week, the budgets at the period's end, and
how the OOM forecast's warnings of the period turned out.

From ``team_weekly`` of this period and of the earlier ones the dataset holds (oldest
first), and from ``budgets``: a team's row shows every week it spent in, a week it did
not as nothing spent; money stays in its currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import pyarrow as pa

from gpuwatch.report.data import ReportData


@dataclass(frozen=True)
class TeamWeek:
    label: str
    cost: Decimal | None
    """None: nothing spent that week (or the week is not in the dataset)."""
    gpu_hours: float
    util_mean_ratio: float | None


@dataclass(frozen=True)
class TeamTrend:
    team: str
    currency: str
    weeks: tuple[TeamWeek, ...]
    """Aligned with ``Trends.labels``: oldest first, this period last."""


@dataclass(frozen=True)
class BudgetRow:
    budget: str
    scope: str
    value: str
    currency: str
    amount: Decimal
    spent: Decimal
    projected: Decimal | None
    month_start: datetime
    month_end: datetime
    measured_hours: int
    elapsed_hours: int

    @property
    def spent_ratio(self) -> float:
        return float(self.spent / self.amount) if self.amount else 0.0

    @property
    def projected_ratio(self) -> float | None:
        if self.projected is None or not self.amount:
            return None
        return float(self.projected / self.amount)


@dataclass(frozen=True)
class ForecastQuality:
    """The OOM forecast's warnings of the period (``forecasts``), by what became of them."""

    warnings: int
    reached: int
    false_alarms: int
    pending: int
    rows: tuple[dict[str, object], ...]


@dataclass(frozen=True)
class Trends:
    labels: tuple[str, ...]
    teams: tuple[TeamTrend, ...]
    budgets: tuple[BudgetRow, ...]
    forecasts: ForecastQuality


def trends(data: ReportData) -> Trends:
    weeks = [*data.trend, (data.period.label, data.tables["team_weekly"])]
    labels = tuple(label for label, _ in weeks)
    cells: dict[tuple[str, str], dict[str, TeamWeek]] = {}
    for label, table in weeks:
        for row in table.to_pylist():
            key = (row["team"], row["currency"])
            cells.setdefault(key, {})[label] = TeamWeek(
                label, row["cost"], row["gpu_hours"], row["util_mean_ratio"]
            )
    current = data.period.label

    def order(key: tuple[str, str]) -> tuple[str, Decimal, str]:
        now = cells[key].get(current)
        return (key[1], -(now.cost or Decimal(0)) if now else Decimal(0), key[0])

    teams = tuple(
        TeamTrend(
            team,
            currency,
            tuple(cells[(team, currency)].get(w) or TeamWeek(w, None, 0.0, None) for w in labels),
        )
        for team, currency in sorted(cells, key=order)
    )
    return Trends(
        labels, teams, _budgets(data.tables["budgets"]), _forecasts(data.tables["forecasts"])
    )


def _forecasts(table: pa.Table) -> ForecastQuality:
    rows = tuple(table.to_pylist())
    outcomes = [str(r["outcome"]) for r in rows]
    return ForecastQuality(
        warnings=len(rows),
        reached=outcomes.count("reached"),
        false_alarms=outcomes.count("false_alarm"),
        pending=outcomes.count("pending"),
        rows=rows,
    )


def _budgets(table: pa.Table) -> tuple[BudgetRow, ...]:
    return tuple(
        BudgetRow(
            budget=r["budget"],
            scope=r["scope"],
            value=r["value"],
            currency=r["currency"],
            amount=r["amount"],
            spent=r["spent"],
            projected=r["projected"],
            month_start=r["month_start"],
            month_end=r["month_end"],
            measured_hours=r["measured_hours"],
            elapsed_hours=r["elapsed_hours"],
        )
        for r in table.to_pylist()
    )
