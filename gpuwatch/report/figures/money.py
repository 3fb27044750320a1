"""The money figures: the headline of a period, and cost and idle cost by team, pool and
workload, each per currency."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gpuwatch.report.figures.columns import (
    NO_CURRENCY,
    NO_TEAM,
    Columns,
    Groups,
    Money,
    distinct,
    money_by_currency,
)
from gpuwatch.report.figures.lists import count_statuses


@dataclass(frozen=True)
class Headline:
    """The first lines of the page, for one period."""

    gpu_hours: int
    covered_gpu_hours: float
    mean_util_ratio: float | None
    """None when no GPU-hour has a utilization (no data at all)."""
    cost: Money
    idle_cost: Money
    net_savings_monthly: Money | None
    """The cash the plan banks per 30 days: ``savings.net_monthly`` summed. None when the
    period's savings table is unknown (a previous week given as ``gpu_hourly`` only) or
    has no net figures (written before 1.1)."""
    actions_taken: int | None
    actions_refused: int | None
    reclaimed_gpu_hours_monthly: float | None = None
    """GPU-hours a month the plan frees without a bill changing: beside the cash, never
    added to it."""
    reclaimed_monthly: Money | None = None
    """What buying those GPU-hours would cost a month."""
    blocked_monthly: Money | None = None
    """What the blocked levers would save once unblocked, each alone (gross)."""


@dataclass(frozen=True)
class CostRow:
    """One team's (or pool's) priced GPU-hours in one currency."""

    key: str
    currency: str
    cost: Decimal
    gpu_hours: float
    """GPU-hours, or the holders' shares of them (a cGPU pod's 0.4 of a GPU for an hour
    is 0.4)."""
    mean_util_ratio: float | None
    share_ratio: float
    """This row's cost over the currency's total."""


@dataclass(frozen=True)
class IdleRow:
    """Idle cost of one team (or workload) in one currency."""

    key: str
    currency: str
    idle_cost: Decimal
    measured_cost: float
    """Cost of the hours that have a utilization, times the part of each with samples:
    what idle cost is a part of."""
    idle_ratio: float | None
    """``idle_cost / measured_cost``: the share of what was measured that was idle."""
    teams: tuple[str, ...] = ()
    """For a workload: the team(s) its GPU-hours were attributed to."""


def headline(tables: Mapping[str, pa.Table], hourly: Columns | None = None) -> Headline:
    """The headline figures of one period; savings and actions only where their table is
    among ``tables``. ``hourly``: its ``gpu_hourly``, when already at hand as columns."""
    hourly = hourly if hourly is not None else Columns(tables["gpu_hourly"])
    coverage = hourly.floats("coverage_ratio")
    savings = tables.get("savings")
    actions = tables.get("actions")
    statuses = count_statuses(actions) if actions is not None else None
    return Headline(
        gpu_hours=hourly.num_rows,
        covered_gpu_hours=float(coverage.sum()),
        mean_util_ratio=_weighted_util(hourly),
        cost=money_by_currency(hourly, "cost"),
        idle_cost=money_by_currency(hourly, "idle_cost"),
        **_savings(savings),
        actions_taken=statuses.get("done", 0) if statuses is not None else None,
        actions_refused=statuses.get("refused", 0) if statuses is not None else None,
    )


def _savings(savings: pa.Table | None) -> dict[str, Any]:
    """The headline's savings figures: the net cash and, beside it, the reclaimed capacity
    and the blocked levers; all None when unknown."""
    if savings is None or (
        savings.num_rows and savings["net_monthly"].null_count == savings.num_rows
    ):
        return {"net_savings_monthly": None}
    hours = pc.sum(savings["reclaimed_gpu_hours_monthly"]).as_py()
    blocked = savings.filter(pc.is_valid(savings["blocked"]))
    return {
        "net_savings_monthly": money_by_currency(savings, "net_monthly"),
        "reclaimed_gpu_hours_monthly": float(hours or 0.0),
        "reclaimed_monthly": money_by_currency(savings, "reclaimed_monthly"),
        "blocked_monthly": money_by_currency(blocked, "monthly"),
    }


def previous_headline(previous: Mapping[str, pa.Table] | None) -> Headline | None:
    """The previous period's headline; None when it is unknown or has no GPU-hours (a
    week gpuwatch did not record is not a week that cost nothing)."""
    if previous is None or "gpu_hourly" not in previous or not previous["gpu_hourly"].num_rows:
        return None
    return headline(previous)


def relative_change(
    current: float | Decimal | None, previous: float | Decimal | None
) -> float | None:
    """``current / previous - 1``; None when either is unknown or the previous is 0."""
    if current is None or previous is None or previous == 0:
        return None
    return float(current) / float(previous) - 1.0


def _weighted_util(hourly: Columns) -> float | None:
    util = hourly.floats("util_mean_ratio")
    weight = np.where(np.isnan(util), 0.0, hourly.floats("coverage_ratio"))
    total = weight.sum()
    if total <= 0:
        return None
    return float(np.nansum(util * weight) / total)


def cost_by(table: pa.Table | Columns, column: str, missing: str) -> tuple[CostRow, ...]:
    """Priced GPU-hours grouped by ``column`` (team, pool) and currency, cost desc.

    ``table`` is ``gpu_hourly`` (a row is a GPU-hour) or ``holder_hourly`` (a row is its
    ``share_ratio`` of one): the GPU-hours and the utilization's weights are the shares."""
    columns = Columns.of(table)
    priced = columns.valid("cost")
    groups = columns.groups([(column, missing), ("currency", NO_CURRENCY)], priced)
    if not groups.keys:
        return ()
    measured = groups.of(columns.valid("util_mean_ratio"))
    util = np.where(measured, groups.of(columns.floats("util_mean_ratio")), 0.0)
    coverage = groups.of(columns.floats("coverage_ratio"))
    if "share_ratio" in columns.table.column_names:
        share = groups.of(columns.floats("share_ratio"))
        hours, weight = groups.sum(share), np.where(measured, coverage * share, 0.0)
    else:  # a row is a whole GPU-hour: a share of 1
        hours, weight = groups.count(), np.where(measured, coverage, 0.0)
    costs = groups.money("cost")
    totals = money_by_currency(columns, "cost")
    rows = [
        CostRow(
            key=key,
            currency=currency,
            cost=cost,
            gpu_hours=hours,
            mean_util_ratio=uw / w if w > 0 else None,
            share_ratio=float(cost / totals[currency]) if totals[currency] else 0.0,
        )
        for (key, currency), cost, hours, uw, w in zip(
            groups.keys,
            costs,
            hours.tolist(),
            groups.sum(util * weight).tolist(),
            groups.sum(weight).tolist(),
            strict=True,
        )
    ]
    return tuple(sorted(rows, key=lambda row: (row.currency, -row.cost, row.key)))


