"""Lever 3, right-size or quantize: an inference model served on a cheaper GPU type (at
FP16, INT8 or INT4), as many of them as its measured peak load needs.

For a workload whose model size is known (``gpuwatch.io/model-params: "7B"`` on the pod
or its owner) and whose GPU memory is mostly weights (FP16 weights at least half of the
GPU):

    footprint(bits) = params x bits / 8 bytes x (1 + headroom)   (KV cache, runtime)
    peak load       = the lookback's busiest hour of sum over its GPUs of (utilization x
                      share), in current GPUs
    replicas        = ceil(peak load x current throughput / (target throughput x the
                      target's speed-up at that precision))   (the price book's
                      ``relative_throughput`` and ``speedup``, 1.0 unless set)
    monthly         = (current GPUs x current price - replicas x target price) x 720

over the GPU models with memory x usable_ratio >= footprint, priced for the same
capacity type; FP16 where it saves (no accuracy lost), else INT8, else INT4. No saving
where the new fleet costs more. Only GPU types the cluster has count; a cheaper type it
lacks is shown blocked, with what adding it would save. Cash: the GPU type changes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Mapping
from decimal import Decimal

import numpy as np

from gpuwatch.analysis.pricing import GpuModelEntry
from gpuwatch.analysis.savings.base import Claims, Draft, SavingsInputs, measured, monthly
from gpuwatch.model.cost import Price
from gpuwatch.model.findings import GpuHolder
from gpuwatch.model.savings import LOW
from gpuwatch.model.savings import SavingExcluded as Excluded
from gpuwatch.model.tenant import MODEL_PARAMS

KIND = "quantization"
BITS = (16, 8, 4)
"""Precisions tried in order: FP16 where a cheaper GPU carries it (no accuracy lost),
else INT8, else INT4."""
GIB = 2**30


def levers(inputs: SavingsInputs, claims: Claims) -> Iterator[Draft | Excluded]:
    """The lever's drafts (and why not, where not), one at a time: the plan takes each
    draft's claims before the next is drawn."""
    for rows, scope, drawn in inputs.once(_drafts):
        if rows is not None and not claims.untouched(rows):
            why = "its GPUs' hours are claimed by a lever before this one"
            yield Excluded(KIND, dict(scope), why)
        elif drawn is not None:
            yield drawn


Drawn = tuple[list[int] | None, dict[str, str | None], Draft | Excluded | None]


def _drafts(inputs: SavingsInputs) -> list[Drawn]:
    """Per workload serving inference, by name, what the lever draws when no lever
    before it claimed its GPUs' hours (nothing else it draws depends on them), with the
    GPUs' rows (None where it is excluded before they matter) and its scope."""
    by_workload = inputs.holdings().by_workload("inference", inputs.contexts)
    present = _present(inputs)
    return [
        _lever(inputs, workload, held, present) for workload, held in sorted(by_workload.items())
    ]


