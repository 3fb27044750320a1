"""The simulator behind the metrics and cluster seams.

It answers a window request the way Prometheus answers the equivalent PromQL: a GPU with
no sample in the longest window is absent; aggregates skip missing samples.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from gpuwatch.model.cluster import ClusterState
from gpuwatch.model.metrics import WindowRequest, WindowStats
from gpuwatch.model.series import reduce_window
from gpuwatch.sources.simulator.cluster import SimulatedCluster


class SimulatorMetricsSource:
    name = "simulator"

    def __init__(self, cluster: SimulatedCluster) -> None:
        self.cluster = cluster

    def window_stats(self, request: WindowRequest) -> WindowStats:
        longest = max((s.window_s for s in request.specs), default=0)
        block = self.cluster.samples(request.at - timedelta(seconds=longest), request.at)
        rows = self.cluster.present_rows(block)
        values = {spec: reduce_window(block, spec, request.at)[rows] for spec in request.specs}
        devices = tuple(d for d, keep in zip(block.devices, rows, strict=True) if keep)
        return WindowStats(request.at, float(self.cluster.step_s), devices, values)


class SimulatorClusterSource:
    name = "simulator"

    def __init__(self, cluster: SimulatedCluster) -> None:
        self.cluster = cluster

    def snapshot(self, at: datetime) -> ClusterState:
        return self.cluster.state()
