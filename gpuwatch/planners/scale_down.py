"""Plan the scale-down of idle GPU pools, with the guards Cluster Autoscaler and Karpenter use.

A node is a candidate when every GPU on it was unallocated for the window of the rule
with role ``unallocated``, or held only by pods that opted in to reclamation and sat
idle by the rule with role ``idle`` (rules are found by role, never by id; each action
says which rules judged it). Then, in order, each guard can refuse it, and the refusal
is recorded:

- the pool is allowlisted (``actions.pools``) and inside a maintenance window;
- the pool did not grow within its cooldown, and no GPU pod is pending for it;
- no data gap on the node (a finding of the rule with role ``data_gap``, or a GPU the
  metrics lack): no action on data that is missing or stale;
- nothing on the node forbids it: ``cluster-autoscaler.kubernetes.io/scale-down-disabled``
  on the node, ``karpenter.sh/do-not-disrupt`` on the node or a pod,
  ``cluster-autoscaler.kubernetes.io/safe-to-evict: "false"``, a bare pod (no controller
  recreates it), local storage (emptyDir, hostPath) unless the pod is safe to evict;
  DaemonSet and mirror pods do not count, as in Cluster Autoscaler;
- at most one non-empty node per cycle, at most ``budget_percent`` of the pool per cycle
  (at least one node), never below the pool's ``floor``;
- writes happen only when ``dry_run`` is off and the kill switch reads ``true``.

Pure: the actuator does the writes (evictions through the Eviction API, never deletes).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.pools import pending_gpu_pods_for
from gpuwatch.config.settings import ActionsSettings, MaintenanceWindow, PoolActionPolicy
from gpuwatch.model.actions import Action, ActionStatus
from gpuwatch.model.cluster import ClusterState, Node, Pod, gpu_request_kind
from gpuwatch.model.findings import Finding, Role

KIND = "scale_down_node"
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
SCALE_DOWN_DISABLED = "cluster-autoscaler.kubernetes.io/scale-down-disabled"
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
MIRROR_POD = "kubernetes.io/config.mirror"
_HOLDING = frozenset({"Running", "Pending", "Unknown"})
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class ScaleDownInputs:
    at: datetime
    contexts: Sequence[GpuContext]
    cluster: ClusterState
    findings: Sequence[Finding]
    settings: ActionsSettings
    dry_run: bool
    kill_switch_on: bool
    """The kill switch read this cycle; False when it could not be read."""


@dataclass
class _Candidate:
    node: Node
    pool: str
    gpus: list[GpuContext]
    evict: list[Pod]
    blockers: list[str]


def plan_scale_down(inputs: ScaleDownInputs) -> list[Action]:
    """One action per candidate node: planned, or refused with the guard that said no."""
    by_pool = _pools(inputs.contexts)
    firing = _firing(inputs.findings)
    pods_on = _pods_by_node(inputs.cluster.pods)
    actions: list[Action] = []
    non_empty_taken = False
    for pool, policy in sorted(inputs.settings.pools.items()):
        nodes = by_pool.get(pool, {})
        candidates = [
            c
            for c in (
                _candidate(gpus[0].node, gpus, pool, firing, pods_on, inputs)
                for _, gpus in sorted(nodes.items())
                if gpus[0].node is not None
            )
            if c is not None
        ]
        if not candidates:
            continue
        closed = _pool_gate(pool, policy, nodes, inputs)
        # Empty nodes first: they go without disturbing anyone.
        candidates.sort(key=lambda c: (bool(c.evict), -len(c.gpus), c.node.name))
        staying = sum(
            1 for gpus in nodes.values() if gpus[0].node and not gpus[0].node.unschedulable
        )
        budget = max(1, math.floor(policy.budget_percent / 100 * len(nodes)))
        taken = 0
        for candidate in candidates:
            reason = closed or (candidate.blockers[0] if candidate.blockers else "")
            if not reason and taken >= budget:
                reason = (
                    f"budget: at most {budget} of the pool's {len(nodes)} nodes per cycle "
                    f"({policy.budget_percent:g} %)"
                )
            if not reason and staying - 1 < policy.floor:
                reason = f"floor: {pool} keeps at least {policy.floor} nodes"
            if not reason and candidate.evict and non_empty_taken:
                reason = "one non-empty node at a time: another is being drained this cycle"
            if not reason and not inputs.dry_run and not inputs.kill_switch_on:
                reason = f"kill switch {inputs.settings.kill_switch} is not 'true'"
            if not reason:
                taken += 1
                staying -= 1
                non_empty_taken = non_empty_taken or bool(candidate.evict)
            actions.append(_action(candidate, policy, inputs.dry_run, reason))
    return actions


def _action(candidate: _Candidate, policy: PoolActionPolicy, dry_run: bool, refusal: str) -> Action:
    unallocated = sum(1 for g in candidate.gpus if not g.holders)
    return Action(
        kind=KIND,
        target=f"Node/{candidate.node.name}",
        status=ActionStatus.REFUSED if refusal else ActionStatus.PLANNED,
        reason=refusal
        or (
            f"{unallocated} of {len(candidate.gpus)} GPUs unallocated"
            + (f", {len(candidate.evict)} idle opted-in pods to evict" if candidate.evict else "")
        ),
        key=f"{KIND}:{candidate.node.name}",
        dry_run=dry_run,
        pool=candidate.pool,
        mechanism=policy.mechanism,
        details={
            "gpus": len(candidate.gpus),
            "unallocated_gpus": unallocated,
            "evict": [f"{p.namespace}/{p.name}" for p in candidate.evict],
            **(
                {"machine_deployment": policy.machine_deployment}
                if policy.mechanism == "cluster-api"
                else {}
            ),
        },
    )


def _pools(contexts: Sequence[GpuContext]) -> dict[str, dict[str, list[GpuContext]]]:
    """Pool -> node name -> the node's GPUs."""
    pools: dict[str, dict[str, list[GpuContext]]] = defaultdict(lambda: defaultdict(list))
    for ctx in contexts:
        if ctx.node is not None and ctx.pool and ctx.in_gpu_pool:
            pools[ctx.pool][ctx.node_name].append(ctx)
    return pools


