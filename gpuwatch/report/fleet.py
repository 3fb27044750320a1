"""What the fleet page shows, made from the fleet queries' rows (``fleet_query``).

The queries do the heavy work (summing millions of GPU-hours per cluster, pool and team);
this module only arranges their few rows: headlines per currency summed from the
cluster rows, the clusters that did not report, and the findings added up by cluster,
team and pool. Money stays ``Decimal`` and keyed by currency throughout: nothing here
adds two currencies together. Money without a currency (unpriced GPU-hours) is left out
of the money figures and counted apart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from gpuwatch.report.figures.columns import NO_POOL, NO_TEAM
from gpuwatch.report.fleet_query import FleetRows, Row

ZERO = Decimal(0)
MONEY_COLUMNS = ("cost", "idle_cost", "previous_cost", "previous_idle_cost")

NO_TEAM_LEVER = "(a pool's or the fleet's)"
"""Where levers of no team (removing nodes, reserving capacity) are counted by team."""
NO_POOL_LEVER = "(the fleet's)"
"""Where levers of no pool (reserving capacity) are counted by pool."""


@dataclass(frozen=True)
class MoneyRow:
    """A cluster's, pool's or team's money in one currency, this week and the week before
    (None: nothing priced that week)."""

    key: str
    currency: str
    gpu_hours: float
    cost: Decimal | None
    idle_cost: Decimal | None
    previous_cost: Decimal | None
    previous_idle_cost: Decimal | None


@dataclass(frozen=True)
class ClusterRow(MoneyRow):
    gpus: int = 0
    util_mean_ratio: float | None = None
    reported: bool = True
    """False: the cluster reported the week before, not this week."""
    net_monthly: Decimal | None = None
    reclaimed_monthly: Decimal | None = None
    blocked_monthly: Decimal | None = None


@dataclass(frozen=True)
class FindingCount:
    key: str
    findings: int
    hours: int
    critical: int
    previous_findings: int


@dataclass(frozen=True)
class LeverRow:
    kind: str
    currency: str
    levers: int
    net_monthly: Decimal | None
    gross_monthly: Decimal
    blocked_monthly: Decimal | None


@dataclass(frozen=True)
class SavingsRow:
    """What the plans bank per 30 days for one team or pool, in one currency."""

    key: str
    currency: str
    levers: int
    net_monthly: Decimal | None
    previous_net_monthly: Decimal | None


@dataclass(frozen=True)
class Headline:
    """The fleet's figures in one currency."""

    currency: str
    cost: Decimal = ZERO
    idle_cost: Decimal = ZERO
    previous_cost: Decimal = ZERO
    previous_idle_cost: Decimal = ZERO
    net_monthly: Decimal = ZERO
    reclaimed_monthly: Decimal = ZERO
    blocked_monthly: Decimal = ZERO
    previous_net_monthly: Decimal = ZERO


@dataclass(frozen=True)
class NotReported:
    cluster: str
    last_week: str


@dataclass(frozen=True)
class FleetFigures:
    week: str
    previous_week: str
    headlines: list[Headline]
    clusters: list[ClusterRow]
    reporting: list[str]
    not_reported: list[NotReported]
    teams: list[MoneyRow]
    pools: list[MoneyRow]
    team_savings: list[SavingsRow]
    """Each lever's net by its scope's team; a pool's or the fleet's levers together."""
    pool_savings: list[SavingsRow]
    levers: list[LeverRow]
    findings_by: Mapping[str, list[FindingCount]]
    """``cluster``, ``team`` and ``pool``: findings added up by each."""
    unpriced_gpu_hours: int
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def findings_total(self) -> int:
        return sum(row.findings for row in self.findings_by["cluster"])


