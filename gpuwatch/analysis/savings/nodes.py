"""Lever 4, remove nodes: the hours a node could have gone, as the scale-down planner
would take it.

A node can go in an hour when every GPU on it was sampled and either held by nobody or
held only by idle pods annotated reclaimable that may be evicted, and nothing pins it
(``scale-down-disabled``, ``do-not-disrupt``, a pod that may not be evicted): exactly the
planner's candidate, hour by hour. Per pool and hour, at most ``nodes - floor`` go:

    monthly = sum over hours of the removable nodes' GPU price per hour x 720 / hours
              with data

Cash: the node's bill stops. Blocked while the pool is not in ``actions.pools`` (the
planner would not act) or a GPU pod is pending for it (it needs the capacity). Pools
billed per GPU are left out: their released GPUs are cash already (lever 1).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.feasibility import evictable_or_why
from gpuwatch.analysis.pools import pending_gpu_pods_for
from gpuwatch.analysis.savings.base import Claims, Draft, SavingsInputs, measured
from gpuwatch.model.cluster import Node, Pod, gpu_request_kind
from gpuwatch.model.cost import money
from gpuwatch.model.savings import HIGH
from gpuwatch.model.savings import SavingExcluded as Excluded
from gpuwatch.model.tenant import DO_NOT_DISRUPT, SCALE_DOWN_DISABLED, protects

KIND = "remove_nodes"


def levers(inputs: SavingsInputs, claims: Claims) -> Iterator[Draft | Excluded]:
    """The lever's drafts (and why not, where not), one at a time: the plan takes each
    draft's claims before the next is drawn."""
    for pool, facts in inputs.once(_pools):
        if isinstance(facts, str):
            yield Excluded(KIND, _scope(pool), facts)
            continue
        draft = _pool(inputs, claims, pool, facts)
        if draft is not None:
            yield draft


@dataclass(frozen=True)
class _Pool:
    """What the lever knows of a pool before any claim: the same in both its runs."""

    nodes: dict[str, list[int]]
    """Node -> its GPUs' rows, nodes in the order of their first GPU."""
    ordered: dict[str, list[int]]
    """The same by node name."""
    hours: int
    currency: str
    floor: int
    pinned: dict[str, str]
    """Per node (by name): what keeps it from going at any hour (empty: nothing)."""
    evictable: list[bool]
    """Per node (by name): its GPU pods may all be evicted."""
    price_of: dict[str, Decimal]
    """Per node: its GPUs' price per hour."""


def _pools(inputs: SavingsInputs) -> list[tuple[str, _Pool | str]]:
    """Each pool of nodes with GPU capacity, by name, and what the lever knows of it
    (or why it has no price); pools billed per GPU left out."""
    pools: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    gpu_node: dict[int, bool] = {}  # per node object: has GPU capacity
    for i, ctx in enumerate(inputs.contexts):
        if ctx.node is None or not ctx.pool:
            continue
        if id(ctx.node) not in gpu_node:
            gpu_node[id(ctx.node)] = ctx.in_gpu_pool
        if gpu_node[id(ctx.node)]:
            pools[ctx.pool][ctx.node_name].append(i)
    pods_on = _pods_by_node(inputs.cluster.pods)
    reclaim = inputs.actions.reclaimable_annotation
    found: list[tuple[str, _Pool | str]] = []
    for pool, nodes in sorted(pools.items()):
        if inputs.per_gpu_billing(pool):
            continue
        contexts = inputs.contexts
        rows = [r for members in nodes.values() for r in members]
        hours = inputs.use.observed(rows)
        prices = {r: inputs.price(contexts[r]) for r in rows}
        if any(p is None for p in prices.values()):
            found.append((pool, f"no price for {contexts[rows[0]].model}"))
            continue
        policy = inputs.actions.pools.get(pool)
        ordered = {name: nodes[name] for name in sorted(nodes)}
        found.append(
            (
                pool,
                _Pool(
                    nodes=nodes,
                    ordered=ordered,
                    hours=hours,
                    currency=next(iter(prices.values())).currency,  # type: ignore[union-attr]
                    floor=max(inputs.settings.floors.get(pool, 0), policy.floor if policy else 0),
                    pinned={
                        name: _pinned(contexts[members[0]].node, pods_on.get(name, []), reclaim)  # type: ignore[arg-type]
                        for name, members in ordered.items()
                    },
                    evictable=[
                        all(
                            not evictable_or_why(p, reclaim)
                            for p in pods_on.get(name, [])
                            if gpu_request_kind(p.requests)
                        )
                        for name in ordered
                    ],
                    price_of={
                        name: sum(
                            (
                                prices[r].per_gpu_hour * Decimal(str(contexts[r].gpu_fraction))  # type: ignore[union-attr]
                                for r in members
                            ),
                            Decimal(0),
                        )
                        for name, members in nodes.items()
                    },
                ),
            )
        )
    return found


def _scope(pool: str) -> dict[str, str | None]:
    return {"team": None, "pool": pool, "workload": None}


