"""Each team's week in one small table, and the budgets as they stood at its end.

``team_weekly`` is ``holder_hourly`` summed by team and currency: a few rows a week, so
that the report can show every team's cost and utilization over many weeks by reading
only these rows from the dataset (the report gets better as weeks accumulate). Weeks
written before the table existed get it from their ``holder_hourly``. ``budgets`` is
each budget's month so far and projection at the period's end, from the same read-only
cycle the savings come from.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal

import pyarrow as pa

from gpuwatch.model.budgets import BudgetStatus
from gpuwatch.report.data import ReportPeriod
from gpuwatch.report.figures import NO_TEAM
from gpuwatch.report.figures.money import cost_by
from gpuwatch.report.schema import BUDGETS, TEAM_WEEKLY

MICRO = Decimal("0.000001")
Reader = Callable[[str], Mapping[str, pa.Table] | None]
"""The tables the dataset holds for a week label; None when it was never written."""


def team_weekly_table(holder_hourly: pa.Table) -> pa.Table:
    """``holder_hourly`` by team and currency (unpriced GPU-hours have no currency and
    are left out, as the page's cost by team leaves them)."""
    rows = cost_by(holder_hourly, "team", NO_TEAM)
    return pa.Table.from_pylist(
        [
            {
                "team": r.key,
                "currency": r.currency,
                "gpu_hours": r.gpu_hours,
                "util_mean_ratio": r.mean_util_ratio,
                "cost": r.cost.quantize(MICRO),
            }
            for r in rows
        ],
        schema=TEAM_WEEKLY,
    )


def budgets_table(statuses: Sequence[BudgetStatus]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "budget": s.budget.name,
                "scope": s.budget.scope,
                "value": s.budget.value,
                "currency": s.budget.currency,
                "amount": s.budget.amount.quantize(MICRO),
                "month_start": s.month_start,
                "month_end": s.month_end,
                "at": s.at,
                "spent": s.spent.quantize(MICRO),
                "projected": None if s.projected is None else s.projected.quantize(MICRO),
                "measured_hours": s.measured_hours,
                "elapsed_hours": s.elapsed_hours,
                "top_workloads": json.dumps(
                    [{"workload": w, "spent": str(a)} for w, a in s.top_workloads]
                ),
            }
            for s in statuses
        ],
        schema=BUDGETS,
    )


def trend_weeks(read: Reader, period: ReportPeriod, weeks: int) -> tuple[tuple[str, pa.Table], ...]:
    """``team_weekly`` of up to ``weeks - 1`` periods before ``period``, oldest first,
    from the dataset; a period never written is left out."""
    found = []
    earlier = period
    for _ in range(max(weeks - 1, 0)):
        earlier = earlier.previous()
        tables = read(earlier.label)
        if tables is None:
            continue
        table = tables.get("team_weekly")
        if table is None and "holder_hourly" in tables:
            table = team_weekly_table(tables["holder_hourly"])
        if table is not None:
            found.append((earlier.label, table))
    return tuple(reversed(found))
