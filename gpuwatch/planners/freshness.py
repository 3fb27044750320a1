"""Whether the data a write would rest on is live.

A plan made from data evaluated in the past (``--at``, a backlog) or from GPUs whose
exporter stopped reporting describes a cluster that may no longer exist: it can be shown
(dry run), never written. Two checks, both against the clock read when the cycle
gathered its data: the cycle's instant within ``actions.max_data_age``, and every GPU
an action touches sampled within the ``stale_after`` of the rule with role ``data_gap``.
Pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.model.durations import format_duration, rfc3339

DEFAULT_STALE_AFTER_S = 120
"""Where no rule has role ``data_gap``: the shipped rule's value."""


@dataclass(frozen=True)
class Freshness:
    at: datetime
    """The instant the cycle evaluated."""
    clock: datetime
    """The clock when the cycle read its data."""
    max_data_age_s: float
    stale_after_s: float
    newest_s: Mapping[str, float]
    """Device id -> unix seconds of its newest utilization sample (NaN: none)."""

    def refusal(self) -> str:
        """Why nothing may be written this cycle; empty when the data is live."""
        age_s = (self.clock - self.at).total_seconds()
        if abs(age_s) <= self.max_data_age_s:
            return ""
        when = "ago" if age_s > 0 else "ahead of the clock"
        return (
            f"stale data: the cycle evaluated {rfc3339(self.at)}, "
            f"{format_duration(abs(age_s))} {when} (actions.max_data_age "
            f"{format_duration(self.max_data_age_s)}); nothing is written on data that is "
            "not live"
        )

    def refusal_for(self, gpus: Sequence[GpuContext]) -> str:
        """Why an action on ``gpus`` may not be written; empty when their data is live."""
        cycle = self.refusal()
        if cycle:
            return cycle
        now_s = self.clock.timestamp()
        for gpu in gpus:
            if gpu.device is None:
                return f"no metrics for a GPU of {gpu.node_shown}: nothing is written blind"
            newest = self.newest_s.get(gpu.device.device_id, math.nan)
            if not math.isfinite(newest):
                return (
                    f"stale metrics: {gpu.device.label} on {gpu.node_shown} has no recent "
                    "sample; nothing is written on data that is not live"
                )
            if now_s - newest > self.stale_after_s:
                return (
                    f"stale metrics: the newest sample of {gpu.device.label} on "
                    f"{gpu.node_shown} is {format_duration(now_s - newest)} old (stale_after "
                    f"{format_duration(self.stale_after_s)}); nothing is written on data "
                    "that is not live"
                )
        return ""
