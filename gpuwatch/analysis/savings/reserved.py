"""Lever 6, commit the steady baseline: on-demand GPUs in use every hour, bought reserved.

After the levers before it took their GPU-hours (released, shared away, moved to
another GPU type, removed with their node, moved to spot), per GPU model:

    in use(h) = on-demand GPUs (parts of cards) held in hour h and not claimed
    baseline  = percentile(p, in use over the lookback's hours with data)
    monthly   = baseline x (on-demand - reserved price) x 720

Who held a GPU in an hour is the exporter's pod label, or the cluster's allocations
where it labels none (cGPU, MIG). Cash: the capacity type changes. It is a purchase
decision, made outside gpuwatch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal

import numpy as np

from gpuwatch.analysis.savings.base import Claims, Draft, SavingsInputs, measured, monthly
from gpuwatch.model.savings import LOW
from gpuwatch.model.savings import SavingExcluded as Excluded

KIND = "reserved"


def levers(inputs: SavingsInputs, claims: Claims) -> Iterator[Draft | Excluded]:
    """The lever's drafts (and why not, where not), one at a time: the plan takes each
    draft's claims before the next is drawn."""
    use = inputs.use
    if use.hours == 0:
        return
    settings = inputs.settings.reserved
    models: dict[str, list[int]] = defaultdict(list)
    for i, ctx in enumerate(inputs.contexts):
        if ctx.capacity_type == "on-demand" and ctx.device is not None:
            entry = inputs.book.model(ctx.model)
            models[entry.name if entry else (ctx.model or "")].append(i)
    for model, rows in sorted(models.items()):
        scope = {"team": None, "pool": None, "workload": model}
        fractions = np.array([inputs.contexts[r].gpu_fraction for r in rows])
        held = (use.held[rows] > 0) & ~claims.freed[rows]
        in_use = (held * fractions[:, None]).sum(axis=0)
        sampled = use.sampled[rows].any(axis=0)
        observed = in_use[sampled]
        if observed.size == 0:
            continue
        baseline = float(np.floor(np.percentile(observed, settings.percentile) * 1000) / 1000)
        sample = inputs.contexts[rows[0]]
        on_demand, reserved = inputs.price(sample), inputs.price(sample, "reserved")
        if on_demand is None or reserved is None or on_demand.currency != reserved.currency:
            yield (Excluded(KIND, scope, f"no on-demand and reserved price for {model}"))
            continue
        if baseline <= 0:
            yield (
                Excluded(
                    KIND,
                    scope,
                    f"no steady baseline: in {settings.percentile:g} % of the lookback's hours "
                    "no on-demand GPU of it was in use (after the levers before this one)",
                )
            )
            continue
        hours = int(observed.size)
        confidence, short = measured(LOW, hours, use.lookback_hours)
        per_hour = (on_demand.per_gpu_hour - reserved.per_gpu_hour) * Decimal(str(baseline))
        yield (
            Draft(
                kind=KIND,
                scope=scope,
                value=monthly(per_hour),
                currency=on_demand.currency,
                formula=f"p{settings.percentile:g} of the lookback's hourly on-demand GPUs in "
                "use (after the levers before this one) x (on_demand - reserved) x 720",
                inputs={
                    "model": model,
                    "on_demand_gpus": len(rows),
                    "hours_with_data": hours,
                    "percentile": settings.percentile,
                    "baseline_gpus": baseline,
                    "hourly_in_use_min": float(observed.min()),
                    "hourly_in_use_max": float(observed.max()),
                    "on_demand_per_gpu_hour": float(on_demand.per_gpu_hour),
                    "reserved_per_gpu_hour": float(reserved.per_gpu_hour),
                    "hours_per_month": 720,
                },
                assumptions=(
                    "the lookback's baseline holds for the reservation's term",
                    *short,
                ),
                confidence=confidence,
                action=f"reserve {baseline:g} {model} GPUs (reserved instances or a savings plan)",
                hours_counted=hours,
            )
        )
