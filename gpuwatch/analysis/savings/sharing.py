"""Lever 2, share: inference and notebook pods that use little of a whole GPU, packed.

Candidates hold a whole GPU alone, and over the lookback its busiest hour's mean
utilization stays under ``peak_load_max`` and its peak memory under
``memory_max_ratio``. Per GPU model and pool, candidates are packed first-fit decreasing
on peak memory onto shared GPUs (cGPU memory shares, or that model's MIG profiles),
keeping each GPU's summed peak memory under ``pack_memory_max_ratio`` and summed busiest
hours under ``pack_util_max``:

    freed GPU-hours = (candidate GPUs - packed GPUs) x 720
    monthly         = freed GPU-hours x price per GPU-hour

Freed GPUs are reclaimed capacity (cash only where the pool is billed per GPU). A GPU an
earlier lever (release) already claimed hours of is not a candidate: the same GPU-hour
is never counted twice. The plan (which pods together on which GPU, and the MIG profile
that would fit each) is part of the result.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.savings.base import Claims, Draft, SavingsInputs, finite, measured, monthly
from gpuwatch.model.findings import GpuHolder, format_value
from gpuwatch.model.savings import LOW
from gpuwatch.model.savings import SavingExcluded as Excluded

KIND = "sharing"
_PROFILE_GB = re.compile(r"(\d+)gb$")


@dataclass
class _Item:
    index: int
    ctx: GpuContext
    holder: GpuHolder
    memory_mib: float
    peak: float


@dataclass
class _Bin:
    items: list[_Item]
    memory_mib: float
    util: float


def levers(inputs: SavingsInputs, claims: Claims) -> Iterator[Draft | Excluded]:
    """The lever's drafts (and why not, where not), one at a time: the plan takes each
    draft's claims before the next is drawn."""
    candidates = inputs.once(_candidates)
    untouched = ~claims.freed[[c.row for c in candidates]].any(axis=1)
    groups: dict[tuple[str, str, str], list[_Item]] = defaultdict(list)
    for found, free in zip(candidates, untouched.tolist(), strict=True):
        if found.no_data:
            yield (Excluded(KIND, found.scope, "no hourly utilization or memory data"))
            continue
        if not free:
            ctx = inputs.contexts[found.row]
            why = f"GPU {ctx.gpu_shown}: its hours are released already"
            yield (Excluded(KIND, found.scope, why))
            continue
        if found.over:
            yield (Excluded(KIND, found.scope, found.over))
            continue
        groups[found.key].append(found.item)  # type: ignore[arg-type]

    for (model, pool, _), items in sorted(groups.items()):
        draft = _group(inputs, model, pool, items)
        if draft is not None:
            yield draft


@dataclass(frozen=True)
class _Candidate:
    """A GPU held whole by one inference or notebook pod, as the lever sees it before
    any claim."""

    row: int
    scope: dict[str, str | None]
    no_data: bool = False
    over: str = ""
    """Why it uses too much of its GPU to share (empty: it does not)."""
    key: tuple[str, str, str] = ("", "", "")
    item: _Item | None = None


def _candidates(inputs: SavingsInputs) -> list[_Candidate]:
    """The GPUs held whole by one inference or notebook pod, in the contexts' order."""
    settings = inputs.settings.sharing
    use = inputs.use
    held = inputs.holdings()
    rows = [
        row
        for row, holder, role in zip(held.rows, held.holders, held.roles, strict=True)
        if role in ("inference", "notebook")
        and len(inputs.contexts[row].holders) == 1
        and not holder.share < 1.0
        and inputs.contexts[row].device is not None
    ]
    peaks, memories = _peaks(use.util, rows), _peaks(use.memory, rows)
    found = []
    for i, peak, memory in zip(rows, peaks, memories, strict=True):
        ctx = inputs.contexts[i]
        holder = ctx.holders[0]
        scope = {"team": holder.team, "pool": ctx.pool, "workload": holder.workload}
        total = finite(inputs.fb_total_mib, i)
        if peak is None or memory is None or total is None:
            found.append(_Candidate(i, scope, no_data=True))
            continue
        if peak > settings.peak_load_max or memory > settings.memory_max_ratio:
            why = (
                f"busiest hour {format_value(peak, 'ratio')} over "
                f"{format_value(settings.peak_load_max, 'ratio')}"
                if peak > settings.peak_load_max
                else f"peak memory {format_value(memory, 'ratio')} over "
                f"{format_value(settings.memory_max_ratio, 'ratio')}"
            )
            found.append(
                _Candidate(i, scope, over=f"GPU {ctx.gpu_shown} on {ctx.node_shown}: {why}")
            )
            continue
        key = (ctx.model or "", ctx.pool or "", ctx.capacity_type)
        found.append(
            _Candidate(i, scope, key=key, item=_Item(i, ctx, holder, memory * total, peak))
        )
    return found


