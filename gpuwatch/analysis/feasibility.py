"""Whether an action could be taken now: the checks the savings and the planners share.

A saving counts only when its action could be taken, and an action is planned only
where the saving said it could: both ask here, so that they can never disagree. Spot
capacity (a pool of the same GPU model, or one the price book declares equivalent, with
room and nothing of the job's size pending there), and whether a pod may be evicted
(the guards of Cluster Autoscaler and Karpenter). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.pricing import PriceBook, normalize_model
from gpuwatch.model.cluster import Node, Pod, gpu_request_kind, gpu_share
from gpuwatch.model.tenant import SAFE_TO_EVICT, eviction_protection, flag


@dataclass
class SpotPool:
    """One spot pool of one GPU model: its free GPUs and what its nodes require."""

    pool: str
    model: str
    free: float = 0.0
    tolerations: list[dict[str, str]] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)


def spot_pools(contexts: Sequence[GpuContext]) -> list[SpotPool]:
    """Every spot pool per GPU model, with its unallocated GPUs and the tolerations for
    its nodes' taints."""
    pools: dict[tuple[str, str], SpotPool] = {}
    seen: set[tuple[tuple[str, str], str]] = set()
    for ctx in contexts:
        if ctx.capacity_type != "spot" or not ctx.pool or ctx.node is None:
            continue
        key = (ctx.model or "", ctx.pool)
        entry = pools.setdefault(key, SpotPool(ctx.pool, ctx.model or ""))
        entry.free += 0.0 if ctx.holders else ctx.gpu_fraction
        if (key, ctx.node.name) in seen:
            continue  # the node's taints are in already
        seen.add((key, ctx.node.name))
        entry.nodes.append(ctx.node)
        for taint in ctx.node.taints:
            toleration = {"key": taint.key, "operator": "Exists", "effect": taint.effect}
            if toleration not in entry.tolerations:
                entry.tolerations.append(toleration)
    return sorted(pools.values(), key=lambda p: (p.pool, p.model))


@dataclass(frozen=True)
class SpotTarget:
    """Where a job of ``gpus`` GPUs of ``model`` would go on spot, or why nowhere."""

    pool: SpotPool | None
    refusal: str
    """Empty when the job fits; else why not, as a person reads it."""
    unblock: str
    """What would make it fit."""


def spot_target(
    pools: Sequence[SpotPool],
    model: str | None,
    gpus: float,
    pending: Iterable[Pod],
    book: PriceBook | None,
) -> SpotTarget:
    """The spot pool of the same (or an equivalent) model with the most room, if it has
    room for ``gpus`` and no GPU pod of that size or more waits for it."""
    same = [p for p in pools if model and _equivalent(book, p.model, model)]
    if not same:
        what = model or "the same GPU model"
        return SpotTarget(None, f"no spot pool with {what}", f"add a spot pool of {what}")
    best = max(same, key=lambda p: (p.free, p.pool))
    waiting = [
        pod
        for pod in pending
        if gpu_share(pod.requests) >= min(gpus, 1.0)
        and any(all(n.labels.get(k) == v for k, v in pod.node_selector.items()) for n in best.nodes)
    ]
    if waiting:
        pod = waiting[0]
        return SpotTarget(
            best,
            f"GPU pod {pod.namespace}/{pod.name} ({gpu_share(pod.requests):g} GPUs) is pending "
            f"for spot pool {best.pool}: its capacity is short already",
            f"more {model} capacity in spot pool {best.pool}",
        )
    if best.free < gpus:
        return SpotTarget(
            best,
            f"spot pool {best.pool} has room for {best.free:g} of {gpus:g} GPUs",
            f"room for {gpus:g} {model} GPUs in spot pool {best.pool}",
        )
    return SpotTarget(best, "", "")


def _equivalent(book: PriceBook | None, one: str, other: str) -> bool:
    if book is not None:
        return book.equivalent(one, other)
    return normalize_model(one) == normalize_model(other)


def evictable_or_why(pod: Pod, reclaim_key: str | None, *, for_removal: bool = True) -> str:
    """Why ``pod`` may not be evicted (empty when it may): the guards of Cluster
    Autoscaler and Karpenter. ``reclaim_key``: the opt-in a GPU pod needs (None: none).
    ``for_removal``: the pod goes for good with its node, so a bare pod or local storage
    blocks too (a job moved to spot is recreated by its controller, its scratch space
    with it)."""
    name = f"pod {pod.namespace}/{pod.name}"
    opted_in = reclaim_key is None or flag(reclaim_key).get(pod.annotations) is True
    if gpu_request_kind(pod.requests) and not opted_in:
        return f"{name} holds GPUs and is not annotated {reclaim_key}"
    protection = eviction_protection(pod.annotations)
    if protection:
        return f"{name}: {protection}"
    if not for_removal:
        return ""
    if pod.owner is None:
        return f"{name} is a bare pod: nothing would recreate it"
    if pod.local_storage and SAFE_TO_EVICT.get(pod.annotations) is not True:
        return f"{name} has local storage (emptyDir or hostPath)"
    return ""


def pending_for(pods: Iterable[Pod]) -> list[Pod]:
    """GPU pods waiting to be scheduled."""
    return [
        p
        for p in pods
        if p.node_name is None and p.phase == "Pending" and gpu_request_kind(p.requests)
    ]
