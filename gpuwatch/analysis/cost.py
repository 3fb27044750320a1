"""Price every GPU-hour of a window and allocate it to the pods that held it.

For each GPU: capacity hours (the window, or since the node joined; for a MIG instance
its share of the card's), its price (the book, by model, capacity type, pool and node
labels), its measured utilization (DCGM, not requests). Each holding pod gets ``share x
hours it ran in the window`` of it; what nobody requested is the GPU's unallocated
remainder, and what no MIG instance covers is its card's. Line items are rounded to
the cent and every total is a sum of line items, so allocated + unallocated = capacity
exactly. Idle cost is cost x (1 - measured utilization).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.mig import Partitioned
from gpuwatch.analysis.pricing import PriceBook
from gpuwatch.model.cluster import Pod
from gpuwatch.model.cost import CostGroup, CostLine, CostReport, CostTotal, Price, money
from gpuwatch.model.metrics import FloatArray

UNALLOCATED = "(unallocated)"
DIMENSIONS = ("team", "pool", "workload", "model", "capacity_type")


def allocate_cost(
    contexts: Sequence[GpuContext],
    util_avg: FloatArray,
    pods: Sequence[Pod],
    book: PriceBook,
    at: datetime,
    window_s: int,
    partitioned: Sequence[Partitioned] = (),
) -> CostReport:
    """The cost report of the window ``(at - window_s, at]``.

    ``util_avg[i]`` is the measured utilization of ``contexts[i].device`` over the
    window (NaN without data); contexts past ``len(util_avg)`` have no metrics.
    ``partitioned``: MIG-enabled GPUs with the share their instances leave uncovered.
    """
    start = at - timedelta(seconds=window_s)
    started = {(p.namespace, p.name): p.started_at for p in pods}
    lines: list[CostLine] = []
    unpriced: list[dict[str, str | None]] = []
    # GPUs on one node share its price: look each node's models up once.
    prices: dict[tuple[str | None, str, str | None, str, bool], tuple[Price | None, str]] = {}
    for i, ctx in enumerate(contexts):
        capacity_from = _capacity_from(ctx, start)
        capacity_h = max((at - capacity_from).total_seconds(), 0.0) / 3600.0 * ctx.gpu_fraction
        usage = float(util_avg[i]) if i < len(util_avg) and not np.isnan(util_avg[i]) else None
        key = (ctx.model, ctx.capacity_type, ctx.pool, ctx.node_name, ctx.node is None)
        if key not in prices:
            prices[key] = _price(ctx, book)
        price, reason = prices[key]
        if price is None:
            unpriced.append(
                {
                    "gpu_uuid": ctx.device.uuid if ctx.device else None,
                    "node": ctx.node_name,
                    "model": ctx.model,
                    "capacity_type": ctx.capacity_type,
                    "reason": reason,
                }
            )
        held_h = 0.0
        for holder in ctx.holders:
            pod_start = started.get((holder.namespace, holder.pod))
            ran_from = max(capacity_from, pod_start) if pod_start is not None else capacity_from
            hours = max((at - ran_from).total_seconds(), 0.0) / 3600.0 * holder.share
            hours *= ctx.gpu_fraction
            hours = min(hours, capacity_h - held_h)
            held_h += hours
            lines.append(
                _line(
                    ctx,
                    hours,
                    holder.share,
                    usage,
                    price,
                    holder.namespace,
                    holder.pod,
                    holder.workload,
                    holder.team,
                )
            )
        rest_h = max(capacity_h - held_h, 0.0)
        if rest_h > 1e-12 or not ctx.holders:
            lines.append(_line(ctx, rest_h, 0.0, usage, price, None, None, None, None))
    for card in partitioned:
        # The share of a MIG-enabled GPU no instance covers: paid for, usable by nobody.
        ctx = card.context
        hours = max((at - _capacity_from(ctx, start)).total_seconds(), 0.0) / 3600.0
        price, _ = _price(ctx, book)
        lines.append(_line(ctx, hours * card.remainder, 0.0, None, price, None, None, None, None))
    return CostReport(
        window_s=window_s,
        lines=tuple(lines),
        totals=_totals(lines),
        groups=_groups(lines, window_s),
        unpriced=tuple(unpriced),
    )


def _capacity_from(ctx: GpuContext, start: datetime) -> datetime:
    """When the GPU's capacity counts from: the window's start, or the node's creation."""
    created = ctx.node.created_at if ctx.node is not None else None
    return max(start, created) if created is not None else start


