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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

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
        return int(self.sampled[list(rows)].any(axis=0).sum())

    @cached_property
    def sampled(self) -> npt.NDArray[np.bool_]:
        """Per GPU and hour: the hour has samples (its utilization is known)."""
        return ~np.isnan(self.util)

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
    rows = np.array(
        [row_of.get(c.device.device_id, -1) if c.device else -1 for c in contexts], dtype=np.intp
    )
    known = rows >= 0

    def aligned(spec: AggregateSpec) -> Array:
        values = frame.values.get(spec)
        if values is not None and known.all():  # every GPU in the history: one copy
            return np.asarray(values[rows], dtype=np.float64)
        out = np.full((n, hours), np.nan)
        if values is not None:
            out[known] = values[rows[known]]
        return out

    util, memory, attached = aligned(UTIL_HOURLY), aligned(MEMORY_HOURLY), aligned(ATTACHED_HOURLY)
    held = np.zeros((n, hours))
    # Nobody now: held in the hours the exporter named a pod.
    nobody = [i for i, ctx in enumerate(contexts) if not ctx.holders]
    held[nobody] = (np.nan_to_num(attached[nobody], nan=0.0) > 0).astype(float)
    holding = [i for i, ctx in enumerate(contexts) if ctx.holders]
    allocated = _allocated([contexts[i] for i in holding], pods, frame.times_s - HOUR_S)
    # No pod label: the allocations. Else the exporter's label, the allocations where it
    # has no samples.
    by_label = [
        k
        for k, i in enumerate(holding)
        if contexts[i].attribution != APPROXIMATE
        and contexts[i].device is not None
        and contexts[i].device.pod is not None
    ]
    labelled = [holding[k] for k in by_label]
    held[holding] = allocated
    share = np.array([min(sum(h.share for h in contexts[i].holders), 1.0) for i in labelled])
    seen = attached[labelled]  # a copy: worked in place
    unseen = np.isnan(seen)
    np.multiply(seen > 0, share[:, None], out=seen)
    np.copyto(seen, allocated[by_label], where=unseen)
    held[labelled] = seen
    return HourlyUse(util, memory, held, lookback_s, frame.times_s)


def _allocated(
    contexts: Sequence[GpuContext],
    pods: Mapping[tuple[str, str], Pod],
    hour_starts: npt.NDArray[np.int64],
) -> Array:
    """Per context and hour, the share of the GPU its current holders held: each from its
    pod's start (a pod without a start time held it all along). The holders are added
    in their order, first holders of all contexts, then second holders, and so on."""
    out = np.zeros((len(contexts), hour_starts.size))
    depth = max((len(ctx.holders) for ctx in contexts), default=0)
    for k in range(depth):
        rows = [i for i, ctx in enumerate(contexts) if len(ctx.holders) > k]
        holders = [contexts[i].holders[k] for i in rows]
        starts = np.array([_started_s(pods.get((h.namespace, h.pod))) for h in holders])
        shares = np.array([h.share for h in holders])
        out[rows] += shares[:, None] * (hour_starts >= starts[:, None] - HOUR_S)
    return np.minimum(out, 1.0)


def _started_s(pod: Pod | None) -> float:
    """When the pod started, in Unix seconds; minus infinity when unknown."""
    return pod.started_at.timestamp() if pod is not None and pod.started_at else -math.inf
