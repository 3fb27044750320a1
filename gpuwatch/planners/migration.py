"""Plan checkpoint-and-migrate of training jobs from on-demand to spot capacity.

A job is a candidate when it opted in (``gpuwatch.io/migrate-to-spot: "true"`` on the
job or its pods) and the savings engine found a spot saving for it. Each guard can
refuse it, and the refusal is recorded:

- a checkpoint younger than ``checkpoint_max_age`` and not in the future (the annotation
  ``gpuwatch.io/last-checkpoint``, RFC 3339 or unix seconds, or the reference job's
  ``gpuwatch_train_last_checkpoint_timestamp_seconds`` metric): what a move can lose;
- a saving of at least ``min_saving_monthly``;
- a spot pool with the same GPU model and room for all the job's GPUs, the room of the
  jobs planned before it in this cycle taken off;
- no pod of the job protected from eviction (``karpenter.sh/do-not-disrupt``,
  ``cluster-autoscaler.kubernetes.io/safe-to-evict: "false"``);
- at most ``max_per_cycle`` moves at a time, moves still in progress counted;
- writes only when ``dry_run`` is off, the kill switch reads ``true`` and the data is
  live.

A job already being moved (its ``gpuwatch.io/migration-key``) is left to the follow-up.
The plan carries what the actuator patches into the job's pod templates: the target
pool's node selector and tolerations for its spot taints. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.feasibility import (
    evictable_or_why,
    pending_for,
    spot_pools,
    spot_target,
)
from gpuwatch.analysis.pricing import PriceBook
from gpuwatch.config.settings import ActionsSettings
from gpuwatch.model.actions import Action, ActionStatus
from gpuwatch.model.cluster import ClusterState, Controller, Pod
from gpuwatch.model.durations import format_duration
from gpuwatch.model.savings import Saving
from gpuwatch.model.tenant import LAST_CHECKPOINT, MIGRATION_KEY, flag
from gpuwatch.planners.freshness import Freshness

KIND = "migrate_to_spot"
CLOCK_SKEW_S = 60
"""How far ahead of the cycle a checkpoint time may be before it is not believed."""


@dataclass(frozen=True)
class MigrationInputs:
    at: datetime
    savings: Sequence[Saving]
    contexts: Sequence[GpuContext]
    cluster: ClusterState
    settings: ActionsSettings
    pool_label: str
    dry_run: bool
    kill_switch_on: bool
    checkpoint_times: Mapping[str, datetime] = field(default_factory=dict)
    """Workload -> newest checkpoint, from the training job's metric where scraped."""
    progress: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """Workload -> (current step, newest checkpoint's step), from the same metrics."""
    freshness: Freshness | None = None
    """Whether the data is live; None for a read-only analysis (nothing is written)."""
    book: PriceBook | None = None
    """Which GPU models the price book declares equivalent (None: the same model only)."""