def _lever(
    inputs: SavingsInputs,
    workload: str,
    held: list[tuple[int, GpuHolder]],
    present_by_type: Mapping[str, set[str]],
) -> Drawn:
    row, holder = held[0]
    ctx = inputs.contexts[row]
    pod = inputs.pods[(holder.namespace, holder.pod)]
    scope = {"team": holder.team, "pool": ctx.pool, "workload": workload}
    params, present = inputs.tenant(pod, MODEL_PARAMS)
    if params is None:
        why = (
            f"model size {'unreadable' if present else 'unknown'}: annotate "
            f"{MODEL_PARAMS.key} ({MODEL_PARAMS.expected}) on the pod or its Deployment"
        )
        return None, scope, Excluded(KIND, scope, why)
    current, price = inputs.book.model(ctx.model), inputs.price(ctx)
    if current is None or price is None:
        return None, scope, Excluded(KIND, scope, f"no price for {ctx.model}")
    fp16_gib = params * 2 / GIB
    if fp16_gib < 0.5 * current.memory_gib:
        why = (
            f"memory is not mostly weights: FP16 weights {fp16_gib:.1f} GiB of a "
            f"{current.memory_gib:g} GiB GPU"
        )
        return None, scope, Excluded(KIND, scope, why)
    rows = sorted({r for r, _ in held})
    use = inputs.use
    hours = use.observed(rows)
    load = _peak_load(inputs, held)
    if load is None or hours == 0:
        return rows, scope, Excluded(KIND, scope, "no hourly utilization over the lookback")
    gpus = sum(h.share * inputs.contexts[r].gpu_fraction for r, h in held)
    now = price.per_gpu_hour * Decimal(str(gpus))
    present = present_by_type.get(ctx.capacity_type, set())
    options = {bits: _best(inputs, ctx.capacity_type, price, current, params, bits, load, present)
               for bits in BITS}  # fmt: skip
    saving = {b: now - o[2] for b, o in options.items() if o is not None}
    chosen = next((b for b in BITS if saving.get(b, Decimal(0)) > 0), None)
    blocked = unblock = None
    if chosen is None:
        # What a GPU type the cluster lacks would save: shown, blocked, never counted.
        anywhere = {
            bits: _best(inputs, ctx.capacity_type, price, current, params, bits, load, None)
            for bits in BITS
        }
        better = {b: now - o[2] for b, o in anywhere.items() if o is not None}
        chosen = next((b for b in BITS if better.get(b, Decimal(0)) > 0), None)
        if chosen is not None:
            options, saving = anywhere, better
            model = options[chosen][0].name  # type: ignore[index]
            blocked = f"the cluster has no {ctx.capacity_type} {model} capacity"
            unblock = f"add a pool of {model} ({ctx.capacity_type})"
    option_inputs = {
        _precision(bits): None
        if found is None
        else {
            "target_model": found[0].name,
            "target_memory_gib": found[0].memory_gib,
            "replicas": found[1],
            "target_per_hour": float(found[2]),
        }
        for bits, found in options.items()
    }
    if chosen is None:
        options = {bits: _best(inputs, ctx.capacity_type, price, current, params, bits, load,
                               None) for bits in BITS}  # fmt: skip
        cheapest = min((o for o in options.values() if o), key=lambda o: o[2], default=None)
        detail = (
            f": {cheapest[1]} {cheapest[0].name} at {cheapest[2]:.2f}/h carry the peak load, "
            f"against {now:.2f}/h today"
            if cheapest
            else ""
        )
        return (
            rows,
            scope,
            Excluded(KIND, scope, f"no cheaper fleet carries the measured peak load{detail}"),
        )
    target, replicas, _ = options[chosen]  # type: ignore[misc]
    confidence, short = measured(LOW, hours, use.lookback_hours)

    def claim(claims: Claims) -> None:
        for r in rows:
            claims.freed[r] |= True
            claims.banked[r] |= True  # the move to cheaper GPUs counts their cost

    return (
        rows,
        scope,
        Draft(
            kind=KIND,
            scope=scope,
            value=monthly(saving[chosen]),
            currency=price.currency,
            formula="(current_gpus x current_per_gpu_hour - replicas x target_per_gpu_hour) x 720, "
            "replicas = ceil(peak_load x current_throughput / (target_throughput x speedup)), "
            "target = cheapest with memory x usable_ratio >= params x bits/8 x (1 + headroom)",
            inputs={
                "params": params,
                "gpus": gpus,
                "peak_load_gpus": round(load, 4),
                "hours_with_data": hours,
                "current_model": current.name,
                "current_memory_gib": current.memory_gib,
                "current_throughput": current.relative_throughput,
                "current_per_gpu_hour": float(price.per_gpu_hour),
                "fp16_weights_gib": round(fp16_gib, 2),
                "headroom_ratio": inputs.settings.quantization.headroom_ratio,
                "usable_memory_ratio": inputs.settings.quantization.usable_memory_ratio,
                "proposed_bits": chosen,
                **option_inputs,
                "hours_per_month": 720,
            },
            assumptions=(
                f"{_precision(chosen).upper()} keeps accuracy acceptable for this use: measure it "
                "on your own evaluation set before switching"
                if chosen < 16
                else "the model runs as it does today, in FP16",
                f"{target.name}'s throughput (relative {target.relative_throughput:g}, speed-up "
                f"{target.speedup.get(_precision(chosen), 1.0):g} at {_precision(chosen).upper()}) "  # type: ignore[call-overload]
                "carries the "
                "lookback's busiest hour with its latency target",
                *short,
            ),
            confidence=confidence,
            action=f"serve {workload} at {_precision(chosen).upper()} on {replicas} {target.name}",
            gpu_rows=tuple(rows),
            blocked=blocked,
            unblock=unblock,
            hours_counted=hours,
            claim=claim,
        ),
    )


def _peak_load(inputs: SavingsInputs, held: list[tuple[int, GpuHolder]]) -> float | None:
    """The busiest hour of the lookback, in current GPUs: the sum over the workload's
    GPUs of utilization x its share (x the GPU's part of a card)."""
    use = inputs.use
    if use.hours == 0:
        return None
    rows = [r for r, _ in held]
    util = use.util[rows]
    seen = use.sampled[rows].any(axis=0)
    shares = np.array([holder.share for _, holder in held])[:, None]
    fractions = np.array([inputs.contexts[r].gpu_fraction for r in rows])[:, None]
    loads = np.nan_to_num(util) * shares * fractions
    total = np.zeros(use.hours)
    for load in loads:  # added in the holders' order
        total += load
    return float(total[seen].max()) if seen.any() else None


def _best(
    inputs: SavingsInputs,
    capacity_type: str,
    price: Price,
    current: GpuModelEntry,
    params: float,
    bits: int,
    load: float,
    present: set[str] | None,
) -> tuple[GpuModelEntry, int, Decimal] | None:
    """The cheapest fleet of one GPU model that holds the model at ``bits`` and carries
    ``load``: (model, replicas, cost per hour). ``present``: the models to choose from
    (None: every model of the price book)."""
    settings = inputs.settings.quantization
    need = params * bits / 8 / GIB * (1 + settings.headroom_ratio)
    best = None
    for entry in inputs.book.models():
        if entry.memory_gib * settings.usable_memory_ratio < need or entry is current:
            continue
        if present is not None and entry.name not in present:
            continue
        candidate = inputs.catalog_price(entry.name, capacity_type)
        if candidate is None or candidate.currency != price.currency:
            continue
        speed = entry.relative_throughput * entry.speedup.get(_precision(bits), 1.0)  # type: ignore[call-overload]
        replicas = max(math.ceil(load * current.relative_throughput / speed - 1e-9), 1)
        cost = candidate.per_gpu_hour * replicas
        if best is None or cost < best[2]:
            best = (entry, replicas, cost)
    return best


def _present(inputs: SavingsInputs) -> dict[str, set[str]]:
    """Per capacity type, the GPU models the cluster has capacity of (one pass over the
    GPUs for every workload, not one per workload)."""
    found: dict[str, set[str]] = defaultdict(set)
    for ctx in inputs.contexts:
        entry = inputs.book.model(ctx.model)
        if entry is not None:
            found[ctx.capacity_type].add(entry.name)
    return found


def _precision(bits: int) -> str:
    return "fp16" if bits == 16 else f"int{bits}"
