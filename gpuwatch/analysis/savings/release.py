"""Lever 1, release: the hours a workload held GPUs and left them idle, given back.

For each workload the rule with role ``idle`` flags now, over the lookback:

    idle GPU-hours = sum over its GPUs and hours of (share held x the GPU's part of a card)
                     where it held the GPU and the hour's mean utilization was below the
                     idle threshold (hours without samples are unknown, never idle)
    monthly        = idle GPU-hours x price per GPU-hour x 720 / hours with data

Releasing GPUs frees capacity; a bill changes only where a node then goes (lever 4
counts that) or the pool is billed per GPU. So this is reclaimed capacity, cash only in
per-GPU pools. Pods annotated reclaimable gpuwatch can release itself (by scale-down);
other workloads need their owners to stop them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

from gpuwatch.analysis.savings.base import Claims, Draft, SavingsInputs, measured
from gpuwatch.model.cost import Price, money
from gpuwatch.model.findings import Role
from gpuwatch.model.savings import HIGH, LOW
from gpuwatch.model.savings import SavingExcluded as Excluded
from gpuwatch.model.tenant import flag

KIND = "release"


def levers(inputs: SavingsInputs, claims: Claims) -> Iterator[Draft | Excluded]:
    """The lever's drafts (and why not, where not), one at a time: the plan takes each
    draft's claims before the next is drawn."""
    use = inputs.use
    for found in inputs.once(_workloads):
        workload, rows, first = found.workload, found.rows, inputs.contexts[found.rows[0]]
        scope = {"team": found.team, "pool": first.pool, "workload": workload}
        if found.excluded:
            yield (Excluded(KIND, scope, found.excluded))
            continue
        prices, hours, reclaimable = found.prices, found.hours, found.reclaimable
        held_idle = inputs.once(_held_idle)
        masks, gpu_hours, value = {}, 0.0, Decimal(0)
        for row, price in zip(rows, prices, strict=True):
            ctx = inputs.contexts[row]
            idle = held_idle[row] & ~claims.freed[row]
            masks[row] = idle
            share = float(use.held[row][idle].sum()) * ctx.gpu_fraction
            gpu_hours += share
            value += price.per_gpu_hour * Decimal(str(share))  # type: ignore[union-attr]
        if gpu_hours <= 0:
            continue
        confidence, short = measured(HIGH if reclaimable else LOW, hours, use.lookback_hours)
        cash = inputs.per_gpu_billing(first.pool)
        monthly = money(inputs.to_month(value, hours))

        def claim(claims: Claims, masks: dict[int, np.ndarray] = masks, cash: bool = cash) -> None:
            for row, mask in masks.items():
                claims.freed[row] |= mask
                if cash:
                    claims.banked[row] |= mask

        yield (
            Draft(
                kind=KIND,
                scope=scope,
                value=monthly,
                currency=prices[0].currency,  # type: ignore[union-attr]
                formula="sum of idle held GPU-hours (hourly mean utilization below "
                f"{inputs.idle_threshold:g}) x price per GPU-hour x 720 / hours with data",
                inputs={
                    "gpus": len(rows),
                    "idle_gpu_hours": round(gpu_hours, 3),
                    "hours_with_data": hours,
                    "idle_threshold": inputs.idle_threshold,
                    "price_per_gpu_hour": float(prices[0].per_gpu_hour),  # type: ignore[union-attr]
                    "reclaimable": reclaimable,
                    "billing": "per-gpu" if cash else "per-node",
                    "hours_per_month": 720,
                },
                assumptions=(
                    "the lookback's idle hours repeat: releasing the GPUs then returns them",
                    "a bill changes only where a node goes (scale-down) or the pool is "
                    "billed per GPU"
                    if not cash
                    else "the pool is billed per GPU",
                    *short,
                ),
                confidence=confidence,
                action=f"release the GPUs of {workload} when it idles"
                + (" (annotated reclaimable: gpuwatch's scale-down may)" if reclaimable else ""),
                cash=cash,
                reclaimed_gpu_hours=float(inputs.to_month(gpu_hours, hours)),
                gpu_rows=tuple(rows),
                hours_counted=hours,
                claim=claim,
            )
        )


@dataclass(frozen=True)
class _Workload:
    """What the lever knows of a workload the idle rule flags before any claim."""

    workload: str
    rows: list[int]
    team: str | None
    excluded: str = ""
    """Why it has no saving, whatever the levers before it took (empty: none)."""
    prices: list[Price] = field(default_factory=list)
    hours: int = 0
    reclaimable: bool = False


def _workloads(inputs: SavingsInputs) -> list[_Workload]:
    """The workloads with GPUs the idle rule flags, by name, with their GPUs' rows,
    prices, hours with data and whether gpuwatch may reclaim them."""
    rows_of = {c.device.uuid: i for i, c in enumerate(inputs.contexts) if c.device is not None}
    workloads: dict[str, set[int]] = defaultdict(set)
    for finding in inputs.findings:
        row = rows_of.get(finding.gpu_uuid or "")
        if finding.role is Role.IDLE and row is not None:
            workloads[finding.workload or f"Pod/{finding.namespace}/{finding.pod}"].add(row)
    reclaimable_flag = flag(inputs.actions.reclaimable_annotation)
    found = []
    for workload, members in sorted(workloads.items()):
        rows = sorted(members)
        first = inputs.contexts[rows[0]]
        team = first.holders[0].team if first.holders else None
        prices = [inputs.price(inputs.contexts[r]) for r in rows]
        if any(p is None for p in prices) or len({p.currency for p in prices if p}) != 1:
            found.append(_Workload(workload, rows, team, f"no price for {first.model}"))
            continue
        hours = inputs.use.observed(rows)
        if hours == 0:
            found.append(_Workload(workload, rows, team, "no hourly history over the lookback"))
            continue
        pods = [
            inputs.pods.get((h.namespace, h.pod)) for r in rows for h in inputs.contexts[r].holders
        ]
        reclaimable = bool(pods) and all(
            p is not None and reclaimable_flag.get(p.annotations) for p in pods
        )
        found.append(_Workload(workload, rows, team, "", prices, hours, reclaimable))  # type: ignore[arg-type]
    return found


def _held_idle(inputs: SavingsInputs) -> np.ndarray:
    """Per GPU and hour: held, and used below the idle threshold (no samples: not idle)."""
    use = inputs.use
    with np.errstate(invalid="ignore"):
        return (use.held > 0) & (use.util < inputs.idle_threshold)