def _group(
    inputs: SavingsInputs, model: str, pool: str, items: list[_Item]
) -> Draft | Excluded | None:
    settings = inputs.settings.sharing
    total_mib = min(finite(inputs.fb_total_mib, it.index) or 0.0 for it in items)
    bins = pack(items, total_mib * settings.pack_memory_max_ratio, settings.pack_util_max)
    freed = len(items) - len(bins)
    price = inputs.price(items[0].ctx)
    scope = {"team": None, "pool": pool, "workload": None}
    if freed <= 0 or price is None:
        if freed <= 0 and len(items) > 1:
            return Excluded(KIND, scope, "the candidates do not fit together")
        return None
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
                    "busiest_hour": round(it.peak, 4),
                    "mig_profile": _mig_profile(entry.mig_slices if entry else {}, it.memory_mib),
                }
                for it in b.items
            ],
            "memory_gib": round(b.memory_mib / 1024, 2),
            "busiest_hours_sum": round(b.util, 4),
        }
        for b in bins
    ]
    kept = {id(b.items[0]) for b in bins}
    freed_rows = tuple(it.index for it in items if id(it) not in kept)
    fractions = sum(inputs.contexts[r].gpu_fraction for r in freed_rows)
    hours = inputs.use.observed([it.index for it in items])
    cash = inputs.per_gpu_billing(pool)
    confidence, short = measured(LOW, hours, inputs.use.lookback_hours)

    def claim(claims: Claims) -> None:
        for r in freed_rows:
            claims.freed[r] |= True
            if cash:
                claims.banked[r] |= True

    return Draft(
        kind=KIND,
        scope=scope,
        value=monthly(price.per_gpu_hour * Decimal(str(fractions))),
        currency=price.currency,
        formula="(candidate_gpus - packed_gpus) x price per GPU-hour x 720",
        inputs={
            "model": model,
            "candidate_gpus": len(items),
            "packed_gpus": len(bins),
            "gpu_memory_gib": round(total_mib / 1024, 2),
            "hours_with_data": hours,
            "peak_load_max": settings.peak_load_max,
            "memory_max_ratio": settings.memory_max_ratio,
            "pack_util_max": settings.pack_util_max,
            "pack_memory_max_ratio": settings.pack_memory_max_ratio,
            "price_per_gpu_hour": float(price.per_gpu_hour),
            "price_source": price.source,
            "billing": "per-gpu" if cash else "per-node",
            "hours_per_month": 720,
        },
        assumptions=(
            "the pods' busiest hours and peak memory over the lookback are their peaks from now on",
            "the workloads tolerate sharing a GPU (cGPU memory isolation or MIG)",
            "a bill changes only where a node then goes, or the pool is billed per GPU"
            if not cash
            else "the pool is billed per GPU",
            *short,
        ),
        confidence=confidence,
        action=f"share {len(items)} {model} GPUs in {pool} as {len(bins)} "
        "(cGPU or MIG), per the plan",
        cash=cash,
        reclaimed_gpu_hours=float(fractions) * 720,
        gpu_rows=freed_rows,
        hours_counted=hours,
        plan=plan,
        claim=claim,
    )


def _peaks(values: np.ndarray, rows: list[int]) -> list[float | None]:
    """Each row's largest hourly value, None without any."""
    if values.shape[1] == 0:
        return [None] * len(rows)
    largest = np.fmax.reduce(values[rows], axis=1)  # NaN only where a row has none
    return [None if math.isnan(v) else v for v in largest.tolist()]


def pack(items: list[_Item], memory_cap_mib: float, util_cap: float) -> list[_Bin]:
    """First-fit decreasing on peak memory, with a utilization cap per GPU."""
    bins: list[_Bin] = []
    for item in sorted(items, key=lambda it: (-it.memory_mib, -it.peak)):
        for candidate in bins:
            if (
                candidate.memory_mib + item.memory_mib <= memory_cap_mib
                and candidate.util + item.peak <= util_cap
            ):
                candidate.items.append(item)
                candidate.memory_mib += item.memory_mib
                candidate.util += item.peak
                break
        else:
            bins.append(_Bin([item], item.memory_mib, item.peak))
    return bins


def _mig_profile(slices: dict[str, int], memory_mib: float) -> str | None:
    """The smallest MIG profile of the model whose memory holds ``memory_mib``."""
    fitting = []
    for profile in slices:
        match = _PROFILE_GB.search(profile)
        if match and int(match.group(1)) * 1024 >= memory_mib:
            fitting.append((int(match.group(1)), profile))
    return min(fitting)[1] if fitting else None
