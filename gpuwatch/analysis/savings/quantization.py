"""Quantization: an inference model served at INT8 or INT4 on a cheaper GPU.

For a workload whose model size is known (``gpuwatch.io/model-params: "7B"`` on the pod
or its owner) and whose GPU memory is mostly weights (FP16 weights at least half of
the GPU):

    footprint(bits) = params x bits / 8 bytes x (1 + headroom)   (KV cache, runtime)
    target = the cheapest GPU model in the price book with
             memory x usable_ratio >= footprint, priced for the same capacity type
    monthly = GPUs x (current price - target price) x 720

INT8 is proposed when it reaches a cheaper GPU (smaller accuracy loss), else INT4.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.savings.base import SavingsInputs, monthly
from gpuwatch.model.cost import money
from gpuwatch.model.findings import GpuHolder
from gpuwatch.model.savings import Saving, SavingExcluded
from gpuwatch.model.tenant import MODEL_PARAMS

KIND = "quantization"
GIB = 2**30


def compute(inputs: SavingsInputs) -> tuple[list[Saving], list[SavingExcluded]]:
    by_workload: dict[str, list[tuple[GpuContext, GpuHolder]]] = defaultdict(list)
    for ctx in inputs.contexts:
        for holder in ctx.holders:
            pod = inputs.pods.get((holder.namespace, holder.pod))
            if pod is not None and inputs.role(pod) == "inference":
                workload = holder.workload or f"Pod/{holder.namespace}/{holder.pod}"
                by_workload[workload].append((ctx, holder))
    settings = inputs.settings.quantization
    savings, excluded = [], []
    for workload, held in sorted(by_workload.items()):
        ctx, holder = held[0]
        pod = inputs.pods[(holder.namespace, holder.pod)]
        scope = {"team": holder.team, "pool": ctx.pool, "workload": workload}
        params, present = inputs.tenant(pod, MODEL_PARAMS)
        if params is None:
            why = "unreadable" if present else "unknown"
            excluded.append(
                SavingExcluded(
                    KIND,
                    scope,
                    f"model size {why}: annotate {MODEL_PARAMS.key} "
                    f"({MODEL_PARAMS.expected}) on the pod or its Deployment",
                )
            )
            continue
        current = inputs.book.model(ctx.model)
        price = inputs.price(ctx)
        if current is None or price is None:
            excluded.append(SavingExcluded(KIND, scope, f"no price for {ctx.model}"))
            continue
        fp16_gib = params * 2 / GIB
        if fp16_gib < 0.5 * current.memory_gib:
            excluded.append(
                SavingExcluded(
                    KIND,
                    scope,
                    f"memory is not mostly weights: FP16 weights {fp16_gib:.1f} GiB of a "
                    f"{current.memory_gib:g} GiB GPU",
                )
            )
            continue
        options = {}
        for bits in (8, 4):
            need = params * bits / 8 / GIB * (1 + settings.headroom_ratio)
            best = None
            for entry in inputs.book.models():
                if entry.memory_gib * settings.usable_memory_ratio < need:
                    continue
                candidate, _ = inputs.book.price(entry.name, ctx.capacity_type)
                if candidate is None or candidate.currency != price.currency:
                    continue
                if candidate.per_gpu_hour < price.per_gpu_hour and (
                    best is None or candidate.per_gpu_hour < best[1].per_gpu_hour
                ):
                    best = (entry, candidate)
            options[bits] = (need, best)
        chosen = next((bits for bits in (8, 4) if options[bits][1] is not None), None)
        option_inputs = {
            f"int{bits}": {
                "footprint_gib": round(need, 2),
                "target_model": best[0].name if best else None,
                "target_memory_gib": best[0].memory_gib if best else None,
                "target_per_gpu_hour": float(best[1].per_gpu_hour) if best else None,
            }
            for bits, (need, best) in options.items()
        }
        if chosen is None:
            excluded.append(
                SavingExcluded(KIND, scope, "no cheaper GPU in the price book fits the model")
            )
            continue
        need, (target, target_price) = options[chosen]  # type: ignore[misc]
        gpus = sum(h.share for _, h in held)
        per_hour = (price.per_gpu_hour - target_price.per_gpu_hour) * Decimal(str(gpus))
        savings.append(
            Saving(
                kind=KIND,
                scope=scope,
                monthly=money(monthly(per_hour)),
                currency=price.currency,
                formula="gpus x (current_per_gpu_hour - target_per_gpu_hour) x 720, target = "
                "cheapest GPU with memory x usable_ratio >= params x bits/8 x (1 + headroom)",
                inputs={
                    "params": params,
                    "gpus": gpus,
                    "current_model": current.name,
                    "current_memory_gib": current.memory_gib,
                    "current_per_gpu_hour": float(price.per_gpu_hour),
                    "fp16_weights_gib": round(fp16_gib, 2),
                    "headroom_ratio": settings.headroom_ratio,
                    "usable_memory_ratio": settings.usable_memory_ratio,
                    "proposed_bits": chosen,
                    **option_inputs,
                    "hours_per_month": 720,
                },
                assumptions=(
                    f"INT{chosen} keeps accuracy acceptable for this use: measure it on "
                    "your own evaluation set before switching",
                    f"throughput on {target.name} (relative {target.relative_throughput:g} "
                    f"vs {current.relative_throughput:g}) meets the latency target",
                ),
                confidence="low",
                action=f"serve {workload} at INT{chosen} on {target.name}",
                gpu_uuids=tuple(c.device.uuid for c, _ in held if c.device is not None),
            )
        )
    return savings, excluded