def fleet_figures(result: FleetRows) -> FleetFigures:
    """The page's figures from the queries' rows."""
    rows = result.rows
    savings = {(row["cluster"], row["currency"]): row for row in rows["savings"]}
    clusters = []
    for row in rows["clusters"]:
        if row["currency"] is None:
            continue
        plan = savings.pop((row["cluster"], row["currency"]), {})
        clusters.append(_cluster_row(row, plan))
    # A plan in a currency the cluster's GPU-hours are not priced in still counts.
    clusters += [_cluster_row(_no_cost(plan), plan) for plan in savings.values()]
    # Clusters that did not report first: they are what a reader must act on.
    clusters.sort(key=lambda row: (row.reported, row.key, row.currency))
    return FleetFigures(
        week=result.week,
        previous_week=result.previous_week,
        headlines=_headlines(clusters, rows["savings"]),
        clusters=clusters,
        reporting=sorted({row["cluster"] for row in rows["clusters"] if row["gpu_hours"]}),
        not_reported=[
            NotReported(row["cluster"], row["last_week"]) for row in rows["not_reported"]
        ],
        teams=_money_rows(rows["teams"], "team", NO_TEAM),
        pools=_money_rows(rows["pools"], "pool", NO_POOL),
        team_savings=_savings_rows(rows["scoped_savings"], "team", NO_TEAM_LEVER),
        pool_savings=_savings_rows(rows["scoped_savings"], "pool", NO_POOL_LEVER),
        levers=[
            LeverRow(
                kind=row["kind"],
                currency=row["currency"],
                levers=int(row["levers"]),
                net_monthly=row["net_monthly"],
                gross_monthly=row["gross_monthly"],
                blocked_monthly=row["blocked_monthly"],
            )
            for row in rows["levers"]
        ],
        findings_by={
            "cluster": _findings_by(rows["findings"], "cluster", "(none)"),
            "team": _findings_by(rows["findings"], "team", NO_TEAM),
            "pool": _findings_by(rows["findings"], "pool", NO_POOL),
        },
        unpriced_gpu_hours=sum(
            int(row["gpu_hours"]) for row in rows["clusters"] if row["currency"] is None
        ),
    )


def _cluster_row(row: Row, plan: Mapping[str, Any]) -> ClusterRow:
    return ClusterRow(
        **_money_fields(row, row["cluster"]),
        gpus=int(row["gpus"] or 0),
        util_mean_ratio=row["util_mean_ratio"],
        reported=bool(row["gpu_hours"]) or bool(plan.get("levers")),
        net_monthly=plan.get("net_monthly"),
        reclaimed_monthly=plan.get("reclaimed_monthly"),
        blocked_monthly=plan.get("blocked_monthly"),
    )


def _money_fields(row: Row, key: str) -> dict[str, Any]:
    """``MoneyRow``'s fields from a clusters, pools or teams row."""
    return {
        "key": key,
        "currency": row["currency"],
        "gpu_hours": float(row["gpu_hours"] or 0),
        **{name: row[name] for name in MONEY_COLUMNS},
    }


def _no_cost(plan: Row) -> Row:
    """A clusters row with no GPU-hours, for a plan whose currency has none."""
    return {
        "cluster": plan["cluster"],
        "currency": plan["currency"],
        "gpus": 0,
        "gpu_hours": 0,
        "cost": None,
        "idle_cost": None,
        "util_mean_ratio": None,
        "previous_cost": None,
        "previous_idle_cost": None,
    }


def _headlines(clusters: Iterable[ClusterRow], savings: Iterable[Row]) -> list[Headline]:
    sums: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(lambda: ZERO))
    for row in clusters:
        total = sums[row.currency]
        for name in MONEY_COLUMNS:
            total[name] += getattr(row, name) or ZERO
        for name in ("net_monthly", "reclaimed_monthly", "blocked_monthly"):
            total[name] += getattr(row, name) or ZERO
    for row in savings:
        sums[row["currency"]]["previous_net_monthly"] += row["previous_net_monthly"] or ZERO
    return [Headline(currency, **sums[currency]) for currency in sorted(sums)]


def _money_rows(rows: Iterable[Row], key: str, missing: str) -> list[MoneyRow]:
    out = [
        MoneyRow(**_money_fields(row, row[key] if row[key] is not None else missing))
        for row in rows
        if row["currency"] is not None
    ]
    return sorted(out, key=lambda row: (row.currency, -(row.cost or ZERO), row.key))


def _savings_rows(rows: Iterable[Row], key: str, missing: str) -> list[SavingsRow]:
    """The scoped rows added up by ``key`` (team or pool) and currency; a week with no
    lever of that scope stays None, not zero."""
    sums: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, None, None])
    for row in rows:
        name = row[key] if row[key] is not None else missing
        total = sums[(name, row["currency"])]
        total[0] += int(row["levers"] or 0)
        for i, column in ((1, "net_monthly"), (2, "previous_net_monthly")):
            if row[column] is not None:
                total[i] = (total[i] or ZERO) + row[column]
    out = [SavingsRow(name, currency, *total) for (name, currency), total in sums.items()]
    return sorted(out, key=lambda row: (row.currency, -(row.net_monthly or ZERO), row.key))


def _findings_by(rows: Iterable[Row], key: str, missing: str) -> list[FindingCount]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in rows:
        count = counts[row[key] if row[key] is not None else missing]
        count[0] += int(row["findings"])
        count[1] += int(row["hours"])
        count[2] += int(row["findings"]) if row["severity"] == "critical" else 0
        count[3] += int(row["previous_findings"])
    found = [FindingCount(name, *values) for name, values in counts.items()]
    return sorted(found, key=lambda row: (-row.findings, -row.previous_findings, row.key))
