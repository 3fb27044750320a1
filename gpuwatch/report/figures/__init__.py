"""The numbers the weekly report shows, computed from its tables and nothing else.

The HTML page is a view of these figures, and the figures are a view of the Parquet
tables finance receives, so that every number a reader sees can be recomputed from the
dataset with DuckDB or pyarrow. That is why this module is pure (tables in, frozen
dataclasses out) and why its definitions are spelled out here:

- A **GPU-hour** is a row of ``gpu_hourly``: one device (a whole GPU, or a MIG instance)
  present for one hour, whether or not it had samples. ``covered_gpu_hours`` is the sum
  of ``coverage_ratio``: the part of those hours the metrics actually saw.
- **Cost** and **idle cost** are sums of their columns, per currency; a null (an unpriced
  GPU, or a gap: a gap is not idle time) adds nothing. By team and by workload they are
  sums over ``holder_hourly`` (a shared GPU-hour split between its holders and the
  unallocated rest), by pool over ``gpu_hourly``; both add up to the same totals. Money
  is ``Decimal`` and never summed across currencies: every money figure is a mapping
  currency -> amount.
- **Mean utilization** is the mean of ``util_mean_ratio`` weighted by ``coverage_ratio``
  over the rows that have a utilization: an hour half seen counts half, a gap not at all.
- **Net savings** is the sum of ``savings.net_monthly`` per currency (per 30 days): the
  cash the plan banks, each lever counted in the plan's order after those before it
  claimed their GPU-hours and nodes. **Reclaimed capacity** (``reclaimed_gpu_hours_monthly``
  and ``reclaimed_monthly`` summed) is shown beside it, never added: no bill changes.
  Each lever's ``monthly`` is its gross (the lever alone); **blocked** is the gross of
  the levers that cannot be taken now.
- **Actions taken** are the actions with status ``done``; refused, failed and planned
  (dry-run) ones are counted separately.
- **Realized savings** are the ``realized`` table's rows: for each node removed or job
  moved, ``projected_monthly`` beside ``measured_monthly``, each summed per currency.
- The **heatmap** keeps gaps as NaN: a GPU nobody could see is drawn as a gap, never as
  0 % (which would read as idle, and be billed to somebody as waste).

Everything over ``gpu_hourly`` (1.7 million rows for a 10,000-GPU week) is vectorised
with pyarrow.compute and numpy; Python loops only run over groups (teams, pools, GPUs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from gpuwatch.report.data import PricesUsed, ReportData, ReportPeriod
from gpuwatch.report.figures.columns import NO_POOL, NO_TEAM, NO_WORKLOAD, Columns, Money
from gpuwatch.report.figures.heatmap import Heatmap, heatmap
from gpuwatch.report.figures.lists import (
    ActionRow,
    DataQuality,
    NodeGaps,
    SavingRow,
    count_statuses,
    data_quality,
    ranked_savings,
    recent_actions,
)
from gpuwatch.report.figures.memory import MemoryHeadroom, NearOomFinding, memory_headroom
from gpuwatch.report.figures.money import (
    CostRow,
    Headline,
    IdleRow,
    cost_by,
    headline,
    idle_by,
    previous_headline,
    relative_change,
)
from gpuwatch.report.figures.realized import Realized, RealizedRow, realized
from gpuwatch.report.figures.trends import Trends, trends

__all__ = [
    "NO_POOL",
    "NO_TEAM",
    "NO_WORKLOAD",
    "ActionRow",
    "CostRow",
    "DataQuality",
    "Headline",
    "Heatmap",
    "IdleRow",
    "MemoryHeadroom",
    "Money",
    "NearOomFinding",
    "NodeGaps",
    "Realized",
    "RealizedRow",
    "ReportFigures",
    "SavingRow",
    "Trends",
    "compute_figures",
    "heatmap",
    "relative_change",
]


@dataclass(frozen=True)
class ReportFigures:
    cluster: str
    period: ReportPeriod
    generated_at: datetime
    headline: Headline
    previous: Headline | None
    """None when there is no previous week (not given, or no GPU-hours in it)."""
    cost_by_team: tuple[CostRow, ...]
    cost_by_pool: tuple[CostRow, ...]
    idle_by_team: tuple[IdleRow, ...]
    idle_by_workload: tuple[IdleRow, ...]
    memory: MemoryHeadroom
    savings: tuple[SavingRow, ...]
    actions: tuple[ActionRow, ...]
    action_counts: Mapping[str, int]
    quality: DataQuality
    heatmap: Heatmap
    realized: Realized
    currencies: tuple[str, ...]
    """Every currency some money figure is in, sorted."""
    prices: PricesUsed | None = None
    """The price book the money came from; None when unknown."""
    trends: Trends | None = None
    """Each team's weeks from the dataset, and the budgets at the period's end."""

    @property
    def example_prices(self) -> bool:
        """The money is in an example book's prices: the page must say so first."""
        return self.prices is not None and self.prices.examples

    @property
    def empty(self) -> bool:
        """Nothing to report: no GPU-hours, no savings, no actions."""
        return not (self.headline.gpu_hours or self.savings or self.actions or self.realized.rows)


def compute_figures(data: ReportData, *, heatmap_max_rows: int = 240) -> ReportFigures:
    """Every figure of the page, from ``data``'s tables."""
    hourly = Columns(data.tables["gpu_hourly"])
    holders = Columns(data.tables["holder_hourly"])
    savings, saving_notes = ranked_savings(data.tables["savings"])
    found = realized(data.tables.get("realized"))
    current = headline(data.tables, hourly)
    previous = previous_headline(data.previous)
    currencies = (
        set(current.cost)
        | set(current.idle_cost)
        | {row.currency for row in savings}
        | {row.currency for row in found.rows if row.currency}
        | set(previous.cost if previous else ())
        | set(previous.idle_cost if previous else ())
        | set(previous.net_savings_monthly or () if previous else ())
    )
    return ReportFigures(
        cluster=data.cluster,
        period=data.period,
        generated_at=data.generated_at,
        headline=current,
        previous=previous,
        cost_by_team=cost_by(holders, "team", NO_TEAM),
        cost_by_pool=cost_by(hourly, "pool", NO_POOL),
        idle_by_team=idle_by(holders, "team", NO_TEAM),
        idle_by_workload=idle_by(holders, "workload", NO_WORKLOAD, with_teams=True),
        memory=memory_headroom(hourly.table, data.tables["findings"], data.near_oom),
        savings=savings,
        actions=recent_actions(data.tables["actions"]),
        action_counts=count_statuses(data.tables["actions"]),
        quality=data_quality(hourly.table, (*data.notes, *saving_notes)),
        heatmap=heatmap(hourly, data.period, max_rows=heatmap_max_rows),
        realized=found,
        currencies=tuple(sorted(currencies)),
        prices=data.prices,
        trends=trends(data),
    )
