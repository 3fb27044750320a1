"""One simulated cluster: its layout, its metric history and its clock."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from gpuwatch.config.settings import SimulatorSettings
from gpuwatch.model.cluster import ClusterState
from gpuwatch.model.metrics import GpuDevice, SeriesBlock
from gpuwatch.sources.simulator.layout import Layout, build_layout
from gpuwatch.sources.simulator.signals import SignalGenerator


class SimulatedCluster:
    """A cluster whose history spans ``settings.days`` up to ``end``.

    Building it is pure computation (no I/O), fast even for tens of thousands of GPUs;
    samples are generated on demand for whatever range is asked.
    """

    def __init__(self, settings: SimulatorSettings, end: datetime) -> None:
        self.settings = settings
        self.end = end
        self.history_start = end - timedelta(days=settings.days)
        self.layout: Layout = build_layout(settings.gpus, self.history_start, end)
        self.generator = SignalGenerator(self.layout.gpus, settings.seed, settings.step_s)

    @property
    def devices(self) -> tuple[GpuDevice, ...]:
        return tuple(g.device for g in self.layout.gpus)

    @property
    def step_s(self) -> int:
        return self.settings.step_s

    def samples(self, start: datetime, end: datetime) -> SeriesBlock:
        """Raw samples of every GPU in ``(start, end]``; none after the cluster's ``end``."""
        end = min(end, self.end)
        times = self.generator.grid(int(start.timestamp()), int(end.timestamp()))
        values = self.generator.generate(times, int(self.history_start.timestamp()))
        return SeriesBlock(self.devices, times, values)

    def present(self, start: datetime, end: datetime) -> tuple[np.ndarray, np.ndarray]:
        """(sample times in ``(start, end]``, a (devices, times) mask of the samples the
        exporter reported): what ``samples`` has data for, without computing values."""
        end = min(end, self.end)
        times = self.generator.grid(int(start.timestamp()), int(end.timestamp()))
        return times, ~self.generator.missing(times, int(self.history_start.timestamp()))

    def state(self) -> ClusterState:
        return ClusterState(
            observed_at=self.end,
            nodes=tuple(self.layout.nodes),
            pods=tuple(self.layout.pods),
            controllers=tuple(self.layout.controllers),
            namespaces=tuple(self.layout.namespaces),
        )
