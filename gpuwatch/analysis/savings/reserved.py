"""Reserved capacity: the steady baseline of on-demand GPUs in use, bought reserved.

    baseline = percentile(p, hourly on-demand GPUs of the model held by a pod) over the
               reserved window
    claimed  = on-demand GPUs of the model that other savings move away (spot, idle
               release, sharing, scale-down): not counted twice
    monthly  = max(baseline - claimed, 0) x (on-demand - reserved price) x 720

A GPU is in use in an hour when a pod held it (the exporter's pod label). Shared (cGPU)
GPUs carry no pod label and count as not in use, so the baseline errs low.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal

import numpy as np

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.savings.base import SavingsInputs, monthly
from gpuwatch.model.cost import money
from gpuwatch.model.savings import Saving, SavingExcluded

KIND = "reserved"


def compute(
    inputs: SavingsInputs, others: Sequence[Saving]
) -> tuple[list[Saving], list[SavingExcluded]]:
    history = inputs.attached_hourly
    if history is None or history.times_s.size == 0:
        return [], []
    settings = inputs.settings.reserved
    by_uuid: dict[str, GpuContext] = {
        c.device.uuid: c for c in inputs.contexts if c.device is not None
    }
    attached = next(iter(history.values.values()))
    models: dict[str, list[int]] = defaultdict(list)
    for row, device in enumerate(history.devices):
        ctx = by_uuid.get(device.uuid)
        if ctx is not None and ctx.capacity_type == "on-demand":
            entry = inputs.book.model(ctx.model)
            models[entry.name if entry else (ctx.model or "")].append(row)
    claimed_uuids = {u for s in others for u in s.gpu_uuids}
    savings, excluded = [], []
    for model, rows in sorted(models.items()):
        hourly = np.nansum(attached[rows] > 0, axis=0)
        observed = hourly[~np.all(np.isnan(attached[rows]), axis=0)]
        scope = {"team": None, "pool": None, "workload": model}
        if observed.size == 0:
            continue
        baseline = int(np.floor(np.percentile(observed, settings.percentile)))
        sample = by_uuid[history.devices[rows[0]].uuid]
        # Only GPUs in use now are in the baseline: unallocated ones that scale-down
        # claims were never part of it.
        claimed = sum(
            1
            for r in rows
            if history.devices[r].uuid in claimed_uuids and by_uuid[history.devices[r].uuid].holders
        )
        reservable = max(baseline - claimed, 0)
        on_demand, reserved = inputs.price(sample), inputs.price(sample, "reserved")
        if on_demand is None or reserved is None or on_demand.currency != reserved.currency:
            excluded.append(
                SavingExcluded(KIND, scope, f"no on-demand and reserved price for {model}")
            )
            continue
        if reservable <= 0:
            excluded.append(
                SavingExcluded(
                    KIND,
                    scope,
                    f"no steady baseline left (baseline {baseline}, "
                    f"{claimed} GPUs claimed by other savings)",
                )
            )
            continue
        per_hour = (on_demand.per_gpu_hour - reserved.per_gpu_hour) * Decimal(reservable)
        savings.append(
            Saving(
                kind=KIND,
                scope=scope,
                monthly=money(monthly(per_hour)),
                currency=on_demand.currency,
                formula="max(p{percentile} of hourly GPUs in use - claimed, 0) x "
                "(on_demand - reserved) x 720".format(percentile=f"{settings.percentile:g}"),
                inputs={
                    "model": model,
                    "on_demand_gpus": len(rows),
                    "hours_observed": int(observed.size),
                    "percentile": settings.percentile,
                    "baseline_gpus": baseline,
                    "claimed_by_other_savings": claimed,
                    "reservable_gpus": reservable,
                    "hourly_in_use_min": int(observed.min()),
                    "hourly_in_use_max": int(observed.max()),
                    "on_demand_per_gpu_hour": float(on_demand.per_gpu_hour),
                    "reserved_per_gpu_hour": float(reserved.per_gpu_hour),
                    "window_s": settings.window_s,
                    "hours_per_month": 720,
                },
                assumptions=(
                    "the baseline of the window holds for the reservation's term",
                    "GPUs shared through cGPU carry no pod label and count as not in use",
                ),
                confidence="medium" if observed.size >= 24 * 7 else "low",
                action=f"reserve {reservable} {model} GPUs (reserved instances or a savings plan)",
            )
        )
    return savings, excluded
