"""What the cluster's own data says each change would save, each a documented formula.

One module per kind (spot, sharing, quantization, idle release, scale-down, reserved);
``overlap`` makes totals count GPU-hours claimed by two savings once. Every saving
carries the inputs its formula used, so that a person can redo it by hand.
"""

from __future__ import annotations

from gpuwatch.analysis.savings import idle, quantization, reserved, scale_down, sharing, spot
from gpuwatch.analysis.savings.base import SavingsInputs, SavingsResult
from gpuwatch.model.savings import Saving, SavingExcluded

__all__ = ["SavingsInputs", "SavingsResult", "compute_savings"]


def compute_savings(inputs: SavingsInputs) -> SavingsResult:
    """Every kind, largest first. Reserved runs last: it discounts GPUs that the others
    would move off on-demand capacity."""
    savings: list[Saving] = []
    excluded: list[SavingExcluded] = []
    for kind in (spot, sharing, quantization, idle, scale_down):
        found, skipped = kind.compute(inputs)
        savings.extend(found)
        excluded.extend(skipped)
    found, skipped = reserved.compute(inputs, savings)
    savings.extend(found)
    excluded.extend(skipped)
    savings.sort(key=lambda s: (s.currency, -s.monthly, s.kind))
    return SavingsResult(tuple(savings), tuple(excluded))