def _pool(inputs: SavingsInputs, claims: Claims, pool: str, facts: _Pool) -> Draft | Excluded:
    use = inputs.use
    nodes, pinned, price_of, hours = facts.nodes, facts.pinned, facts.price_of, facts.hours
    scope = _scope(pool)
    # Per hour, the first ``nodes - floor`` candidates (by name) that could go, less the
    # nodes a cash lever before took that hour: their money is counted, so they are as
    # good as gone, and the floor holds with them gone. (So what the lever adds after
    # the others is never above what it saves alone: with a banked node counted as a
    # node that went, no node further down the names takes its turn.)
    free, banked = _free_hours(inputs, claims, facts)
    unpinned = [not pinned[n] for n in facts.ordered]
    candidates = [n for n, keep in zip(facts.ordered, unpinned, strict=True) if keep]
    removable = max(len(nodes) - facts.floor, 0) - banked.sum(axis=0)
    could = free[unpinned]
    going = could & (np.cumsum(could, axis=0) <= removable)
    chosen: dict[str, np.ndarray] = dict(zip(candidates, going, strict=True))
    node_hours = {n: int(mask.sum()) for n, mask in chosen.items() if mask.any()}
    value = sum((price_of[n] * hours_ for n, hours_ in node_hours.items()), Decimal(0))
    if not node_hours:
        why = "no node of the pool could go in any hour of the lookback"
        pins = [f"{n}: {p}" for n, p in pinned.items() if p]
        return Excluded(KIND, scope, why + (f" ({'; '.join(pins[:3])})" if pins else ""))
    blocked, unblock = _blocked(inputs, pool, nodes)
    confidence, short = measured(HIGH, hours, use.lookback_hours)
    names = tuple(sorted(node_hours, key=lambda n: (-node_hours[n], n)))
    per_node = max(len(m) for m in nodes.values())

    taken = [r for n in candidates for r in nodes[n]]
    per_row = np.repeat(going, [len(nodes[n]) for n in candidates], axis=0)

    def claim(claims: Claims) -> None:
        claims.freed[taken] |= per_row  # each GPU is on one node: no row twice
        for name, mask in chosen.items():
            claims.removed[name] = claims.removed.get(name, mask) | mask

    return Draft(
        kind=KIND,
        scope=scope,
        value=money(inputs.to_month(value, hours)),
        currency=facts.currency,
        formula="sum over hours of the price per hour of the nodes that could go "
        "(every GPU free or held only by idle reclaimable pods; at most nodes - floor) "
        "x 720 / hours with data",
        inputs={
            "nodes": len(nodes),
            "gpus_per_node": per_node,
            "floor_nodes": facts.floor,
            "node_hours_removable": node_hours,
            "hours_with_data": hours,
            "price_per_node_hour": {n: float(price_of[n]) for n in names},
            "pinned": {n: p for n, p in pinned.items() if p},
            "hours_per_month": 720,
        },
        assumptions=(
            "the lookback's empty hours repeat, and the cluster autoscaler (or "
            "gpuwatch's scale-down) removes the nodes then",
            *short,
        ),
        confidence=confidence,
        action=f"scale {pool} down when its nodes empty (up to {len(names)} node(s): "
        f"{', '.join(names[:3])}{'...' if len(names) > 3 else ''})",
        gpu_rows=tuple(r for n in names for r in nodes[n]),
        nodes=names,
        blocked=blocked,
        unblock=unblock,
        hours_counted=hours,
        claim=claim,
    )


def _free_hours(
    inputs: SavingsInputs, claims: Claims, facts: _Pool
) -> tuple[np.ndarray, np.ndarray]:
    """(nodes x hours), a row per node by name: every GPU of the node sampled, and held
    by nobody or only by idle pods that may be evicted; and the hours a cash lever before
    counted the cost of any of the node's GPUs (a workload quantized onto cheaper GPUs
    already banked its node's price, less the new GPUs'): not free. (Hours lever 1
    released count: releasing is reclaimed capacity, the node going is the cash.)"""
    use = inputs.use
    counts = [len(members) for members in facts.ordered.values()]
    rows = [r for members in facts.ordered.values() for r in members]
    util = use.util[rows]
    with np.errstate(invalid="ignore"):
        idle = (util < inputs.idle_threshold) & np.repeat(facts.evictable, counts)[:, None]
    starts = np.cumsum([0, *counts[:-1]])
    banked = np.logical_or.reduceat(claims.banked[rows], starts, axis=0)
    ok = ~np.isnan(util) & ((use.held[rows] <= 0) | idle)
    return np.logical_and.reduceat(ok, starts, axis=0) & ~banked, banked


def _pinned(node: Node, pods: list[Pod], reclaim: str) -> str:
    """What keeps the node from going at any hour (empty: nothing)."""
    for protection in (SCALE_DOWN_DISABLED, DO_NOT_DISRUPT):
        if protects(protection, node.annotations):
            return f"{protection.key} on the node"
    for pod in pods:
        if pod.owner is not None and pod.owner.kind == "DaemonSet":
            continue
        if gpu_request_kind(pod.requests):
            continue  # judged hour by hour: idle and evictable, or busy
        why = evictable_or_why(pod, reclaim)
        if why:
            return why
    return ""


def _blocked(
    inputs: SavingsInputs, pool: str, nodes: dict[str, list[int]]
) -> tuple[str | None, str | None]:
    """Why the planner would not take these nodes now, and what would change that."""
    if pool not in inputs.actions.pools:
        return (
            f"{pool} is not in actions.pools: gpuwatch's scale-down does not act on it",
            f"add {pool} to actions.pools (or let the cluster autoscaler remove empty nodes)",
        )
    sample: GpuContext = inputs.contexts[next(iter(nodes.values()))[0]]
    pending = pending_gpu_pods_for(inputs.cluster.pods, sample.node)
    if pending:
        pod = pending[0]
        return (
            f"GPU pod {pod.namespace}/{pod.name} is pending for {pool}: it needs the capacity",
            "schedule the pending GPU pods first",
        )
    return None, None


def _pods_by_node(pods: tuple[Pod, ...]) -> dict[str, list[Pod]]:
    by_node: dict[str, list[Pod]] = defaultdict(list)
    for pod in pods:
        if pod.node_name and pod.phase in ("Running", "Pending", "Unknown"):
            by_node[pod.node_name].append(pod)
    return by_node
