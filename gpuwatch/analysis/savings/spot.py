"""Spot: fault-tolerant training on on-demand capacity, moved to spot.

    monthly = GPUs x 720 x [(on-demand - spot) - preemptions/h x (I/2 + R)/3600 x spot]

I is the checkpoint interval (half of it is lost, on average, per preemption) and R the
restart time; the lost time is rework paid at the spot price. Only jobs that checkpoint
(``gpuwatch.io/checkpoint: "true"`` on the pod or its owner) qualify: a job without
checkpoints would lose everything at each preemption, and the result says so.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.savings.base import SavingsInputs, monthly
from gpuwatch.model.cost import money
from gpuwatch.model.findings import GpuHolder
from gpuwatch.model.savings import Saving, SavingExcluded
from gpuwatch.model.tenant import CHECKPOINT, CHECKPOINT_INTERVAL

KIND = "spot"


def compute(inputs: SavingsInputs) -> tuple[list[Saving], list[SavingExcluded]]:
    by_workload: dict[str, list[tuple[GpuContext, GpuHolder]]] = defaultdict(list)
    for ctx in inputs.contexts:
        if ctx.capacity_type == "spot":
            continue
        for holder in ctx.holders:
            pod = inputs.pods.get((holder.namespace, holder.pod))
            if pod is not None and inputs.role(pod) == "training":
                by_workload[holder.workload or f"Pod/{holder.namespace}/{holder.pod}"].append(
                    (ctx, holder)
                )
    savings, excluded = [], []
    for workload, held in sorted(by_workload.items()):
        ctx, holder = held[0]
        pod = inputs.pods[(holder.namespace, holder.pod)]
        scope = {"team": holder.team, "pool": ctx.pool, "workload": workload}
        if inputs.tenant(pod, CHECKPOINT)[0] is not True:
            excluded.append(
                SavingExcluded(
                    KIND,
                    scope,
                    "no checkpoints: a preemption would lose all progress. Checkpoint "
                    "periodically (see the reference training job) and annotate "
                    f'{CHECKPOINT.key}: "true"',
                )
            )
            continue
        interval_s, interval_given = inputs.tenant(pod, CHECKPOINT_INTERVAL)
        if interval_given and interval_s is None:
            excluded.append(
                SavingExcluded(
                    KIND,
                    scope,
                    f"{CHECKPOINT_INTERVAL.key} is unreadable (expected "
                    f"{CHECKPOINT_INTERVAL.expected}): what a preemption loses is unknown",
                )
            )
            continue
        on_demand = inputs.price(ctx)
        spot_price = inputs.price(ctx, "spot")
        if on_demand is None or spot_price is None or on_demand.currency != spot_price.currency:
            excluded.append(
                SavingExcluded(KIND, scope, f"no on-demand and spot price for {ctx.model}")
            )
            continue
        settings = inputs.settings.spot
        assumed_interval = interval_s is None
        interval_s = interval_s or settings.checkpoint_interval_s
        target = _spot_pool(inputs, ctx)
        preemptions = settings.pools.get(target or "", settings.preemptions_per_hour)
        gpus = sum(h.share * c.gpu_fraction for c, h in held)
        rework_h = Decimal(str(preemptions)) * Decimal(interval_s / 2 + settings.restart_s)
        rework_h /= Decimal(3600)
        per_gpu_hour = (
            on_demand.per_gpu_hour - spot_price.per_gpu_hour - rework_h * spot_price.per_gpu_hour
        )
        if per_gpu_hour <= 0:
            excluded.append(
                SavingExcluded(KIND, scope, "expected rework costs more than spot saves")
            )
            continue
        amount = money(monthly(per_gpu_hour * Decimal(str(gpus))))
        savings.append(
            Saving(
                kind=KIND,
                scope=scope,
                monthly=amount,
                currency=on_demand.currency,
                formula="gpus x 720 x ((on_demand - spot) - preemptions_per_hour x "
                "(checkpoint_interval_s / 2 + restart_s) / 3600 x spot)",
                inputs={
                    "gpus": gpus,
                    "on_demand_per_gpu_hour": float(on_demand.per_gpu_hour),
                    "spot_per_gpu_hour": float(spot_price.per_gpu_hour),
                    "preemptions_per_hour": preemptions,
                    "spot_pool": target,
                    "checkpoint_interval_s": interval_s,
                    "restart_s": settings.restart_s,
                    "hours_per_month": 720,
                    "price_sources": [on_demand.source, spot_price.source],
                },
                assumptions=(
                    "the job resumes exactly from its newest checkpoint after a preemption",
                    "spot capacity of the same GPU model is available",
                    *(
                        (f"checkpoint interval {interval_s} s assumed (not annotated)",)
                        if assumed_interval
                        else ()
                    ),
                ),
                confidence="medium" if assumed_interval else "high",
                action=f"run {workload} on spot capacity (its checkpoints make it safe)",
                gpu_uuids=tuple(c.device.uuid for c, _ in held if c.device is not None),
            )
        )
    return savings, excluded


def _spot_pool(inputs: SavingsInputs, ctx: GpuContext) -> str | None:
    """A spot pool with the same GPU model, where the job would go."""
    model = inputs.book.model(ctx.model)
    for other in inputs.contexts:
        if other.capacity_type == "spot" and other.pool and inputs.book.model(other.model) is model:
            return other.pool
    return None
