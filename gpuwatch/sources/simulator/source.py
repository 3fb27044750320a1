"""The simulator behind the metrics and cluster seams: its samples, generated on
demand, answered as Prometheus would answer them (``gpuwatch.sources.blocks``)."""

from __future__ import annotations

from datetime import datetime

from gpuwatch.model.cluster import ClusterState
from gpuwatch.sources.blocks import BlockMetricsSource
from gpuwatch.sources.simulator.cluster import SimulatedCluster


class SimulatorMetricsSource(BlockMetricsSource):
    name = "simulator"

    def __init__(self, cluster: SimulatedCluster) -> None:
        super().__init__(cluster)
        self.cluster = cluster


class SimulatorClusterSource:
    name = "simulator"

    def __init__(self, cluster: SimulatedCluster) -> None:
        self.cluster = cluster

    def snapshot(self, at: datetime) -> ClusterState:
        return self.cluster.state()
