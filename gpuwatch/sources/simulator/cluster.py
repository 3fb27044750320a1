"""One simulated cluster: its layout, its metric history and its clock."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta

import numpy as np

from gpuwatch.config.settings import SimulatorSettings
from gpuwatch.model.cluster import ClusterState
from gpuwatch.model.metrics import FloatArray, GpuDevice, SeriesBlock, Signal
from gpuwatch.sources.simulator.layout import Layout, build_layout
from gpuwatch.sources.simulator.signals import SignalGenerator

_HOUR_S = 3600
KEPT_HOURS = 8
"""Hours of samples kept generated: a history chunk (six hours) and the hour before
it, and the hour the next chunk's windows reach back into."""


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
        self._hours: OrderedDict[int, tuple[np.ndarray, dict[Signal, FloatArray]]] = OrderedDict()

    @property
    def devices(self) -> tuple[GpuDevice, ...]:
        return tuple(g.device for g in self.layout.gpus)

    @property
    def step_s(self) -> int:
        return self.settings.step_s

    def samples(self, start: datetime, end: datetime) -> SeriesBlock:
        """Raw samples of every GPU in ``(start, end]``; none after the cluster's ``end``.

        Generated an hour at a time, and the last few hours kept: a cycle asks for
        overlapping ranges (its windows, then its history chunk by chunk from the
        newest, each with the windows' hour before it), and each sample is generated
        once however they overlap."""
        end = min(end, self.end)
        start_s, end_s = int(start.timestamp()), int(end.timestamp())
        times = self.generator.grid(start_s, end_s)
        if times.size == 0:
            return SeriesBlock(self.devices, times, self.generator.generate(times, 0))
        hours = range((start_s) // _HOUR_S, (end_s - 1) // _HOUR_S + 1)
        pieces = [self._hour(h) for h in hours]
        joined = {
            signal: np.concatenate([p[1][signal] for p in pieces], axis=1)
            for signal in pieces[0][1]
        }
        grid = np.concatenate([p[0] for p in pieces])
        keep = (grid > start_s) & (grid <= end_s)
        if keep.all():
            return SeriesBlock(self.devices, grid, joined)
        return SeriesBlock(self.devices, grid[keep], {s: v[:, keep] for s, v in joined.items()})

    def _hour(self, hour: int) -> tuple[np.ndarray, dict[Signal, FloatArray]]:
        """The samples in ``(hour, hour + 1h]`` (up to the cluster's end), kept a while."""
        found = self._hours.get(hour)
        if found is not None:
            self._hours.move_to_end(hour)
            return found
        last = min((hour + 1) * _HOUR_S, int(self.end.timestamp()))
        times = self.generator.grid(hour * _HOUR_S, last)
        generated = (times, self.generator.generate(times, int(self.history_start.timestamp())))
        self._hours[hour] = generated
        while len(self._hours) > KEPT_HOURS:
            self._hours.popitem(last=False)
        return generated

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
