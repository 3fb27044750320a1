"""Budgets: what each team, namespace or pool has spent this month, and where it ends.

Spend is priced GPU-hours: for every hour of the month so far and every GPU, who held
it (the exporter's pod label; where the exporter names none, the current holders from
their pods' start, as the savings count it) times the GPU's price. A pool's budget
counts every GPU-hour of its nodes, held or not: the pool's bill includes its idle
capacity. Hours without metrics are taken from the weekly report's dataset where it
holds them (``holder_hourly``, priced when the week was written), else not counted, and
the status says how many hours it stands on.

The month-end projection is the spend so far plus, for every hour left in the month,
the mean spend of the same hour of the same weekday within the rule's window (this
month's run-rate with the week's daily shape: a team that trains on weekdays does not
spend its weekday rate over the weekends); a slot the window has not seen takes the
window's mean hour. Pure: arrays and settings in, statuses and findings out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.ownership import exporter_holders
from gpuwatch.analysis.savings.use import hourly_use
from gpuwatch.model.budgets import Budget, BudgetStatus, RecordedSpend, budget_subject
from gpuwatch.model.cluster import ClusterState
from gpuwatch.model.cost import Price
from gpuwatch.model.findings import Finding, GpuHolder, Role, Severity, format_value
from gpuwatch.model.metrics import HistoryFrame, HolderHistory

HOUR_S = 3600
CENT = Decimal("0.01")


def month_bounds(at: datetime, time_zone: str) -> tuple[datetime, datetime]:
    """The calendar month holding ``at`` in ``time_zone``, as UTC instants [start, end)."""
    zone = ZoneInfo(time_zone)
    local = at.astimezone(zone)
    start = datetime(local.year, local.month, 1, tzinfo=zone)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    end = datetime(year, month, 1, tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


@dataclass(frozen=True)
class MonthUse:
    """Who held each GPU in each hour of the month so far; rows align with the
    cycle's contexts, columns with ``times_s`` (the end of each hour)."""

    times_s: npt.NDArray[np.int64]
    covered: npt.NDArray[np.bool_]
    """The GPU has samples in the hour."""
    codes: npt.NDArray[np.int32]
    """The exporter's holder of the GPU in the hour (an index of ``holders``); -1 none."""
    holders: tuple[GpuHolder, ...]
    held: npt.NDArray[np.float64]
    """Share of the GPU held in the hour (0..1), where the exporter names nobody."""


def month_use(
    frame: HistoryFrame,
    holders: HolderHistory,
    contexts: Sequence[GpuContext],
    cluster: ClusterState,
    team_label: str | None,
) -> MonthUse:
    """``MonthUse`` from the month's hourly history and the exporter's holders (both
    read at the same hours)."""
    pods = {p.key: p for p in cluster.pods}
    lookback_s = int(frame.times_s.size) * HOUR_S
    use = hourly_use(frame, contexts, pods, lookback_s)
    covered = ~np.isnan(use.util) | ~np.isnan(use.memory)
    device_ids = [c.device.device_id if c.device else "" for c in contexts]
    codes = np.full(covered.shape, -1, dtype=np.int32)
    same = holders.times_s.size == frame.times_s.size and bool(
        np.all(holders.times_s == frame.times_s)
    )
    if same:
        codes = holders.aligned(device_ids)
    named = tuple(exporter_holders(holders.pods, cluster, team_label))
    return MonthUse(frame.times_s, covered, codes, named, use.held)


def hourly_spend(
    budget: Budget,
    use: MonthUse,
    contexts: Sequence[GpuContext],
    prices: Sequence[Price | None],
) -> tuple[npt.NDArray[np.float64], dict[str, float], tuple[str, ...], tuple[str, ...]]:
    """(per hour, the budget's spend: NaN for hours without metrics; per workload, its
    month so far; GPUs in scope without a price; GPUs in scope priced in another
    currency). ``prices[i]`` is the price of a GPU-hour of ``contexts[i]``."""
    price = np.array(
        [float(p.per_gpu_hour) if p and p.currency == budget.currency else 0.0 for p in prices]
    )
    by_workload: dict[str, float] = {}
    if budget.scope == "pool":
        in_pool = np.array([c.pool == budget.value for c in contexts], dtype=bool)
        share = (use.covered & in_pool[:, None]).astype(float)
        scoped = in_pool & use.covered.any(axis=1)
    else:
        matching = np.array([_matches(budget, h) for h in use.holders] + [False], dtype=bool)
        exporter = matching[use.codes] & (use.codes >= 0)
        fallback = np.array([_fallback_share(budget, c) for c in contexts])
        share = np.where(use.codes >= 0, exporter.astype(float), use.held * fallback[:, None])
        scoped = share.any(axis=1)
    cost = share * price[:, None]
    labelled = use.codes >= 0
    per_code = np.bincount(use.codes[labelled], weights=cost[labelled], minlength=len(use.holders))
    for holder, amount in zip(use.holders, per_code.tolist(), strict=True):
        _add(by_workload, _label(holder), amount)
    unlabelled = cost * ~labelled
    held = (unlabelled * (use.held > 0)).sum(axis=1)
    free = (unlabelled * (use.held <= 0)).sum(axis=1)
    for i, ctx in enumerate(contexts):
        mine = [h for h in ctx.holders if budget.scope == "pool" or _matches(budget, h)]
        _add(by_workload, _label(mine[0]) if mine else "(unallocated)", float(held[i]))
        _add(by_workload, "(unallocated)", float(free[i]))
    unpriced = tuple(_name(c) for i, c in enumerate(contexts) if scoped[i] and prices[i] is None)
    other = tuple(
        f"{_name(c)} ({p.currency})"
        for c, p, s in zip(contexts, prices, scoped, strict=True)
        if s and p is not None and p.currency != budget.currency
    )
    measured = use.covered.any(axis=0)
    spend = np.where(measured, cost.sum(axis=0), np.nan)
    return spend, by_workload, unpriced, other


