"""Plan checkpoint-and-migrate of training jobs from on-demand to spot capacity.

A job is a candidate when it opted in (``gpuwatch.io/migrate-to-spot: "true"`` on the
job or its pods) and the savings engine found a spot saving for it. Each guard can
refuse it, and the refusal is recorded:

- a checkpoint younger than ``checkpoint_max_age`` (the annotation
  ``gpuwatch.io/last-checkpoint``, RFC 3339 or unix seconds, or the reference job's
  ``gpuwatch_train_last_checkpoint_timestamp_seconds`` metric): what a move can lose;
- a saving of at least ``min_saving_monthly``;
- a spot pool with the same GPU model and room for all the job's GPUs;
- writes only when ``dry_run`` is off and the kill switch reads ``true``.

The plan carries what the actuator patches into the job's pod templates: the target
pool's node selector and tolerations for its spot taints. Pure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.pricing import normalize_model
from gpuwatch.config.settings import ActionsSettings
from gpuwatch.model.actions import Action, ActionStatus
from gpuwatch.model.cluster import ClusterState, Controller
from gpuwatch.model.cost import Saving
from gpuwatch.model.durations import format_duration, parse_instant

KIND = "migrate_to_spot"
LAST_CHECKPOINT_ANNOTATION = "gpuwatch.io/last-checkpoint"


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


def plan_migrations(inputs: MigrationInputs) -> list[Action]:
    settings = inputs.settings.migration
    controllers = {(c.kind, c.namespace, c.name): c for c in inputs.cluster.controllers}
    spot_room = _spot_room(inputs.contexts)
    actions = []
    for saving in inputs.savings:
        workload = saving.scope.get("workload") or ""
        if saving.kind != "spot" or workload.count("/") != 2:
            continue
        kind, namespace, name = workload.split("/")
        controller = controllers.get((kind, namespace, name))
        annotations = _annotations(controller, inputs.cluster, namespace, name)
        if annotations.get(settings.opt_in_annotation) != "true":
            continue
        gpus = float(saving.inputs.get("gpus", 0))
        model = _model_of(inputs.contexts, saving.gpu_uuids)
        checkpoint = inputs.checkpoint_times.get(workload) or _parse_time(
            annotations.get(LAST_CHECKPOINT_ANNOTATION)
        )
        pool, room, tolerations = _target(spot_room, model)
        reason = ""
        if checkpoint is None:
            reason = (
                f"no checkpoint time: annotate {LAST_CHECKPOINT_ANNOTATION} or expose the metric"
            )
        elif (inputs.at - checkpoint).total_seconds() > settings.checkpoint_max_age_s:
            age = format_duration((inputs.at - checkpoint).total_seconds())
            reason = (
                f"newest checkpoint is {age} old (limit "
                f"{format_duration(settings.checkpoint_max_age_s)})"
            )
        elif float(saving.monthly) < settings.min_saving_monthly:
            reason = (
                f"saving {saving.monthly} {saving.currency} per 30 days is below "
                f"{settings.min_saving_monthly:g}"
            )
        elif pool is None:
            reason = f"no spot pool with {model or 'the same GPU model'}"
        elif room < gpus:
            reason = f"spot pool {pool} has room for {room:g} of {gpus:g} GPUs"
        elif not inputs.dry_run and not inputs.kill_switch_on:
            reason = f"kill switch {inputs.settings.kill_switch} is not 'true'"
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


def _annotations(
    controller: Controller | None, cluster: ClusterState, namespace: str, name: str
) -> dict[str, str]:
    """The job's annotations, then its pods' (a PyTorchJob's pods carry the template's)."""
    merged: dict[str, str] = {}
    for pod in cluster.pods:
        if pod.namespace == namespace and pod.owner is not None and pod.owner.name == name:
            merged.update(pod.annotations)
    if controller is not None:
        merged.update(controller.annotations)
    return merged


def _model_of(contexts: Sequence[GpuContext], uuids: Sequence[str]) -> str | None:
    wanted = set(uuids)
    return next(
        (c.model for c in contexts if c.device is not None and c.device.uuid in wanted), None
    )


@dataclass
class _Pool:
    unallocated: int = 0
    tolerations: list[dict[str, str]] = field(default_factory=list)


def _spot_room(contexts: Sequence[GpuContext]) -> dict[tuple[str, str], _Pool]:
    """(model, pool) -> unallocated GPUs and the tolerations its nodes require."""
    pools: dict[tuple[str, str], _Pool] = defaultdict(_Pool)
    for ctx in contexts:
        if ctx.capacity_type != "spot" or not ctx.pool or ctx.node is None:
            continue
        entry = pools[(normalize_model(ctx.model or ""), ctx.pool)]
        entry.unallocated += 0 if ctx.holders else 1
        for taint in ctx.node.taints:
            toleration = {"key": taint.key, "operator": "Exists", "effect": taint.effect}
            if toleration not in entry.tolerations:
                entry.tolerations.append(toleration)
    return pools


def _target(
    pools: Mapping[tuple[str, str], _Pool], model: str | None
) -> tuple[str | None, float, list[dict[str, str]]]:
    """The same-model spot pool with the most room."""
    candidates = [
        (entry.unallocated, pool, entry.tolerations)
        for (pool_model, pool), entry in pools.items()
        if model and pool_model == normalize_model(model)
    ]
    if not candidates:
        return None, 0.0, []
    room, pool, tolerations = max(candidates)
    return pool, float(room), tolerations


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromtimestamp(float(text), tz=UTC)
    except ValueError:
        pass
    try:
        return parse_instant(text)
    except ValueError:
        return None
