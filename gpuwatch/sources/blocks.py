"""The metrics seam answered from raw samples at hand (the simulator's, a file's).

It answers a window request the way Prometheus answers the equivalent PromQL: a GPU with
no sample in the inventory window (``inventory_window_s``) is absent; aggregates skip
missing samples. Samples are asked of the store a few hours at a time, so memory holds
those hours of every signal, whatever the range.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np

from gpuwatch.model.errors import SourceBadQuery
from gpuwatch.model.metrics import (
    Aggregate,
    AggregateSpec,
    GpuDevice,
    HistoryFrame,
    HistoryRequest,
    HolderHistory,
    SeriesBlock,
    Signal,
    WindowRequest,
    WindowStats,
    inventory_window_s,
)
from gpuwatch.model.series import nan_percentile, reduce_window, reduce_windows_many, window_mask
from gpuwatch.sources.base import Progress

_DAY_S = 86400
CHUNK_S = 6 * 3600
"""History is read this much at a time: at 10,000 GPUs and a sample a minute, six hours
of every signal is about 300 MB."""


class SampleStore(Protocol):
    """Raw samples on a regular grid, asked for by time range."""

    @property
    def devices(self) -> tuple[GpuDevice, ...]: ...

    @property
    def step_s(self) -> int: ...

    def samples(self, start: datetime, end: datetime) -> SeriesBlock:
        """Every signal of every device in ``(start, end]``."""
        ...

    def present(self, start: datetime, end: datetime) -> tuple[np.ndarray, np.ndarray]:
        """(sample times in ``(start, end]``, a (devices, times) mask of the samples
        that exist): what ``samples`` has data for."""
        ...


class BlockMetricsSource:
    """The metrics seam over raw samples held where gpuwatch runs."""

    name = "samples"

    def __init__(self, store: SampleStore) -> None:
        self.store = store

    def window_stats(self, request: WindowRequest) -> WindowStats:
        """Windows up to a day from one block of samples; longer ones (a week, for the
        savings) a day at a time, so that memory holds a day of every signal plus, for
        a percentile, the one signal it needs."""
        short = [s for s in request.specs if s.window_s <= _DAY_S]
        long = [s for s in request.specs if s.window_s > _DAY_S]
        recent = max((s.window_s for s in short), default=0)
        recent = max(recent, inventory_window_s(request))
        block = self.store.samples(request.at - timedelta(seconds=recent), request.at)
        seen = window_mask(block.times_s, request.at, inventory_window_s(request))
        rows = ~np.all(np.isnan(block.values[Signal.UTIL_RATIO][:, seen]), axis=1)
        values = {spec: reduce_window(block, spec, request.at)[rows] for spec in short}
        values.update({s: v[rows] for s, v in self._long_windows(long, request.at).items()})
        devices = tuple(d for d, keep in zip(block.devices, rows, strict=True) if keep)
        return WindowStats(request.at, float(self.store.step_s), devices, values)

    def _long_windows(
        self, specs: list[AggregateSpec], at: datetime
    ) -> dict[AggregateSpec, np.ndarray]:
        if not specs:
            return {}
        longest = max(s.window_s for s in specs)
        n = len(self.store.devices)
        total = {s: np.zeros(n) for s in specs}
        count = {s: np.zeros(n) for s in specs}
        extreme = {s: np.full(n, np.nan) for s in specs}
        kept: dict[AggregateSpec, list[np.ndarray]] = {s: [] for s in specs}
        start = at - timedelta(seconds=longest)
        while start < at:
            stop = min(start + timedelta(seconds=_DAY_S), at)
            block = self.store.samples(start, stop)
            for spec in specs:
                mask = window_mask(block.times_s, at, spec.window_s)
                part = block.values[spec.signal][:, mask]
                present = ~np.isnan(part)
                count[spec] += present.sum(axis=1)
                agg = spec.aggregate
                if agg is Aggregate.AVG:
                    total[spec] += np.nansum(part, axis=1)
                elif agg in (Aggregate.MAX, Aggregate.MIN) and part.shape[1]:
                    pick = np.fmax if agg is Aggregate.MAX else np.fmin
                    with np.errstate(invalid="ignore"):
                        chunk = np.where(
                            present.any(axis=1),
                            (np.nanmax if agg is Aggregate.MAX else np.nanmin)(
                                np.where(
                                    present, part, -np.inf if agg is Aggregate.MAX else np.inf
                                ),
                                axis=1,
                            ),
                            np.nan,
                        )
                    extreme[spec] = pick(extreme[spec], chunk)
                elif agg is Aggregate.P95:
                    kept[spec].append(part)
                elif agg is not Aggregate.COUNT:
                    raise SourceBadQuery(
                        f"{spec}: a window over a day supports avg, max, min, count, p95"
                    )
            start = stop
        out: dict[AggregateSpec, np.ndarray] = {}
        for spec in specs:
            empty = count[spec] == 0
            agg = spec.aggregate
            if agg is Aggregate.COUNT:
                out[spec] = count[spec]
                continue
            if agg is Aggregate.AVG:
                with np.errstate(invalid="ignore", divide="ignore"):
                    result = total[spec] / count[spec]
            elif agg is Aggregate.P95:
                joined = np.concatenate(kept[spec], axis=1) if kept[spec] else np.empty((n, 0))
                result = nan_percentile(joined, 95.0) if joined.shape[1] else np.full(n, np.nan)
            else:
                result = extreme[spec]
            out[spec] = np.where(empty, np.nan, result)
        return out

    def history(self, request: HistoryRequest, progress: Progress | None = None) -> HistoryFrame:
        """Aggregates at every step, six hours of samples at a time to bound memory,
        newest first: each chunk's windows reach back into the chunk read before it,
        which a store that keeps its newest samples still holds."""
        times = request.times_s()
        specs = sorted(request.specs)
        longest = max((s.window_s for s in specs), default=0)
        n = len(self.store.devices)
        values = {spec: np.empty((n, times.size)) for spec in specs}  # every column is set
        chunk_of = (times[-1] - times) // CHUNK_S if times.size else times
        chunks = np.unique(chunk_of)
        for done, chunk in enumerate(chunks, start=1):
            cols = np.flatnonzero(chunk_of == chunk)
            block = self.store.samples(_utc(times[cols[0]] - longest), _utc(times[cols[-1]]))
            for spec, reduced in reduce_windows_many(block, specs, times[cols]).items():
                values[spec][:, cols] = reduced
            del block
            self._chunk_read(request, cols)
            if progress is not None:
                progress(done, len(chunks))
        has_data = np.zeros(n, dtype=bool)
        for array in values.values():
            has_data |= ~np.isnan(array).all(axis=1)
        if has_data.all():  # as it mostly is: no copy of every array
            return HistoryFrame(self.store.devices, times, values)
        devices = tuple(d for d, keep in zip(self.store.devices, has_data, strict=True) if keep)
        return HistoryFrame(devices, times, {spec: v[has_data] for spec, v in values.items()})

    def _chunk_read(self, request: HistoryRequest, cols: np.ndarray) -> None:
        """Told, while ``history`` holds a chunk's samples, which steps they served: a
        store that can derive more from them at no cost (the holders) does it here."""

    def holders(self, request: HistoryRequest, progress: Progress | None = None) -> HolderHistory:
        """Each device's pod (``GpuDevice.pod``) in every step with a sample, none in a
        gap (the exporter labels nothing it does not report): the simulator's pods hold
        their GPUs all week. A store whose pods change overrides this (the file's)."""
        times = request.times_s()
        step = request.step_s
        devices = self.store.devices
        held = np.zeros((len(devices), times.size), dtype=bool)
        day_of = (times - times[0]) // 86400 if times.size else times
        days = np.unique(day_of)
        for done, day in enumerate(days, start=1):
            cols = np.flatnonzero(day_of == day)
            grid, present = self.store.present(_utc(times[cols[0]] - step), _utc(times[cols[-1]]))
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
