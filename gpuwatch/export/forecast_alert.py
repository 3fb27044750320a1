"""The forecast rule kind in PromQL: ``predict_linear`` over a subquery of the signal.

gpuwatch fits a Theil–Sen line through the samples since the last restart and gives no
estimate when the line explains too little (``analysis/forecast.py``). PromQL has only
``predict_linear``, a least-squares line through the whole window: it follows a spike,
fits across a restart, and has no notion of a poor fit. The alert is the closest
PromQL can say, and its ``gpuwatch_note`` says where it differs.
"""

from __future__ import annotations

from typing import Protocol

from gpuwatch.model.durations import format_duration
from gpuwatch.model.findings import format_value
from gpuwatch.model.metrics import SIGNAL_UNITS, Signal

FORECAST_NOTE = (
    "PromQL's predict_linear fits a least-squares line through the whole window; "
    "gpuwatch fits a robust (Theil-Sen) line through the samples since the last restart "
    "and gives no warning when the line explains too little of them: this alert can fire "
    "on a noisy plateau where gpuwatch is silent, and a line across a restart can miss "
    "growth gpuwatch warns of. Its value is the predicted level."
)


class ForecastLike(Protocol):
    @property
    def signal(self) -> Signal: ...
    @property
    def threshold(self) -> float: ...
    @property
    def horizon_s(self) -> int: ...
    @property
    def step_s(self) -> int: ...
    @property
    def window_s(self) -> int: ...


def forecast_clauses(rule: ForecastLike, peak: str) -> tuple[list[str], str]:
    """(the predicted level above the threshold, the current peak below it) and the
    alert's facts; ``peak`` is the PromQL of the signal's highest value per step."""
    window, step = format_duration(rule.window_s), format_duration(rule.step_s)
    threshold = repr(float(rule.threshold))
    predicted = f"predict_linear(\n({peak})[{window}:{step}],\n{rule.horizon_s}\n)"
    unit = SIGNAL_UNITS[Signal(rule.signal)]
    facts = (
        f"{Signal(rule.signal).value} predicted to pass {format_value(rule.threshold, unit)} "
        f"within {format_duration(rule.horizon_s)} (a line through {window})."
    )
    return [f"({predicted}) > {threshold}", f"({peak}) < {threshold}"], facts
