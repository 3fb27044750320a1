"""The savings plan: the levers applied in one documented order to a model of the cluster.

    1 release what idles   2 share   3 quantize or right-size   4 remove nodes
    5 move to spot         6 commit the steady baseline (reserved)

Each lever runs twice. Alone, on the cluster as it is: its ``gross``, what it would save
by itself (and what a blocked lever would save once unblocked). In the plan's order,
after the levers before it claimed their GPU-hours, nodes and spot room: what is left
for it, which is its ``net`` where it is cash and can be taken now, else nothing. A lever
that the ones before it left nothing to shows with net 0 and says why. Totals per
currency are the sums of the items: ``net_monthly`` is the cash the plan banks, to the
cent; reclaimed capacity is beside it, never in it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal

from gpuwatch.analysis.savings import nodes, quantization, release, reserved, sharing, spot
from gpuwatch.analysis.savings.base import Claims, Draft, SavingsInputs, SavingsResult
from gpuwatch.model.cost import money
from gpuwatch.model.savings import Saving, SavingExcluded, SavingsTotal

Lever = Callable[[SavingsInputs, Claims], Iterator[Draft | SavingExcluded]]
LEVERS: tuple[tuple[str, Lever], ...] = (
    (release.KIND, release.levers),
    (sharing.KIND, sharing.levers),
    (quantization.KIND, quantization.levers),
    (nodes.KIND, nodes.levers),
    (spot.KIND, spot.levers),
    (reserved.KIND, reserved.levers),
)
HOW = (
    "the levers in order (release, share, quantize, remove nodes, spot, reserved), each "
    "counting only the GPU-hours, nodes and spot room the ones before it left; net is the "
    "cash of the levers that can be taken now; reclaimed capacity is beside it, never in it; "
    "currencies are totalled separately"
)


def plan_savings(inputs: SavingsInputs) -> SavingsResult:
    alone: dict[tuple[str, tuple[tuple[str, str | None], ...]], Draft] = {}
    for _, lever in LEVERS:
        alone.update(
            (d.key, d) for d in lever(inputs, Claims.fresh(inputs)) if isinstance(d, Draft)
        )
    claims = Claims.fresh(inputs)
    savings: list[Saving] = []
    excluded: list[SavingExcluded] = []
    for order, (kind, lever) in enumerate(LEVERS, start=1):
        seen = set()
        for found in lever(inputs, claims):
            if isinstance(found, SavingExcluded):
                excluded.append(found)
                continue
            seen.add(found.key)
            if found.blocked is None:
                found.claim(claims)  # before the lever draws its next draft
            savings.append(_saving(inputs, found, alone.get(found.key, found), order))
        for key, gross in alone.items():
            if gross.kind == kind and key not in seen:
                savings.append(_claimed_before(inputs, gross, order))
    savings.sort(key=lambda s: (s.currency, s.order, -s.net_monthly, -s.monthly))
    return SavingsResult(tuple(savings), tuple(excluded))


def _saving(inputs: SavingsInputs, draft: Draft, gross: Draft, order: int) -> Saving:
    takes = draft.blocked is None
    return Saving(
        kind=draft.kind,
        scope=draft.scope,
        monthly=money(gross.value),
        currency=draft.currency,
        inputs=draft.inputs,
        formula=draft.formula,
        assumptions=draft.assumptions,
        confidence=draft.confidence,
        action=draft.action,
        gpu_uuids=_uuids(inputs, draft.gpu_rows),
        plan=draft.plan,
        net_monthly=money(draft.value) if takes and draft.cash else Decimal("0.00"),
        cash=draft.cash,
        reclaimed_gpu_hours_monthly=draft.reclaimed_gpu_hours if takes and not draft.cash else 0.0,
        reclaimed_monthly=money(draft.value) if takes and not draft.cash else Decimal("0.00"),
        nodes=draft.nodes if takes else (),
        blocked=draft.blocked,
        unblock=None
        if draft.unblock is None
        else f"{draft.unblock} (it would then save {money(gross.value):,.2f} {draft.currency} "
        "per 30 days)",
        lookback_s=inputs.use.lookback_s,
        hours_counted=float(draft.hours_counted),
        order=order,
    )


def _claimed_before(inputs: SavingsInputs, gross: Draft, order: int) -> Saving:
    """A lever that would save by itself, but whose GPU-hours the levers before it in the
    plan already counted."""
    return Saving(
        kind=gross.kind,
        scope=gross.scope,
        monthly=money(gross.value),
        currency=gross.currency,
        inputs=gross.inputs,
        formula=gross.formula,
        assumptions=(
            *gross.assumptions,
            "its GPU-hours are counted by a lever before it in the plan: net 0",
        ),
        confidence=gross.confidence,
        action=gross.action,
        net_monthly=Decimal("0.00"),
        cash=gross.cash,
        blocked=gross.blocked,
        counted_before=True,
        lookback_s=inputs.use.lookback_s,
        hours_counted=float(gross.hours_counted),
        order=order,
    )


def _uuids(inputs: SavingsInputs, rows: Sequence[int]) -> tuple[str, ...]:
    devices = (inputs.contexts[r].device for r in rows)
    return tuple(dict.fromkeys(d.uuid for d in devices if d is not None))


def totals(savings: Sequence[Saving]) -> tuple[SavingsTotal, ...]:
    by_currency: dict[str, list[Saving]] = defaultdict(list)
    for saving in savings:
        by_currency[saving.currency].append(saving)
    out = []
    for currency, members in sorted(by_currency.items()):
        cash = [s for s in members if s.cash]
        net = sum((s.net_monthly for s in members), Decimal("0.00"))
        gross = sum((s.monthly for s in cash if s.blocked is None), Decimal("0.00"))
        out.append(
            SavingsTotal(
                currency=currency,
                gross_monthly=gross,
                overlap_monthly=gross - net,
                net_monthly=net,
                how=HOW,
                reclaimed_gpu_hours_monthly=sum(s.reclaimed_gpu_hours_monthly for s in members),
                reclaimed_monthly=sum((s.reclaimed_monthly for s in members), Decimal("0.00")),
                blocked_monthly=sum(
                    (s.monthly for s in cash if s.blocked is not None), Decimal("0.00")
                ),
            )
        )
    return tuple(out)
