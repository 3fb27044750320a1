"""The simulator behind the metrics and cluster seams.

It answers a window request the way Prometheus answers the equivalent PromQL: a GPU with
no sample in the inventory window (``inventory_window_s``) is absent; aggregates skip
missing samples.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from gpuwatch.model.cluster import ClusterState
from gpuwatch.model.metrics import (
    HistoryFrame,
    HistoryRequest,
    HolderHistory,
    Signal,
    WindowRequest,
    WindowStats,
    inventory_window_s,
)
from gpuwatch.model.series import reduce_window, window_mask
from gpuwatch.sources.base import Progress
from gpuwatch.sources.simulator.cluster import SimulatedCluster


class SimulatorMetricsSource:
    name = "simulator"

    def __init__(self, cluster: SimulatedCluster) -> None:
        self.cluster = cluster

    def window_stats(self, request: WindowRequest) -> WindowStats:
        longest = max((s.window_s for s in request.specs), default=0)
        block = self.cluster.samples(request.at - timedelta(seconds=longest), request.at)
        seen = window_mask(block.times_s, request.at, inventory_window_s(request))
        rows = ~np.all(np.isnan(block.values[Signal.UTIL_RATIO][:, seen]), axis=1)
        values = {spec: reduce_window(block, spec, request.at)[rows] for spec in request.specs}
        devices = tuple(d for d, keep in zip(block.devices, rows, strict=True) if keep)
        return WindowStats(request.at, float(self.cluster.step_s), devices, values)

    def history(self, request: HistoryRequest, progress: Progress | None = None) -> HistoryFrame:
        """Aggregates at every step, one day of samples at a time to bound memory."""
        times = request.times_s()
        specs = sorted(request.specs)
        longest = max((s.window_s for s in specs), default=0)
        n = len(self.cluster.devices)
        values = {spec: np.full((n, times.size), np.nan) for spec in specs}
        day_of = (times - times[0]) // 86400 if times.size else times
        days = np.unique(day_of)
        for done, day in enumerate(days, start=1):
            cols = np.flatnonzero(day_of == day)
            block = self.cluster.samples(_utc(times[cols[0]] - longest), _utc(times[cols[-1]]))
            for col in cols:
                at = _utc(times[col])
                for spec in specs:
                    values[spec][:, col] = reduce_window(block, spec, at)
            if progress is not None:
                progress(done, len(days))
        has_data = np.zeros(n, dtype=bool)
        for array in values.values():
            has_data |= ~np.isnan(array).all(axis=1)
        devices = tuple(d for d, keep in zip(self.cluster.devices, has_data, strict=True) if keep)
        return HistoryFrame(devices, times, {spec: v[has_data] for spec, v in values.items()})

    def holders(self, request: HistoryRequest, progress: Progress | None = None) -> HolderHistory:
        """The simulated pods hold their GPUs all week: each device's pod in every step
        with a sample, none in a gap (the exporter labels nothing it does not report)."""
        times = request.times_s()
        step = request.step_s
        devices = self.cluster.devices
        held = np.zeros((len(devices), times.size), dtype=bool)
        day_of = (times - times[0]) // 86400 if times.size else times
        days = np.unique(day_of)
        for done, day in enumerate(days, start=1):
            cols = np.flatnonzero(day_of == day)
            grid, present = self.cluster.present(_utc(times[cols[0]] - step), _utc(times[cols[-1]]))
            # The step of a sample at time s is the first step end t >= s.
            step_of = np.searchsorted(times, grid, side="left")
            for col in cols:
                held[:, col] = present[:, step_of == col].any(axis=1)
            if progress is not None:
                progress(done, len(days))
        pods = sorted({d.pod for d in devices if d.pod is not None}, key=str)
        index = {pod: i for i, pod in enumerate(pods)}
        codes = np.full(held.shape, -1, dtype=np.int32)
        for i, device in enumerate(devices):
            if device.pod is not None:
                codes[i, held[i]] = index[device.pod]
        return HolderHistory(tuple(d.device_id for d in devices), times, tuple(pods), codes)


def _utc(unix_s: int | np.integer) -> datetime:
    return datetime.fromtimestamp(int(unix_s), tz=UTC)


class SimulatorClusterSource:
    name = "simulator"

    def __init__(self, cluster: SimulatedCluster) -> None:
        self.cluster = cluster

    def snapshot(self, at: datetime) -> ClusterState:
        return self.cluster.state()