def project(
    times_s: npt.NDArray[np.int64],
    spend: npt.NDArray[np.float64],
    month_end: datetime,
    window_s: int,
    time_zone: str,
) -> float | None:
    """The month's spend at its end: what was spent, plus every hour left at the mean of
    its (weekday, hour) slot over the last ``window_s`` of measured hours; None when the
    window has no measured hour. ``times_s`` are hour ends; an hour left is one whose
    end is after the last of them and not after ``month_end``."""
    spent = float(np.nansum(spend))
    if times_s.size == 0:
        return None
    last = int(times_s[-1])
    recent = (times_s > last - window_s) & ~np.isnan(spend)
    if not recent.any():
        return None
    zone = ZoneInfo(time_zone)
    means: dict[tuple[int, int], list[float]] = {}
    for t, amount in zip(times_s[recent].tolist(), spend[recent].tolist(), strict=True):
        means.setdefault(_slot(t, zone), []).append(amount)
    overall = float(np.mean(spend[recent]))
    ahead = 0.0
    for t in range(last + HOUR_S, int(month_end.timestamp()) + 1, HOUR_S):
        seen = means.get(_slot(t, zone))
        ahead += float(np.mean(seen)) if seen else overall
    return spent + ahead


def budget_status(
    budget: Budget,
    use: MonthUse,
    contexts: Sequence[GpuContext],
    prices: Sequence[Price | None],
    at: datetime,
    window_s: int,
    time_zone: str,
    top: int = 3,
    recorded: RecordedSpend | None = None,
) -> BudgetStatus:
    """Where ``budget`` stands at ``at``, and where its month is heading. Hours the
    metrics lack are taken from ``recorded`` (the report's dataset) where it holds them."""
    start, end = month_bounds(at, time_zone)
    spend, by_workload, unpriced, other = hourly_spend(budget, use, contexts, prices)
    if recorded is not None:
        spend, other = _with_recorded(budget, recorded, use.times_s, spend, by_workload, other)
    projected = project(use.times_s, spend, end, window_s, time_zone)
    ranked = sorted(by_workload.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return BudgetStatus(
        budget=budget,
        month_start=start,
        month_end=end,
        at=at,
        spent=_money(float(np.nansum(spend))),
        projected=None if projected is None else _money(projected),
        measured_hours=int(np.sum(~np.isnan(spend))),
        elapsed_hours=int((at - start).total_seconds() // HOUR_S),
        top_workloads=tuple((w, _money(a)) for w, a in ranked if a > 0),
        unpriced=unpriced,
        other_currency=other,
    )


@dataclass(frozen=True)
class BudgetLimits:
    """A budget rule's thresholds."""

    rule: str
    severity: Severity
    spent_ratios: tuple[float, ...]
    projected_ratio: float | None
    window_s: int


def budget_findings(limits: BudgetLimits, statuses: Sequence[BudgetStatus]) -> list[Finding]:
    """One finding per budget past a threshold: the highest share spent it reached,
    else the projection over its limit. Spending the whole budget is critical."""
    found = []
    for status in statuses:
        crossed = [r for r in limits.spent_ratios if status.spent_ratio >= r]
        projected = status.projected_ratio
        over = limits.projected_ratio is not None and (projected or 0.0) >= limits.projected_ratio
        if not crossed and not over:
            continue
        threshold = max(crossed) if crossed else float(limits.projected_ratio or 0.0)
        severity = Severity.CRITICAL if status.spent_ratio >= 1.0 else limits.severity
        found.append(_finding(limits, status, threshold, severity))
    return found


def _finding(
    limits: BudgetLimits, status: BudgetStatus, threshold: float, severity: Severity
) -> Finding:
    b = status.budget
    return Finding(
        rule=limits.rule,
        role=Role.BUDGET,
        severity=severity,
        gpu_uuid=None,
        node="",
        pool=b.value if b.scope == "pool" else None,
        namespace=b.value if b.scope == "namespace" else None,
        team=b.value if b.scope == "team" else None,
        value=status.spent_ratio,
        threshold=threshold,
        unit="ratio",
        window_s=limits.window_s,
        since=status.month_start,
        message=budget_message(status),
        device_id=f"budget/{b.name}",
        subject=budget_subject(b.name),
    )


def budget_message(status: BudgetStatus) -> str:
    """What a finance reader checks: the budget, the month so far, the projection, the
    workloads behind it, and what was not counted."""
    b = status.budget
    start = status.month_start.astimezone(UTC)
    # A day into the month names it whatever the zone's offset (its start in UTC may
    # still be the last day of the month before).
    month = (start + timedelta(days=1)).strftime("%B %Y")
    text = (
        f"{b.name} ({b.scope}): {_amount(status.spent, b.currency)} spent of the "
        f"{_amount(b.amount, b.currency)} {month} budget "
        f"({format_value(status.spent_ratio, 'ratio')})"
    )
    if status.projected is not None:
        text += (
            f"; month-end projection {_amount(status.projected, b.currency)} "
            f"({format_value(status.projected_ratio, 'ratio')})"
        )
    if status.top_workloads:
        text += "; most spent by " + ", ".join(
            f"{w} {_amount(a, b.currency)}" for w, a in status.top_workloads
        )
    if status.measured_hours < status.elapsed_hours:
        text += (
            f"; data for {status.measured_hours} of the {status.elapsed_hours} hours "
            f"since {start:%Y-%m-%d %H:%M}Z (the rest not counted)"
        )
    if status.unpriced:
        text += "; unpriced, not counted: " + ", ".join(status.unpriced)
    if status.other_currency:
        text += "; priced in another currency, not counted: " + ", ".join(status.other_currency)
    return text


def _with_recorded(
    budget: Budget,
    recorded: RecordedSpend,
    times_s: npt.NDArray[np.int64],
    spend: npt.NDArray[np.float64],
    by_workload: dict[str, float],
    other: tuple[str, ...],
) -> tuple[npt.NDArray[np.float64], tuple[str, ...]]:
    """``spend`` with its hours without metrics filled from the dataset's rows of those
    hours (an hour the dataset holds counts as measured, at what the budget's scope
    spent in it); ``by_workload`` gains those rows, ``other`` their other currencies."""
    if times_s.size == 0 or recorded.cost.size == 0:
        return spend, other
    slot = np.searchsorted(times_s, recorded.hour_end_s)
    slot = np.minimum(slot, max(times_s.size - 1, 0))
    rows = (times_s[slot] == recorded.hour_end_s) & np.isnan(spend)[slot]
    if not rows.any():
        return spend, other
    column = {"team": recorded.team, "namespace": recorded.namespace, "pool": recorded.pool}
    scoped = np.array([v == budget.value for v in column[budget.scope]], dtype=bool) & rows
    currency = np.array([c == budget.currency for c in recorded.currency], dtype=bool)
    counted = scoped & currency
    filled = spend.copy()
    held = np.zeros(times_s.size, dtype=bool)
    held[slot[rows]] = True
    amounts = np.bincount(slot[counted], weights=recorded.cost[counted], minlength=times_s.size)
    filled[held] = amounts[held]
    for k in np.flatnonzero(counted).tolist():
        _add(by_workload, recorded.workload[k] or "(unallocated)", float(recorded.cost[k]))
    foreign = sorted(
        {f"recorded spend in {recorded.currency[k]}" for k in np.flatnonzero(scoped & ~currency)}
    )
    return filled, (*other, *foreign)


def _matches(budget: Budget, holder: GpuHolder) -> bool:
    return (holder.team if budget.scope == "team" else holder.namespace) == budget.value


def _fallback_share(budget: Budget, ctx: GpuContext) -> float:
    """The part of a GPU's held share that is ``budget``'s, by its current holders."""
    total = sum(h.share for h in ctx.holders)
    if total <= 0:
        return 0.0
    return sum(h.share for h in ctx.holders if _matches(budget, h)) / total


def _label(holder: GpuHolder) -> str:
    return holder.workload or f"Pod/{holder.namespace}/{holder.pod}"


def _slot(t: int, zone: ZoneInfo) -> tuple[int, int]:
    """(weekday, hour) of the hour ending at ``t``, in the budget's time zone."""
    start = datetime.fromtimestamp(t - HOUR_S, tz=zone)
    return start.weekday(), start.hour


def _add(totals: dict[str, float], key: str, amount: float) -> None:
    if amount > 0:
        totals[key] = totals.get(key, 0.0) + amount


def _name(ctx: GpuContext) -> str:
    return f"GPU {ctx.gpu_shown} on {ctx.node_shown} ({ctx.model or 'unknown model'})"


def _money(amount: float) -> Decimal:
    return Decimal(repr(amount)).quantize(CENT)


def _amount(amount: Decimal, currency: str) -> str:
    return f"{amount:,.2f} {currency}"


def prices_of(
    contexts: Sequence[GpuContext], by_gpu: Mapping[tuple[str, str], Price]
) -> list[Price | None]:
    """The price of a GPU-hour of each context, from the cycle's cost lines."""
    return [by_gpu.get((c.node_name, c.device.uuid if c.device else "")) for c in contexts]
