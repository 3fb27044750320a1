"""Scale-down: unallocated GPU capacity in a pool, in whole nodes, above its floor.

    removable nodes = min(floor(unallocated GPUs / GPUs per node), nodes - floor)
    monthly = removable nodes x GPUs per node x price per GPU-hour x 720

Nodes that are entirely unallocated can go as they are; the rest of the count assumes
the pool's pods can be packed onto fewer nodes (what a consolidating autoscaler does).
Pending GPU pods lower the confidence: they may be waiting for exactly this capacity.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.pools import pending_gpu_pods_for, physical_gpu_count
from gpuwatch.analysis.savings.base import SavingsInputs, monthly
from gpuwatch.model.cost import money
from gpuwatch.model.savings import Saving, SavingExcluded

KIND = "scale_down"


def compute(inputs: SavingsInputs) -> tuple[list[Saving], list[SavingExcluded]]:
    pools: dict[str, list[GpuContext]] = defaultdict(list)
    for ctx in inputs.contexts:
        if ctx.in_gpu_pool and ctx.pool:
            pools[ctx.pool].append(ctx)
    savings, excluded = [], []
    for pool, members in sorted(pools.items()):
        by_node: dict[str, list[GpuContext]] = defaultdict(list)
        for ctx in members:
            by_node[ctx.node_name].append(ctx)
        nodes = len(by_node)
        per_node = max(
            (physical_gpu_count(c.node) for c in members if c.node is not None), default=0
        )
        unallocated = [c for c in members if not c.holders]
        empty_nodes = sum(1 for gpus in by_node.values() if all(not c.holders for c in gpus))
        floor = inputs.settings.floors.get(pool, 0)
        sample = next((c.node for c in members if c.node is not None), None)
        pending = pending_gpu_pods_for(inputs.cluster.pods, sample)
        removable = min(len(unallocated) // per_node if per_node else 0, max(nodes - floor, 0))
        scope = {"team": None, "pool": pool, "workload": None}
        if removable <= 0:
            if unallocated:
                excluded.append(
                    SavingExcluded(
                        KIND,
                        scope,
                        f"{len(unallocated)} unallocated GPUs, less than a node's "
                        f"{per_node} (or the floor of {floor} nodes is reached)",
                    )
                )
            continue
        price = inputs.price(unallocated[0])
        if price is None:
            excluded.append(SavingExcluded(KIND, scope, f"no price for {unallocated[0].model}"))
            continue
        gpus = removable * per_node
        amount = money(monthly(price.per_gpu_hour * Decimal(gpus)))
        claimed = [c.device.uuid for c in unallocated if c.device is not None][:gpus]
        savings.append(
            Saving(
                kind=KIND,
                scope=scope,
                monthly=amount,
                currency=price.currency,
                formula="min(floor(unallocated_gpus / gpus_per_node), nodes - floor) x "
                "gpus_per_node x price x 720",
                inputs={
                    "nodes": nodes,
                    "gpus_per_node": per_node,
                    "unallocated_gpus": len(unallocated),
                    "entirely_unallocated_nodes": empty_nodes,
                    "floor_nodes": floor,
                    "removable_nodes": removable,
                    "price_per_gpu_hour": float(price.per_gpu_hour),
                    "price_source": price.source,
                    "pending_gpu_pods": len(pending),
                    "hours_per_month": 720,
                },
                assumptions=(
                    "the pool's pods fit on the remaining nodes (consolidation)"
                    if removable > empty_nodes
                    else "the entirely unallocated nodes can be removed as they are",
                    f"{len(pending)} GPU pods are pending and may need this capacity"
                    if pending
                    else "no GPU pod is waiting for capacity",
                ),
                confidence="low" if pending else ("high" if removable <= empty_nodes else "medium"),
                action=f"scale {pool} down by {removable} node(s)",
                gpu_uuids=tuple(claimed),
            )
        )
    return savings, excluded
