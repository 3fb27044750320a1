"""Sharing: inference and notebook pods that use little of a whole GPU, packed together.

Candidates hold a whole GPU alone, and over the sharing window (a week by default) its
p95 utilization stays under ``util_p95_max`` and its peak memory under
``memory_max_ratio``. Per GPU model and pool, candidates are packed first-fit
decreasing on peak memory onto shared GPUs (cGPU memory shares, or that model's MIG
profiles), keeping each GPU's summed peak memory under ``pack_memory_max_ratio`` and
summed p95 utilization under ``pack_util_max``:

    monthly = (candidate GPUs - packed GPUs) x price per GPU-hour x 720

The plan (which pods together on which GPU, and the MIG profile that would fit each)
is part of the result.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.savings.base import SavingsInputs, finite, monthly
from gpuwatch.model.cost import money
from gpuwatch.model.findings import GpuHolder, format_value
from gpuwatch.model.savings import Saving, SavingExcluded

KIND = "sharing"
_PROFILE_GB = re.compile(r"(\d+)gb$")


@dataclass
class _Item:
    index: int
    ctx: GpuContext
    holder: GpuHolder
    memory_mib: float
    util_p95: float


@dataclass
class _Bin:
    items: list[_Item]
    memory_mib: float
    util: float


def compute(inputs: SavingsInputs) -> tuple[list[Saving], list[SavingExcluded]]:
    settings = inputs.settings.sharing
    groups: dict[tuple[str, str, str], list[_Item]] = defaultdict(list)
    excluded: list[SavingExcluded] = []
    for i, ctx in enumerate(inputs.contexts):
        if len(ctx.holders) != 1 or ctx.holders[0].share < 1.0 or ctx.device is None:
            continue
        holder = ctx.holders[0]
        pod = inputs.pods.get((holder.namespace, holder.pod))
        if pod is None or inputs.role(pod) not in ("inference", "notebook"):
            continue
        scope = {"team": holder.team, "pool": ctx.pool, "workload": holder.workload}
        util, memory = finite(inputs.util_p95, i), finite(inputs.fb_used_max_ratio, i)
        total = finite(inputs.fb_total_mib, i)
        if util is None or memory is None or total is None:
            excluded.append(SavingExcluded(KIND, scope, "no utilization or memory data"))
            continue
        if util > settings.util_p95_max or memory > settings.memory_max_ratio:
            why = (
                f"p95 utilization {format_value(util, 'ratio')} over "
                f"{format_value(settings.util_p95_max, 'ratio')}"
                if util > settings.util_p95_max
                else f"peak memory {format_value(memory, 'ratio')} over "
                f"{format_value(settings.memory_max_ratio, 'ratio')}"
            )
            excluded.append(
                SavingExcluded(KIND, scope, f"GPU {ctx.gpu_shown} on {ctx.node_shown}: {why}")
            )
            continue
        key = (ctx.model or "", ctx.pool or "", ctx.capacity_type)
        groups[key].append(_Item(i, ctx, holder, memory * total, util))

    savings = []
    for (model, pool, _), items in sorted(groups.items()):
        total_mib = min(finite(inputs.fb_total_mib, it.index) or 0.0 for it in items)
        bins = pack(items, total_mib * settings.pack_memory_max_ratio, settings.pack_util_max)
        freed = len(items) - len(bins)
        price = inputs.price(items[0].ctx)
        scope = {"team": None, "pool": pool, "workload": None}
        if freed <= 0 or price is None:
            if freed <= 0 and len(items) > 1:
                excluded.append(SavingExcluded(KIND, scope, "the candidates do not fit together"))
            continue
        entry = inputs.book.model(model)
        plan = [
            {
                "gpu_uuid": b.items[0].ctx.device.uuid if b.items[0].ctx.device else None,
                "node": b.items[0].ctx.node_name,
                "pods": [
                    {
                        "namespace": it.holder.namespace,
                        "pod": it.holder.pod,
                        "workload": it.holder.workload,
                        "peak_memory_gib": round(it.memory_mib / 1024, 2),
                        "util_p95": round(it.util_p95, 4),
                        "mig_profile": _mig_profile(
                            entry.mig_slices if entry else {}, it.memory_mib
                        ),
                    }
                    for it in b.items
                ],
                "memory_gib": round(b.memory_mib / 1024, 2),
                "util_p95_sum": round(b.util, 4),
            }
            for b in bins
        ]
        kept = {b.items[0].ctx.device.uuid for b in bins if b.items[0].ctx.device}
        freed_uuids = tuple(
            it.ctx.device.uuid for it in items if it.ctx.device and it.ctx.device.uuid not in kept
        )
        savings.append(
            Saving(
                kind=KIND,
                scope=scope,
                monthly=money(monthly(price.per_gpu_hour * Decimal(freed))),
                currency=price.currency,
                formula="(candidate_gpus - packed_gpus) x price per GPU-hour x 720",
                inputs={
                    "model": model,
                    "candidate_gpus": len(items),
                    "packed_gpus": len(bins),
                    "gpu_memory_gib": round(total_mib / 1024, 2),
                    "window_s": settings.window_s,
                    "util_p95_max": settings.util_p95_max,
                    "memory_max_ratio": settings.memory_max_ratio,
                    "pack_util_max": settings.pack_util_max,
                    "pack_memory_max_ratio": settings.pack_memory_max_ratio,
                    "price_per_gpu_hour": float(price.per_gpu_hour),
                    "price_source": price.source,
                    "hours_per_month": 720,
                },
                assumptions=(
                    "the pods' peaks over the window are their peaks from now on",
                    "the workloads tolerate sharing a GPU (cGPU memory isolation or MIG)",
                ),
                confidence="medium",
                action=f"share {len(items)} {model} GPUs in {pool} as {len(bins)} "
                "(cGPU or MIG), per the plan",
                gpu_uuids=freed_uuids,
                plan=plan,
            )
        )
    return savings, excluded


def pack(items: list[_Item], memory_cap_mib: float, util_cap: float) -> list[_Bin]:
    """First-fit decreasing on peak memory, with a utilization cap per GPU."""
    bins: list[_Bin] = []
    for item in sorted(items, key=lambda it: (-it.memory_mib, -it.util_p95)):
        for candidate in bins:
            if (
                candidate.memory_mib + item.memory_mib <= memory_cap_mib
                and candidate.util + item.util_p95 <= util_cap
            ):
                candidate.items.append(item)
                candidate.memory_mib += item.memory_mib
                candidate.util += item.util_p95
                break
        else:
            bins.append(_Bin([item], item.memory_mib, item.util_p95))
    return bins


def _mig_profile(slices: dict[str, int], memory_mib: float) -> str | None:
    """The smallest MIG profile of the model whose memory holds ``memory_mib``."""
    fitting = []
    for profile in slices:
        match = _PROFILE_GB.search(profile)
        if match and int(match.group(1)) * 1024 >= memory_mib:
            fitting.append((int(match.group(1)), profile))
    return min(fitting)[1] if fitting else None
