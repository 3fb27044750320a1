"""Lever 5, move to spot: fault-tolerant training on on-demand capacity, on spot instead.

    per GPU-hour = (on-demand - spot) - preemptions/h x (I/2 + R)/3600 x spot
    monthly      = the job's held GPU-hours over the lookback x per GPU-hour x 720 / hours

I is the checkpoint interval (half of it is lost, on average, per preemption) and R the
restart time; the lost time is rework paid at the spot price. Only jobs that checkpoint
(``gpuwatch.io/checkpoint: "true"`` on the pod or its owner) qualify. Cash: the job's
capacity type changes. Feasible only as the migration planner would take it (one check,
``gpuwatch.analysis.feasibility``): a spot pool of the same or an equivalent GPU model
with room for the job (what the jobs before it in the plan took is gone), nothing of its
size pending there, and the job opted in to moves. Otherwise blocked, with what would
unblock it.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.feasibility import pending_for, spot_target
from gpuwatch.analysis.savings.base import Claims, Draft, SavingsInputs, measured
from gpuwatch.model.cluster import Pod
from gpuwatch.model.cost import money
from gpuwatch.model.findings import GpuHolder
from gpuwatch.model.savings import HIGH, MEDIUM
from gpuwatch.model.savings import SavingExcluded as Excluded
from gpuwatch.model.tenant import CHECKPOINT, CHECKPOINT_INTERVAL, flag

KIND = "spot"


def levers(inputs: SavingsInputs, claims: Claims) -> Iterator[Draft | Excluded]:
    """The lever's drafts (and why not, where not), one at a time: the plan takes each
    draft's claims before the next is drawn."""
    by_workload = inputs.holdings().by_workload("training", inputs.contexts, unless_on="spot")
    pending = pending_for(inputs.cluster.pods)
    for workload, held in sorted(by_workload.items()):
        found = _lever(inputs, claims, workload, held, pending)
        if found is not None:
            yield found


def _lever(
    inputs: SavingsInputs,
    claims: Claims,
    workload: str,
    held: list[tuple[int, GpuHolder]],
    pending: list[Pod],
) -> Draft | Excluded | None:
    use = inputs.use
    row, holder = held[0]
    ctx: GpuContext = inputs.contexts[row]
    pod = inputs.pods[(holder.namespace, holder.pod)]
    scope = {"team": holder.team, "pool": ctx.pool, "workload": workload}
    if inputs.tenant(pod, CHECKPOINT)[0] is not True:
        return Excluded(
            KIND,
            scope,
            "no checkpoints: a preemption would lose all progress. Checkpoint "
            f'periodically (see the reference training job) and annotate {CHECKPOINT.key}: "true"',
        )
    interval_s, interval_given = inputs.tenant(pod, CHECKPOINT_INTERVAL)
    if interval_given and interval_s is None:
        return Excluded(
            KIND,
            scope,
            f"{CHECKPOINT_INTERVAL.key} is unreadable (expected "
            f"{CHECKPOINT_INTERVAL.expected}): what a preemption loses is unknown",
        )
    on_demand, spot_price = inputs.price(ctx), inputs.price(ctx, "spot")
    if on_demand is None or spot_price is None or on_demand.currency != spot_price.currency:
        return Excluded(KIND, scope, f"no on-demand and spot price for {ctx.model}")
    settings = inputs.settings.spot
    assumed = interval_s is None
    interval = interval_s or settings.checkpoint_interval_s
    rows = sorted({r for r, _ in held})
    gpus = sum(h.share * inputs.contexts[r].gpu_fraction for r, h in held)
    target = spot_target(claims.spot, ctx.model, gpus, pending, inputs.book)
    pool = target.pool.pool if target.pool else None
    preemptions = settings.pools.get(pool or "", settings.preemptions_per_hour)
    rework = Decimal(str(preemptions)) * Decimal(interval / 2 + settings.restart_s) / 3600
    per_gpu_hour = on_demand.per_gpu_hour - spot_price.per_gpu_hour
    per_gpu_hour -= rework * spot_price.per_gpu_hour
    if per_gpu_hour <= 0:
        return Excluded(KIND, scope, "expected rework costs more than spot saves")
    masks = {r: (use.held[r] > 0) & ~claims.freed[r] for r in rows}
    gpu_hours = sum(
        float(use.held[r][m].sum()) * inputs.contexts[r].gpu_fraction for r, m in masks.items()
    )
    hours = use.observed(rows)
    if gpu_hours <= 0 or hours == 0:
        return None
    opted, _ = inputs.tenant(pod, flag(inputs.actions.migration.opt_in_annotation))
    blocked, unblock = target.refusal or None, target.unblock or None
    if blocked is None and opted is not True:
        blocked = f"{workload} did not opt in to moves"
        unblock = f'annotate {inputs.actions.migration.opt_in_annotation}: "true" on the job'
    confidence, short = measured(MEDIUM if assumed else HIGH, hours, use.lookback_hours)

    def claim(claims: Claims) -> None:
        for r, mask in masks.items():
            claims.freed[r] |= mask
        if target.pool is not None:
            target.pool.free -= gpus

    return Draft(
        kind=KIND,
        scope=scope,
        value=money(inputs.to_month(per_gpu_hour * Decimal(str(gpu_hours)), hours)),
        currency=on_demand.currency,
        formula="held GPU-hours over the lookback x ((on_demand - spot) - preemptions_per_hour "
        "x (checkpoint_interval_s / 2 + restart_s) / 3600 x spot) x 720 / hours with data",
        inputs={
            "gpus": gpus,
            "gpu_hours": round(gpu_hours, 3),
            "hours_with_data": hours,
            "on_demand_per_gpu_hour": float(on_demand.per_gpu_hour),
            "spot_per_gpu_hour": float(spot_price.per_gpu_hour),
            "preemptions_per_hour": preemptions,
            "spot_pool": pool,
            "spot_pool_free_gpus": target.pool.free if target.pool else 0.0,
            "checkpoint_interval_s": interval,
            "restart_s": settings.restart_s,
            "hours_per_month": 720,
            "price_sources": [on_demand.source, spot_price.source],
        },
        assumptions=(
            "the job resumes exactly from its newest checkpoint after a preemption",
            *((f"checkpoint interval {interval} s assumed (not annotated)",) if assumed else ()),
            *short,
        ),
        confidence=confidence,
        action=f"move {workload} to spot pool {pool}" if pool else f"run {workload} on spot",
        gpu_rows=tuple(rows),
        blocked=blocked,
        unblock=unblock,
        hours_counted=hours,
        claim=claim,
    )