def plan_migrations(inputs: MigrationInputs) -> list[Action]:
    settings = inputs.settings.migration
    controllers = {(c.kind, c.namespace, c.name): c for c in inputs.cluster.controllers}
    pools = spot_pools(inputs.contexts)
    pending = pending_for(inputs.cluster.pods)
    moving = sum(1 for c in inputs.cluster.controllers if MIGRATION_KEY.get(c.annotations))
    # Each GPU's contexts by UUID, in their order: one pass, not one per saving.
    by_uuid: dict[str, list[tuple[int, GpuContext]]] = {}
    for i, ctx in enumerate(inputs.contexts):
        if ctx.device:
            by_uuid.setdefault(ctx.device.uuid, []).append((i, ctx))
    # Each job's pods by namespace and owner name: one pass, not one per saving.
    pods_of: dict[tuple[str, str], list[Pod]] = {}
    for pod in inputs.cluster.pods:
        if pod.owner is not None:
            pods_of.setdefault((pod.namespace, pod.owner.name), []).append(pod)
    actions = []
    for saving in inputs.savings:
        workload = saving.scope.get("workload") or ""
        if saving.kind != "spot" or workload.count("/") != 2:
            continue
        kind, namespace, name = workload.split("/")
        controller = controllers.get((kind, namespace, name))
        if controller is not None and MIGRATION_KEY.get(controller.annotations):
            continue  # being moved: the follow-up confirms it or moves it back
        pods = pods_of.get((namespace, name), [])  # a PyTorchJob's and a Job's pods: owned by it
        annotations = _annotations(controller, pods)
        if flag(settings.opt_in_annotation).get(annotations) is not True:
            continue
        gpus = float(saving.inputs.get("gpus", 0))
        job_gpus = [
            ctx for _, ctx in sorted(p for u in set(saving.gpu_uuids) for p in by_uuid.get(u, ()))
        ]
        model = next((c.model for c in job_gpus), None)
        target = spot_target(pools, model, gpus, pending, inputs.book)
        pool = target.pool.pool if target.pool else None
        tolerations = target.pool.tolerations if target.pool else []
        checkpoint, reason = _checkpoint(inputs, workload, annotations)
        reason = reason or target.refusal or _refusal(inputs, saving, pods, moving)
        if not reason and not inputs.dry_run:
            reason = _write_gate(inputs, job_gpus)
        if not reason and target.pool is not None:
            moving += 1
            target.pool.free -= math.ceil(gpus)  # the next job sees what is left
        actions.append(
            Action(
                kind=KIND,
                target=workload,
                status=ActionStatus.REFUSED if reason else ActionStatus.PLANNED,
                reason=reason
                or f"checkpoint is fresh; saves {saving.monthly} "
                f"{saving.currency} per 30 days on {pool}",
                key=f"{KIND}:{workload}",
                dry_run=inputs.dry_run,
                pool=pool,
                mechanism=kind,
                details={
                    "gpus": gpus,
                    "node_selector": {inputs.pool_label: pool} if pool else {},
                    "tolerations": tolerations,
                    "monthly_saving": float(saving.monthly),
                    "checkpoint_at": checkpoint.isoformat() if checkpoint else None,
                    **(
                        {
                            "step_at_signal": inputs.progress[workload][0],
                            "checkpoint_step": inputs.progress[workload][1],
                        }
                        if workload in inputs.progress
                        else {}
                    ),
                },
            )
        )
    return actions


def _refusal(inputs: MigrationInputs, saving: Saving, pods: Sequence[Pod], moving: int) -> str:
    """The guards after the checkpoint's and the spot pool's; empty if none refuses."""
    settings = inputs.settings.migration
    if float(saving.monthly) < settings.min_saving_monthly:
        return (
            f"saving {saving.monthly} {saving.currency} per 30 days is below "
            f"{settings.min_saving_monthly:g}"
        )
    blocked = next(
        (why for pod in pods if (why := evictable_or_why(pod, None, for_removal=False))), ""
    )
    if blocked:
        return blocked
    if moving >= settings.max_per_cycle:
        return (
            f"budget: at most {settings.max_per_cycle} jobs moved at a time "
            f"(actions.migration.max_per_cycle), {moving} in progress or planned"
        )
    return ""


def _write_gate(inputs: MigrationInputs, gpus: Sequence[GpuContext]) -> str:
    if not inputs.kill_switch_on:
        return f"kill switch {inputs.settings.kill_switch} is not 'true'"
    if inputs.freshness is None:
        return "no clock reading: nothing is written"
    return inputs.freshness.refusal_for(gpus)


def _checkpoint(
    inputs: MigrationInputs, workload: str, annotations: Mapping[str, str]
) -> tuple[datetime | None, str]:
    """The job's newest checkpoint, and why it does not allow a move (empty if it does)."""
    limit = inputs.settings.migration.checkpoint_max_age_s
    checkpoint = inputs.checkpoint_times.get(workload) or LAST_CHECKPOINT.get(annotations)
    if checkpoint is None:
        problem = LAST_CHECKPOINT.problem(annotations)
        if problem is not None:
            return None, f"unreadable checkpoint time: {problem}"
        return None, (f"no checkpoint time: annotate {LAST_CHECKPOINT.key} or expose the metric")
    age_s = (inputs.at - checkpoint).total_seconds()
    if checkpoint > inputs.at + timedelta(seconds=CLOCK_SKEW_S):
        return checkpoint, (
            f"checkpoint time {checkpoint.isoformat()} is {format_duration(-age_s)} in the "
            "future: not believed"
        )
    if age_s > limit:
        return checkpoint, (
            f"newest checkpoint is {format_duration(age_s)} old (limit {format_duration(limit)})"
        )
    return checkpoint, ""


def _annotations(controller: Controller | None, pods: Sequence[Pod]) -> dict[str, str]:
    """The job's annotations, then its pods' (a PyTorchJob's pods carry the template's)."""
    merged: dict[str, str] = {}
    for pod in pods:
        merged.update(pod.annotations)
    if controller is not None:
        merged.update(controller.annotations)
    return merged