def _price(ctx: GpuContext, book: PriceBook) -> tuple[Price | None, str]:
    """The price of one of the GPU's GPU-hours, or None and why there is none."""
    if ctx.node is None:
        return None, (
            f"node {ctx.node_name or '(none named)'} is not in the cluster state: its "
            "capacity type, pool and labels are unknown"
        )
    return book.price(ctx.model, ctx.capacity_type, ctx.pool, ctx.node.labels, ctx.node_name)


def _line(
    ctx: GpuContext,
    hours: float,
    share: float,
    usage: float | None,
    price: Price | None,
    namespace: str | None,
    pod: str | None,
    workload: str | None,
    team: str | None,
) -> CostLine:
    cost = money(Decimal(str(hours)) * price.per_gpu_hour) if price is not None else None
    idle = None
    if cost is not None and usage is not None:
        idle = money(cost * (Decimal(1) - Decimal(str(min(max(usage, 0.0), 1.0)))))
    return CostLine(
        gpu_uuid=ctx.device.uuid if ctx.device else None,
        node=ctx.node_name,
        pool=ctx.pool,
        model=ctx.model,
        capacity_type=ctx.capacity_type,
        namespace=namespace,
        pod=pod,
        workload=workload,
        team=team,
        gpu_hours=hours,
        request_avg=share,
        usage_avg=usage,
        price=price,
        cost=cost,
        idle_cost=idle,
    )


def _keys(lines: Sequence[CostLine], allocated: Sequence[bool], dimension: str) -> list[str]:
    """Each line's key along ``dimension`` (``allocated``: each line's ``allocated``)."""
    if dimension == "team":
        return [line.team or UNALLOCATED for line in lines]
    if dimension == "workload":
        return [
            (line.workload or f"Pod/{line.namespace}/{line.pod}") if held else UNALLOCATED
            for line, held in zip(lines, allocated, strict=True)
        ]
    if dimension == "pool":
        return [line.pool or "(no pool)" for line in lines]
    if dimension == "model":
        return [line.model or "(unknown model)" for line in lines]
    return [line.capacity_type for line in lines]


def _groups(lines: Sequence[CostLine], window_s: int) -> dict[str, tuple[CostGroup, ...]]:
    """Per dimension, the priced lines' figures by key and currency: each line's fields
    read once, then every bucket's sums over its members in the lines' order."""
    priced = [line for line in lines if line.price is not None]
    hours = [line.gpu_hours for line in priced]
    usage = [line.usage_avg for line in priced]
    allocated = [line.allocated for line in priced]
    cost = [line.cost or Decimal(0) for line in priced]
    idle = [line.idle_cost or Decimal(0) for line in priced]
    currency = [line.price.currency for line in priced]  # type: ignore[union-attr]
    out = {}
    for dimension in DIMENSIONS:
        buckets: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, key in enumerate(_keys(priced, allocated, dimension)):
            buckets[(key, currency[i])].append(i)
        groups = []
        for (key, money_in), members in buckets.items():
            measured = [i for i in members if usage[i] is not None and hours[i] > 0]
            weight = sum([hours[i] for i in measured])
            groups.append(
                CostGroup(
                    dimension=dimension,
                    key=key,
                    currency=money_in,
                    gpu_hours=sum([hours[i] for i in members]),
                    cost=sum([cost[i] for i in members], Decimal(0)),
                    idle_cost=sum([idle[i] for i in members], Decimal(0)),
                    request_avg=sum([hours[i] for i in members if allocated[i]])
                    / (window_s / 3600.0)
                    if window_s
                    else 0.0,
                    usage_avg=sum([hours[i] * (usage[i] or 0.0) for i in measured]) / weight
                    if weight
                    else None,
                )
            )
        groups.sort(key=lambda g: (g.currency, -g.cost, g.key))
        out[dimension] = tuple(groups)
    return out


def _totals(lines: Sequence[CostLine]) -> tuple[CostTotal, ...]:
    by_currency: dict[str, list[CostLine]] = defaultdict(list)
    for line in lines:
        if line.price is not None:
            by_currency[line.price.currency].append(line)
    totals = []
    for currency, members in sorted(by_currency.items()):
        allocated = sum((m.cost or Decimal(0) for m in members if m.allocated), Decimal(0))
        unallocated = sum((m.cost or Decimal(0) for m in members if not m.allocated), Decimal(0))
        totals.append(
            CostTotal(
                currency=currency,
                capacity_cost=allocated + unallocated,
                allocated_cost=allocated,
                unallocated_cost=unallocated,
                idle_cost=sum((m.idle_cost or Decimal(0) for m in members), Decimal(0)),
                gpu_hours=sum(m.gpu_hours for m in members),
            )
        )
    return tuple(totals)
