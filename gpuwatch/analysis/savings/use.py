"""What each GPU did in each hour of the lookback: the ground every saving stands on.

A snapshot multiplied by 720 hours is not a month: a notebook idle at 02:00 is busy at
14:00. Every saving is measured over ``savings.lookback`` (a week by default) of hourly
history: per GPU (aligned with the cycle's contexts) and hour, the mean utilization,
the peak framebuffer ratio, and the share of the GPU held. Who held it comes from the
exporter's pod label where it gives one, and from the cluster's allocations where it
does not (cGPU shares, unlabelled MIG slices): the current holders, from their pods'
start. Hours with no samples are unknown, never idle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from gpuwatch.analysis.attribution import APPROXIMATE, GpuContext
from gpuwatch.model.cluster import Pod
from gpuwatch.model.metrics import Aggregate, AggregateSpec, HistoryFrame, Signal

HOUR_S = 3600
UTIL_HOURLY = AggregateSpec(Signal.UTIL_RATIO, Aggregate.AVG, HOUR_S)
ATTACHED_HOURLY = AggregateSpec(Signal.POD_ATTACHED, Aggregate.MAX, HOUR_S)
MEMORY_HOURLY = AggregateSpec(Signal.FB_USED_RATIO, Aggregate.MAX, HOUR_S)
SPECS = frozenset({UTIL_HOURLY, ATTACHED_HOURLY, MEMORY_HOURLY})
"""What the savings read of every hour of the lookback."""

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class HourlyUse:
    """``util``, ``memory`` and ``held`` have one row per context (GPUs the history
    lacks are all NaN) and one column per hour of the lookback."""

    util: Array
    """Mean utilization of the hour, 0..1; NaN without samples."""
    memory: Array
    """Peak framebuffer used ratio of the hour; NaN without samples."""
    held: Array
    """Share of the GPU held by pods in the hour, 0..1 (0 when nobody held it)."""
    lookback_s: int
    times_s: npt.NDArray[np.int64]

    @property
    def hours(self) -> int:
        return int(self.times_s.size)

    @property
    def lookback_hours(self) -> int:
        """Hours the lookback asks for (the history may hold fewer)."""
        return self.lookback_s // HOUR_S

    def observed(self, rows: Sequence[int]) -> int:
        """Hours in which any of ``rows`` has samples: what a figure over them rests on."""
        if not rows or self.hours == 0:
            return 0
        return int(np.sum(np.any(~np.isnan(self.util[list(rows)]), axis=0)))

    @classmethod
    def empty(cls, n: int, lookback_s: int) -> HourlyUse:
        nothing = np.full((n, 0), np.nan)
        return cls(nothing, nothing, np.zeros((n, 0)), lookback_s, np.zeros(0, np.int64))


def hourly_use(
    frame: HistoryFrame | None,
    contexts: Sequence[GpuContext],
    pods: Mapping[tuple[str, str], Pod],
    lookback_s: int,
) -> HourlyUse:
    """The lookback's hours for ``contexts``, from ``frame`` (None: no history)."""
    n = len(contexts)
    if frame is None or frame.times_s.size == 0:
        return HourlyUse.empty(n, lookback_s)
    hours = frame.times_s.size
    row_of = {d.device_id: i for i, d in enumerate(frame.devices)}
    rows = [row_of.get(c.device.device_id, -1) if c.device else -1 for c in contexts]

    def aligned(spec: AggregateSpec) -> Array:
        values = frame.values.get(spec)
        out = np.full((n, hours), np.nan)
        if values is not None:
            for i, row in enumerate(rows):
                if row >= 0:
                    out[i] = values[row]
        return out

    util, memory, attached = aligned(UTIL_HOURLY), aligned(MEMORY_HOURLY), aligned(ATTACHED_HOURLY)
    held = np.zeros((n, hours))
    hour_starts = frame.times_s - HOUR_S
    for i, ctx in enumerate(contexts):
        if not ctx.holders:  # nobody now: held in the hours the exporter named a pod
            held[i] = (np.nan_to_num(attached[i], nan=0.0) > 0).astype(float)
            continue
        allocated = _allocated(ctx, pods, hour_starts)
        labelled = ctx.device is not None and ctx.device.pod is not None
        if ctx.attribution == APPROXIMATE or not labelled:  # no pod label: allocations
            held[i] = allocated
        else:  # the exporter's label, the allocations where it has no samples
            share = min(sum(h.share for h in ctx.holders), 1.0)
            held[i] = np.where(np.isnan(attached[i]), allocated, (attached[i] > 0) * share)
    return HourlyUse(util, memory, held, lookback_s, frame.times_s)


def _allocated(
    ctx: GpuContext, pods: Mapping[tuple[str, str], Pod], hour_starts: npt.NDArray[np.int64]
) -> Array:
    """Per hour, the share of the GPU its current holders held: each from its pod's
    start (a pod without a start time held it all along)."""
    out = np.zeros(hour_starts.size)
    for holder in ctx.holders:
        pod = pods.get((holder.namespace, holder.pod))
        started = _seconds(pod.started_at) if pod is not None and pod.started_at else None
        since = np.ones(hour_starts.size) if started is None else (hour_starts >= started - HOUR_S)
        out += holder.share * since
    return np.minimum(out, 1.0)


def _seconds(moment: datetime) -> float:
    return moment.timestamp()