@dataclass
class _Firing:
    """What the findings of the roles the planner builds on say, per GPU or node."""

    unallocated: set[str] = field(default_factory=set)
    """UUIDs of GPUs the unallocated rule fired for."""
    idle: set[str] = field(default_factory=set)
    gap_nodes: set[str] = field(default_factory=set)


def _firing(findings: Sequence[Finding]) -> _Firing:
    firing = _Firing()
    for f in findings:
        if f.role is Role.UNALLOCATED:
            firing.unallocated.add(f.gpu_uuid or "")
        elif f.role is Role.IDLE:
            firing.idle.add(f.gpu_uuid or "")
        elif f.role is Role.DATA_GAP:
            firing.gap_nodes.add(f.node)
    return firing


def _pods_by_node(pods: Sequence[Pod]) -> dict[str, list[Pod]]:
    by_node: dict[str, list[Pod]] = defaultdict(list)
    for pod in pods:
        if pod.node_name and pod.phase in _HOLDING:
            by_node[pod.node_name].append(pod)
    return by_node


def _candidate(
    node: Node,
    gpus: list[GpuContext],
    pool: str,
    firing: _Firing,
    pods_on: Mapping[str, list[Pod]],
    inputs: ScaleDownInputs,
) -> _Candidate | None:
    reclaim_key = inputs.settings.reclaimable_annotation
    for gpu in gpus:
        uuid = gpu.device.uuid if gpu.device else ""
        if not gpu.holders:
            if uuid not in firing.unallocated:
                return None  # free, but not for long enough
        elif uuid not in firing.idle:
            return None  # a pod is using it
    blockers: list[str] = []
    if node.name in firing.gap_nodes or any(g.device is None for g in gpus):
        blockers.append("data gap: no action on a node whose metrics are missing or stale")
    if node.annotations.get(SCALE_DOWN_DISABLED) == "true":
        blockers.append(f'{SCALE_DOWN_DISABLED}: "true" on the node')
    if node.annotations.get(DO_NOT_DISRUPT) == "true":
        blockers.append(f'{DO_NOT_DISRUPT}: "true" on the node')
    evict: list[Pod] = []
    for pod in pods_on.get(node.name, []):
        if pod.owner is not None and pod.owner.kind == "DaemonSet":
            continue
        if MIRROR_POD in pod.annotations:
            continue
        name = f"{pod.namespace}/{pod.name}"
        if gpu_request_kind(pod.requests) and pod.annotations.get(reclaim_key) != "true":
            blockers.append(f"pod {name} holds GPUs and is not annotated {reclaim_key}")
        elif pod.annotations.get(DO_NOT_DISRUPT) == "true":
            blockers.append(f"pod {name}: {DO_NOT_DISRUPT}")
        elif pod.annotations.get(SAFE_TO_EVICT) == "false":
            blockers.append(f'pod {name}: {SAFE_TO_EVICT}: "false"')
        elif pod.owner is None:
            blockers.append(f"pod {name} is a bare pod: nothing would recreate it")
        elif pod.local_storage and pod.annotations.get(SAFE_TO_EVICT) != "true":
            blockers.append(f"pod {name} has local storage (emptyDir or hostPath)")
        else:
            evict.append(pod)
    return _Candidate(node, pool, gpus, evict, blockers)


def _pool_gate(
    pool: str,
    policy: PoolActionPolicy,
    nodes: Mapping[str, list[GpuContext]],
    inputs: ScaleDownInputs,
) -> str:
    windows = inputs.settings.maintenance_windows
    if windows and not any(in_window(w, inputs.at) for w in windows):
        return "outside the maintenance windows"
    members = [gpus[0].node for gpus in nodes.values() if gpus[0].node is not None]
    newest = max((n.created_at for n in members if n.created_at is not None), default=None)
    if newest is not None and inputs.at - newest < timedelta(seconds=policy.cooldown_s):
        minutes = int((inputs.at - newest).total_seconds() // 60)
        return f"cooldown: {pool} grew {minutes} min ago (cooldown {policy.cooldown_s // 60} min)"
    pending = pending_gpu_pods_for(inputs.cluster.pods, members[0] if members else None)
    if pending:
        return f"GPU pod {pending[0].namespace}/{pending[0].name} is pending and may need {pool}"
    return ""


def in_window(window: MaintenanceWindow, at: datetime) -> bool:
    """Whether ``at`` falls in the window (which may run past midnight)."""
    local = at.astimezone(ZoneInfo(window.timezone))
    start = time.fromisoformat(window.start)
    end = time.fromisoformat(window.end)
    now = local.time()
    today = _DAYS[local.weekday()]
    yesterday = _DAYS[(local.weekday() - 1) % 7]
    if start <= end:
        return today in window.days and start <= now < end
    # Past midnight: the evening part belongs to today, the morning part to yesterday.
    return (today in window.days and now >= start) or (yesterday in window.days and now < end)
