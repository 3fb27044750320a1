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
  (at least one node), never below the pool's ``floor``; nodes already on their way out
  (cordoned by gpuwatch) and nodes someone else cordoned count against the budget;
- writes happen only when ``dry_run`` is off, the kill switch reads ``true`` and the data
  is live (``planners.freshness``).

A node gpuwatch cordoned in an earlier cycle (its ``gpuwatch.io/action-key``) is never
planned again: its drain is resumed from the phase recorded on it
(``gpuwatch.io/action-phase``), or left alone once done, until the node is gone.
Annotations are read through ``gpuwatch.model.tenant``: a protective annotation
(``do-not-disrupt``, ``scale-down-disabled``, ``safe-to-evict``) with an unreadable value
protects.

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
from gpuwatch.analysis.feasibility import evictable_or_why
from gpuwatch.analysis.pools import pending_gpu_pods_for
from gpuwatch.config.settings import ActionsSettings, MaintenanceWindow, PoolActionPolicy
from gpuwatch.model.actions import Action, ActionStatus
from gpuwatch.model.cluster import ClusterState, Node, Pod
from gpuwatch.model.findings import Finding, Role
from gpuwatch.model.tenant import (
    ACTION_KEY,
    ACTION_PHASE,
    DO_NOT_DISRUPT,
    SCALE_DOWN_DISABLED,
    protects,
)
from gpuwatch.planners.freshness import Freshness

KIND = "scale_down_node"
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
    freshness: Freshness | None = None
    """Whether the data is live; None for a read-only analysis (nothing is written)."""


@dataclass
class _Candidate:
    node: Node
    pool: str
    gpus: list[GpuContext]
    evict: list[Pod]
    blockers: list[str]
    resume: bool = False
    """Cordoned by gpuwatch in an earlier cycle, its drain not finished: carry on."""


def key_for(node: str) -> str:
    """The key of the scale-down of ``node``, recorded on it while it is in flight."""
    return f"{KIND}:{node}"


def in_flight(node: Node) -> bool:
    """gpuwatch cordoned the node to remove it (it may be done, awaiting removal)."""
    return node.unschedulable and ACTION_KEY.get(node.annotations) == key_for(node.name)


def plan_scale_down(inputs: ScaleDownInputs) -> list[Action]:
    """One action per candidate node: planned, or refused with the guard that said no."""
    by_pool = _pools(inputs.contexts)
    firing = _firing(inputs.findings)
    pods_on = _pods_by_node(inputs.cluster.pods)
    actions: list[Action] = []
    non_empty_taken = False
    for pool, policy in sorted(inputs.settings.pools.items()):
        nodes = by_pool.get(pool, {})
        members = [gpus[0].node for _, gpus in sorted(nodes.items()) if gpus[0].node is not None]
        # Nodes on their way out count against the budget, whoever cordoned them.
        leaving = [n for n in members if n.unschedulable]
        resumed = [
            c
            for c in (_resumed(n, nodes[n.name], pool, pods_on, inputs) for n in leaving)
            if c is not None
        ]
        candidates = [
            c
            for c in (
                _candidate(node, nodes[node.name], pool, firing, pods_on, inputs)
                for node in members
                if not node.unschedulable
            )
            if c is not None
        ]
        for candidate in resumed:
            actions.append(
                _action(candidate, policy, inputs.dry_run, _write_gate(candidate, inputs))
            )
        if not candidates:
            continue
        closed = _pool_gate(pool, policy, nodes, inputs)
        # Empty nodes first: they go without disturbing anyone.
        candidates.sort(key=lambda c: (bool(c.evict), -len(c.gpus), c.node.name))
        staying = len(members) - len(leaving)
        budget = max(1, math.floor(policy.budget_percent / 100 * len(nodes)))
        taken = len(leaving)
        for candidate in candidates:
            reason = closed or (candidate.blockers[0] if candidate.blockers else "")
            if not reason and taken >= budget:
                reason = (
                    f"budget: at most {budget} of the pool's {len(nodes)} nodes at a time "
                    f"({policy.budget_percent:g} %), and {len(leaving)} already cordoned"
                    if leaving
                    else f"budget: at most {budget} of the pool's {len(nodes)} nodes per "
                    f"cycle ({policy.budget_percent:g} %)"
                )
            if not reason and staying - 1 < policy.floor:
                reason = f"floor: {pool} keeps at least {policy.floor} nodes"
            if not reason and candidate.evict and non_empty_taken:
                reason = "one non-empty node at a time: another is being drained this cycle"
            reason = reason or _write_gate(candidate, inputs)
            if not reason:
                taken += 1
                staying -= 1
                non_empty_taken = non_empty_taken or bool(candidate.evict)
            actions.append(_action(candidate, policy, inputs.dry_run, reason))
    return actions