def idle_by(
    table: pa.Table | Columns, column: str, missing: str, *, with_teams: bool = False
) -> tuple[IdleRow, ...]:
    """Idle cost grouped by ``column`` (team, workload) and currency, idle cost desc.
    Only hours with a utilization count (idle cost is null in a gap), each for the part
    of it with samples (what its idle cost is a part of)."""
    columns = Columns.of(table)
    measured = columns.valid("idle_cost")
    groups = columns.groups([(column, missing), ("currency", NO_CURRENCY)], measured)
    if not groups.keys:
        return ()
    # cost x coverage; nothing where the cost is null (a null adds nothing to a sum).
    cost = pc.fill_null(pc.cast(columns.table["cost"], pa.float64()), 0.0)
    seen = groups.of(cost.to_numpy(zero_copy_only=False) * columns.floats("coverage_ratio"))
    seen_sums = groups.sum(np.where(groups.of(columns.valid("cost")), seen, 0.0))
    teams = _teams_of(columns, groups) if with_teams else [()] * len(groups.keys)
    rows = []
    for (key, currency), idle, seen_cost, team_list in zip(
        groups.keys, groups.money("idle_cost"), seen_sums.tolist(), teams, strict=True
    ):
        rows.append(
            IdleRow(
                key=key,
                currency=currency,
                idle_cost=idle,
                measured_cost=seen_cost or 0.0,
                idle_ratio=float(idle) / seen_cost if seen_cost else None,
                teams=team_list,
            )
        )
    return tuple(sorted(rows, key=lambda row: (row.currency, -row.idle_cost, row.key)))


def _teams_of(columns: Columns, groups: Groups) -> list[tuple[str, ...]]:
    """Per group, the teams (a missing one as ``NO_TEAM``) of its rows, sorted."""
    team = columns.keys("team", NO_TEAM)
    size = len(team.names)
    pairs, _ = distinct(groups.ids * size + groups.of(team.codes), len(groups.keys) * size)
    found: list[list[str]] = [[] for _ in groups.keys]
    for group, code in zip((pairs // size).tolist(), (pairs % size).tolist(), strict=True):
        found[group].append(team.names[code])
    return [tuple(sorted(names)) for names in found]
