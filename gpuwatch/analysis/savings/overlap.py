"""Totals that count each GPU-hour once.

Savings that touch the same GPU (an idle inference GPU that sharing would also free,
a training job that spot and idle release both claim) are not additive: for each GPU,
only the largest claim on it counts in the total. Each saving's amount is spread evenly
over the GPUs it lists; savings without GPUs (reserved, which already discounts GPUs
the others claim) add in full. Currencies are never added together.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal

from gpuwatch.model.cost import money
from gpuwatch.model.savings import Saving, SavingsTotal

HOW = (
    "per GPU, only the largest saving claiming it counts (each saving spread evenly over "
    "its GPUs); savings without GPUs add in full; currencies are totalled separately"
)


def totals(savings: Sequence[Saving]) -> tuple[SavingsTotal, ...]:
    by_currency: dict[str, list[Saving]] = defaultdict(list)
    for saving in savings:
        by_currency[saving.currency].append(saving)
    out = []
    for currency, members in sorted(by_currency.items()):
        gross = sum((s.monthly for s in members), Decimal(0))
        claims: dict[str, list[Decimal]] = defaultdict(list)
        for saving in members:
            if saving.gpu_uuids:
                share = saving.monthly / len(saving.gpu_uuids)
                for uuid in saving.gpu_uuids:
                    claims[uuid].append(share)
        overlap = sum(
            (sum(c, Decimal(0)) - max(c) for c in claims.values() if len(c) > 1), Decimal(0)
        )
        overlap = money(overlap)
        out.append(SavingsTotal(currency, gross, overlap, gross - overlap, HOW))
    return tuple(out)