def _write_gate(candidate: _Candidate, inputs: ScaleDownInputs) -> str:
    """Why a write may not happen now: the kill switch, or data that is not live."""
    if inputs.dry_run:
        return ""
    if not inputs.kill_switch_on:
        return f"kill switch {inputs.settings.kill_switch} is not 'true'"
    if inputs.freshness is None:
        return "no clock reading: nothing is written"
    if candidate.resume:  # the node's GPUs may have stopped reporting as it drains
        return inputs.freshness.refusal()
    return inputs.freshness.refusal_for(candidate.gpus)


def _resumed(
    node: Node,
    gpus: list[GpuContext],
    pool: str,
    pods_on: Mapping[str, list[Pod]],
    inputs: ScaleDownInputs,
) -> _Candidate | None:
    """A node gpuwatch cordoned earlier whose removal is not done: resume it. Pods that
    may not be evicted now keep a drain that has not got past them from going on (it
    is then rolled back); None for a node done or cordoned by someone else."""
    phase = ACTION_PHASE.get(node.annotations)
    if not in_flight(node) or phase == "done":
        return None
    evict, blockers = _evictable(node, pods_on, inputs.settings.reclaimable_annotation)
    if phase not in (None, "draining"):
        evict, blockers = [], []  # drained already: what is left is the node's removal
    return _Candidate(node, pool, gpus, evict, blockers, resume=True)


def _action(candidate: _Candidate, policy: PoolActionPolicy, dry_run: bool, refusal: str) -> Action:
    unallocated = sum(1 for g in candidate.gpus if not g.holders)
    if candidate.resume:
        phase = ACTION_PHASE.get(candidate.node.annotations) or "draining"
        why = (
            f"resuming the drain gpuwatch started (phase {phase})"
            if not candidate.blockers
            else f"rolling back the drain gpuwatch started: {candidate.blockers[0]}"
        )
    else:
        why = f"{unallocated} of {len(candidate.gpus)} GPUs unallocated" + (
            f", {len(candidate.evict)} idle opted-in pods to evict" if candidate.evict else ""
        )
    return Action(
        kind=KIND,
        target=f"Node/{candidate.node.name}",
        status=ActionStatus.REFUSED if refusal else ActionStatus.PLANNED,
        reason=refusal or why,
        key=key_for(candidate.node.name),
        dry_run=dry_run,
        pool=candidate.pool,
        mechanism=policy.mechanism,
        details={
            "gpus": len(candidate.gpus),
            "unallocated_gpus": unallocated,
            "evict": [f"{p.namespace}/{p.name}" for p in candidate.evict],
            **({"resume": True} if candidate.resume else {}),
            **({"rollback": True} if candidate.resume and candidate.blockers else {}),
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
    for protection in (SCALE_DOWN_DISABLED, DO_NOT_DISRUPT):
        if protects(protection, node.annotations):
            blockers.append(f"{protection.key}: {node.annotations[protection.key]!r} on the node")
    evict, pod_blockers = _evictable(node, pods_on, reclaim_key)
    return _Candidate(node, pool, gpus, evict, blockers + pod_blockers)


def _evictable(
    node: Node, pods_on: Mapping[str, list[Pod]], reclaim_key: str
) -> tuple[list[Pod], list[str]]:
    """The node's pods to evict, and why any may not be (DaemonSet and mirror pods stay,
    as in Cluster Autoscaler)."""
    evict: list[Pod] = []
    blockers: list[str] = []
    for pod in pods_on.get(node.name, []):
        if pod.owner is not None and pod.owner.kind == "DaemonSet":
            continue
        if MIRROR_POD in pod.annotations:
            continue
        why = evictable_or_why(pod, reclaim_key)
        if why:
            blockers.append(why)
        else:
            evict.append(pod)
    return evict, blockers


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
