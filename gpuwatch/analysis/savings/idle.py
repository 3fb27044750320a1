"""Idle release: allocated GPUs that stayed idle (the rule with role ``idle``), released.

    monthly = idle GPUs x price per GPU-hour x 720

Per workload. It assumes the idleness seen in the rule's window continues; the
confidence is medium for that reason (notebooks idle at night are busy by day: the
weekly report measures whole weeks).
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.savings.base import SavingsInputs, monthly
from gpuwatch.model.cost import money
from gpuwatch.model.findings import Finding, Role
from gpuwatch.model.savings import Saving, SavingExcluded

KIND = "idle_release"


def compute(inputs: SavingsInputs) -> tuple[list[Saving], list[SavingExcluded]]:
    by_uuid = {c.device.uuid: c for c in inputs.contexts if c.device is not None}
    groups: dict[tuple[str, str], list[tuple[Finding, GpuContext]]] = defaultdict(list)
    for finding in inputs.findings:
        ctx = by_uuid.get(finding.gpu_uuid or "")
        if finding.role is not Role.IDLE or ctx is None:
            continue
        workload = finding.workload or f"Pod/{finding.namespace}/{finding.pod}"
        price = inputs.price(ctx)
        groups[(workload, price.currency if price else "")].append((finding, ctx))
    savings, excluded = [], []
    for (workload, currency), members in sorted(groups.items()):
        first, ctx = members[0]
        scope = {"team": first.team, "pool": first.pool, "workload": workload}
        prices = [inputs.price(c) for _, c in members]
        if not currency or any(p is None for p in prices):
            excluded.append(SavingExcluded(KIND, scope, f"no price for {ctx.model}"))
            continue
        # The GPU-hours the workload holds: its share of each device, a MIG instance
        # being its part of a GPU.
        shares = [(sum(h.share for h in c.holders) or 1.0) * c.gpu_fraction for _, c in members]
        per_hour = sum(
            (p.per_gpu_hour * Decimal(str(s)) for p, s in zip(prices, shares, strict=True) if p),
            Decimal(0),
        )
        savings.append(
            Saving(
                kind=KIND,
                scope=scope,
                monthly=money(monthly(per_hour)),
                currency=currency,
                formula="sum over idle GPUs of (share held x price per GPU-hour) x 720",
                inputs={
                    "gpus": [
                        {
                            "gpu_uuid": c.device.uuid if c.device else None,
                            "node": c.node_name,
                            "share": s,
                            "util_avg": f.value,
                            "window_s": f.window_s,
                            "price_per_gpu_hour": float(p.per_gpu_hour) if p else None,
                        }
                        for (f, c), p, s in zip(members, prices, shares, strict=True)
                    ],
                    "hours_per_month": 720,
                },
                assumptions=(
                    f"the GPUs stay as idle as over the last {first.window_s // 60} minutes",
                    "releasing them (stopping the notebook, fixing or ending the job) "
                    "returns the capacity",
                ),
                confidence="medium",
                action=f"release the idle GPUs of {workload}",
                gpu_uuids=tuple(c.device.uuid for _, c in members if c.device is not None),
            )
        )
    return savings, excluded
