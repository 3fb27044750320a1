"""What a finance team could bank: the levers of one savings plan, each measured over the
lookback, each GPU-hour and node claimed once, cash apart from reclaimed capacity.

One module per lever (release, sharing, quantization, nodes, spot, reserved), ``use`` for
the hourly history they stand on, ``plan`` for the order that makes the net add up.
Every item carries the inputs its formula used, so that a person can redo it by hand.
"""

from __future__ import annotations

from gpuwatch.analysis.savings.base import SavingsInputs, SavingsResult
from gpuwatch.analysis.savings.plan import plan_savings, totals

__all__ = ["SavingsInputs", "SavingsResult", "compute_savings", "totals"]


def compute_savings(inputs: SavingsInputs) -> SavingsResult:
    """The plan's items, in its order."""
    return plan_savings(inputs)
