"""The metrics seam over a Parquet file of raw DCGM exporter samples.

A week of raw samples exported from Prometheus (one row per GPU per scrape: the
exporter's labels and one column per metric) is what a platform team has at hand when
it wants a report without gpuwatch querying the server; it is also how the report
benchmark feeds gpuwatch and pandas the same samples. The file is read a row group at a
time (write one per day, rows in time order) and the last one kept decoded, so memory
holds about a day of samples however long the file is.

Columns: ``timestamp`` (UTC), the labels ``UUID``, ``gpu``, ``modelName``,
``Hostname``, ``pci_bus_id``, ``pod``, ``namespace``, ``container`` (``GPU_I_PROFILE``
and ``GPU_I_ID`` for MIG instances), and the metrics ``DCGM_FI_DEV_GPU_UTIL``,
``DCGM_FI_PROF_GR_ENGINE_ACTIVE``, ``DCGM_FI_DEV_FB_USED`` / ``_FREE`` / ``_RESERVED``,
``DCGM_FI_DEV_GPU_TEMP``, ``DCGM_FI_DEV_POWER_USAGE``, ``DCGM_FI_DEV_XID_ERRORS``,
``DCGM_FI_PROF_PIPE_TENSOR_ACTIVE``; a metric the exporter did not send is null. Each
sample is put on the grid of the sample interval (a time is rounded up to the next
multiple), as a PromQL step would see it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gpuwatch.model.errors import SourceUnreachable
from gpuwatch.model.metrics import (
    FloatArray,
    GpuDevice,
    HistoryFrame,
    HistoryRequest,
    HolderHistory,
    PodRef,
    SeriesBlock,
    Signal,
    fb_used_ratio,
)
from gpuwatch.sources.base import Progress
from gpuwatch.sources.blocks import BlockMetricsSource
from gpuwatch.sources.samples_columns import (
    UNIT_SCALE,
    RowGroup,
    device_of,
    interval_s,
    key_codes,
    last_rows,
    seconds,
)

LABELS = ("UUID", "gpu", "modelName", "Hostname", "pci_bus_id", "pod", "namespace", "container")
MIG_LABELS = ("GPU_I_PROFILE", "GPU_I_ID")
METRICS = (
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_RESERVED",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
)
_KEPT_GROUPS = 1
_KEPT_HOLDERS = 4
_DAY_S = 86400


@dataclass(frozen=True)
class _Part:
    """The rows of one group inside a range (a slice where the group is in time order
    and every row's device is known), and where they go in a (devices, grid) array."""

    group: RowGroup
    rows: slice | np.ndarray
    flat: np.ndarray
    """``grid column * devices + device`` of each row: its cell in a ``_grid``."""

    def put(self, out: np.ndarray, values: np.ndarray) -> None:
        """Each row's value of a group's column into its cell of ``out``."""
        _cells(out)[self.flat] = values[self.rows]


def _grid(devices: int, times: int, fill: float | bool, dtype: type = np.float64) -> np.ndarray:
    """A (devices, times) array, time-major in memory (column-major): the rows of a
    group, in time order, then fill it one after the other rather than a column apart."""
    return np.full((times, devices), fill, dtype=dtype).T


def _cells(grid: np.ndarray) -> np.ndarray:
    """A ``_grid``'s cells as one flat view, time-major."""
    if not grid.flags.f_contiguous:
        raise ValueError("not a time-major grid")
    return grid.T.reshape(-1)


class SampleFile:
    """The samples of a Parquet file, by time range (``BlockMetricsSource``'s store)."""

    def __init__(self, path: Path | str, step_s: int | None = None) -> None:
        try:
            labels = pq.read_schema(path).names
            self.file = pq.ParquetFile(
                path, read_dictionary=[c for c in (*LABELS, *MIG_LABELS) if c in labels]
            )
        except (OSError, pa.ArrowInvalid) as exc:
            raise SourceUnreachable(f"samples file {path}: {exc}") from exc
        names = self.file.schema_arrow.names
        self.columns = [c for c in ("timestamp", *LABELS, *MIG_LABELS, *METRICS) if c in names]
        self.spans = [self._span(i) for i in range(self.file.num_row_groups)]
        self._devices, newest = self._inventory()
        self.row_of = {d.device_id: i for i, d in enumerate(self._devices)}
        self._step_s = step_s or interval_s(newest)
        self._cache: OrderedDict[int, RowGroup] = OrderedDict()
        self._wanted: set[str] = set()  # the columns reads have asked for, beyond the keys
        self._last: tuple[tuple[int, int], tuple[np.ndarray, list[_Part]]] | None = None

    @property
    def devices(self) -> tuple[GpuDevice, ...]:
        return self._devices

    @property
    def step_s(self) -> int:
        return self._step_s

    def _span(self, group: int) -> tuple[int, int]:
        """The first and last unix second of a row group (its statistics, else read)."""
        index = self.file.schema_arrow.get_field_index("timestamp")
        column = self.file.metadata.row_group(group).column(index)
        stats = column.statistics
        unit = getattr(self.file.schema_arrow.field(index).type, "unit", None)
        if (
            stats is not None
            and stats.has_min_max
            and column.physical_type == "INT64"
            and unit in UNIT_SCALE
        ):
            # The raw values: their conversion to datetimes would import pandas.
            scale = UNIT_SCALE[unit]
            return int(stats.min_raw) // scale, int(stats.max_raw) // scale
        unix_s = seconds(self.file.read_row_group(group, columns=["timestamp"])["timestamp"])
        return int(unix_s.min()), int(unix_s.max())

    def _inventory(self) -> tuple[tuple[GpuDevice, ...], np.ndarray]:
        """Every device in the file, labelled as in its newest sample; and one device's
        times in the newest group (to tell the sample interval). Older groups are read
        for their device column alone, unless they hold a device the newer ones lack."""
        found: dict[str, GpuDevice] = {}
        newest = np.empty(0, dtype=np.int64)
        keys_only = [c for c in ("UUID", "GPU_I_ID") if c in self.columns]
        labels = [c for c in self.columns if c not in METRICS]
        for group in sorted(range(len(self.spans)), key=lambda g: -self.spans[g][1]):
            table = self.file.read_row_group(group, columns=keys_only if found else labels)
            codes, keys = key_codes(table)
            wanted = np.array([k not in found for k in keys], dtype=bool)
            if not wanted.any():
                continue
            if found:
                table = self.file.read_row_group(group, columns=labels)
            last = last_rows(codes, len(keys), wanted)
            if not newest.size and len(codes):
                newest = seconds(table["timestamp"])[codes == codes[-1]]
            picked = np.flatnonzero(last >= 0)
            rows = table.take(pa.array(last[picked])).to_pylist()
            for code, row in zip(picked.tolist(), rows, strict=True):
                found[keys[code]] = device_of(row)
        devices = sorted(found.values(), key=lambda d: (d.node, d.index, d.device_id))
        return tuple(devices), newest

    def _group(self, group: int) -> RowGroup:
        cached = self._cache.get(group)
        if cached is not None:
            self._cache.move_to_end(group)
            return cached
        while len(self._cache) >= _KEPT_GROUPS:  # let it go before the next is read
            self._cache.popitem(last=False)
        decoded = self._cache[group] = RowGroup(
            self.file, group, self.row_of, self.step_s, self._wanted
        )
        return decoded

    def forget(self) -> None:
        """Let the decoded row groups go (the next read decodes again)."""
        self._cache.clear()
        self._last = None
        self._wanted.clear()

    def _rows(self, start: datetime, end: datetime) -> tuple[np.ndarray, list[_Part]]:
        """The grid of ``(start, end]`` and, per row group it touches, its rows there;
        the last range's answer is kept (its samples, then its pods, are asked in turn).
        Groups are visited newest first, as history reads its chunks: the group a chunk
        ends in is then the one the next chunk starts in."""
        step = self.step_s
        start_s, end_s = int(start.timestamp()), int(end.timestamp())
        if self._last is not None and self._last[0] == (start_s, end_s):
            return self._last[1]
        self._last = None  # its groups may be let go
        grid = np.arange((start_s // step + 1) * step, end_s + 1, step, dtype=np.int64)
        parts = []
        for group, (low, high) in sorted(enumerate(self.spans), key=lambda g: -g[1][1]):
            if -(-high // step) * step <= start_s or -(-low // step) * step > end_s:
                continue
            decoded = self._group(group)
            times = decoded.time_s
            if decoded.ordered:
                first = int(np.searchsorted(times, start_s, side="right"))
                after = int(np.searchsorted(times, end_s, side="right"))
                rows: slice | np.ndarray = slice(first, after)
                if not decoded.known:
                    rows = first + np.flatnonzero(decoded.device[first:after] >= 0)
            else:
                inside = (times > start_s) & (times <= end_s)
                rows = np.flatnonzero(inside & (decoded.device >= 0))
            flat = (times[rows] - grid[0]) // step * len(self._devices) + decoded.device[rows]
            parts.append(_Part(decoded, rows, flat))
        self._last = ((start_s, end_s), (grid, parts))
        return grid, parts

    def samples(self, start: datetime, end: datetime) -> SeriesBlock:
        grid, parts = self._rows(start, end)
        return SeriesBlock(self._devices, grid, _Signals(len(self._devices), grid, parts))

    def present(self, start: datetime, end: datetime) -> tuple[np.ndarray, np.ndarray]:
        grid, parts = self._rows(start, end)
        mask = _grid(len(self._devices), grid.size, False, bool)
        for part in parts:
            _cells(mask)[part.flat] = True
        return grid, mask

    def pods(self, start: datetime, end: datetime) -> tuple[np.ndarray, np.ndarray, list[PodRef]]:
        """(the grid, a (devices, times) array of pod codes, -1 where no pod label, and
        the pods the codes index)."""
        grid, parts = self._rows(start, end)
        codes = _grid(len(self._devices), grid.size, -1, np.int32)
        if len(parts) == 1 and parts[0].group.pods and parts[0].group.pods_distinct:
            # The codes are the group's own.
            parts[0].put(codes, parts[0].group.pod)
            return grid, codes, parts[0].group.pods
        index: dict[PodRef, int] = {}
        for part in parts:
            lut = np.array([index.setdefault(p, len(index)) for p in part.group.pods] + [-1])
            _cells(codes)[part.flat] = lut[part.group.pod[part.rows]]
        return grid, codes, list(index)


class SampleFileMetricsSource(BlockMetricsSource):
    """Window statistics, history and holders from a ``SampleFile``."""

    name = "samples-file"

    def __init__(self, samples: SampleFile) -> None:
        super().__init__(samples)
        self.samples = samples
        # The holders of the ranges histories read, by range: another read between a
        # history and its holders (a cycle's forecast series) must not drop them.
        self._held: OrderedDict[tuple[datetime, datetime, int], _Held] = OrderedDict()

    def history(self, request: HistoryRequest, progress: Progress | None = None) -> HistoryFrame:
        """As ``BlockMetricsSource.history``; then, after a history longer than a row
        group's day, the decoded row groups are let go (a report reads the file once, and
        holds its big tables next). A shorter one (a cycle's recent series) keeps the
        newest group for the history read after it, which starts there."""
        frame = super().history(request, progress)
        if (request.end - request.start).total_seconds() > _DAY_S:
            self.samples.forget()
        return frame

    def _chunk_read(self, request: HistoryRequest, cols: np.ndarray) -> None:
        """The chunk's holders, from the row groups ``history`` just decoded: a report
        asks for the holders of the same hours next, and reading the file again for
        them would decode every row a second time."""
        key = (request.start, request.end, request.step_s)
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = _Held(request.times_s())
            while len(self._held) > _KEPT_HOLDERS:
                self._held.popitem(last=False)
        held.add(self.samples, request.step_s, cols)

    def holders(self, request: HistoryRequest, progress: Progress | None = None) -> HolderHistory:
        """Per step, the pod the exporter labelled each GPU with for most of its samples
        in the step (the smallest pod code among equals), a day at a time."""
        key = (request.start, request.end, request.step_s)
        held = self._held.get(key)
        times = request.times_s()
        if held is None or not held.done.all():
            held = _Held(times)
            day_of = (times - times[0]) // _DAY_S if times.size else times
            days = np.unique(day_of)
            for done, day in enumerate(days, start=1):
                held.add(self.samples, request.step_s, np.flatnonzero(day_of == day))
                if progress is not None:
                    progress(done, len(days))
        ids = tuple(d.device_id for d in self.samples.devices)
        codes = held.codes(len(ids))
        return HolderHistory(ids, times, tuple(held.index), codes)


class _Held:
    """Holder codes of a range's steps, filled a day at a time."""

    def __init__(self, times_s: np.ndarray) -> None:
        self.times_s = times_s
        self.index: dict[PodRef, int] = {}
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.done = np.zeros(times_s.size, dtype=bool)
        self._luts: dict[int, tuple[list[PodRef], np.ndarray]] = {}

    def add(self, samples: SampleFile, step_s: int, cols: np.ndarray) -> None:
        if not cols.size or self.done[cols].all():
            return
        times = self.times_s
        first, last = int(times[cols[0]] - step_s), int(times[cols[-1]])
        grid, local, pods = samples.pods(_utc(first), _utc(last))
        known = self._luts.get(id(pods))
        if known is not None and known[0] is pods:
            lut = known[1]  # a row group's pods, met in an earlier step
        else:
            lut = np.array([self.index.setdefault(p, len(self.index)) for p in pods] + [-1])
            self._luts[id(pods)] = (pods, lut)  # the list held: its id stays its own
        step_of = np.searchsorted(times, grid, side="left")
        counts = np.array([(step_of == col).sum() for col in cols])
        if counts.size and (counts == counts[0]).all() and counts[0] > 0:
            # Every step has as many samples, one after the other: all steps at once.
            width = int(counts[0])
            starts = np.searchsorted(step_of, cols, side="left")
            index = starts[:, None] + np.arange(width)
            modes = _mode(local[:, index].reshape(-1, width)).reshape(len(local), cols.size)
        else:
            modes = np.stack([_mode(local[:, step_of == col]) for col in cols], axis=1)
        self.parts.append((cols, lut[modes].astype(np.int32)))
        self.done[cols] = True

    def codes(self, n: int) -> np.ndarray:
        out = np.full((n, self.times_s.size), -1, dtype=np.int32)
        for cols, day in self.parts:
            out[:, cols] = day
        return out


def _mode(codes: np.ndarray) -> np.ndarray:
    """Per row, the most frequent code other than -1 (the smallest among equals); -1
    for a row without one."""
    if codes.shape[1] == 0:
        return np.full(codes.shape[0], -1, dtype=np.int32)
    # Most rows name one pod all along (or none): their mode is their first code.
    alike = (codes == codes[:, :1]).all(axis=1)
    if alike.all():
        return codes[:, 0].astype(np.int32)
    if alike.any():
        out = codes[:, 0].astype(np.int32)
        out[~alike] = _mode(codes[~alike])
        return out
    ordered = np.sort(codes, axis=1)
    k = ordered.shape[1]
    starts = np.ones(ordered.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    position = np.arange(k)
    run_start = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    length = np.where(ordered >= 0, position - run_start + 1, 0)
    best = np.argmax(length, axis=1)
    rows = np.arange(ordered.shape[0])
    return np.where(length[rows, best] > 0, ordered[rows, best], -1).astype(np.int32)


class _Signals(Mapping[Signal, FloatArray]):
    """The signals of ``gpuwatch.model.metrics`` from the exporter's metrics, each put
    on the grid when first asked for: a history asks for a few of them."""

    def __init__(self, n: int, grid: np.ndarray, parts: list[_Part]) -> None:
        self.shape = (n, grid.size)
        self.parts = parts
        self._raw: dict[str, FloatArray] = {}
        self._made: dict[Signal, FloatArray] = {}
        self._reserved: FloatArray | None = None

    def raw(self, name: str) -> FloatArray:
        found = self._raw.get(name)
        if found is None:
            found = self._raw[name] = _grid(*self.shape, np.nan)
            for part in self.parts:
                values = part.group.values(name)
                if values is not None:
                    part.put(found, values)
        return found

    def __getitem__(self, signal: Signal) -> FloatArray:
        found = self._made.get(signal)
        if found is None:
            found = self._made[signal] = self._make(signal)
        return found

    def __iter__(self) -> Iterator[Signal]:
        return iter(Signal)

    def __len__(self) -> int:
        return len(Signal)

    def _make(self, signal: Signal) -> FloatArray:
        if signal is Signal.UTIL_RATIO:
            active = self.raw("DCGM_FI_PROF_GR_ENGINE_ACTIVE")
            return np.where(np.isnan(active), self.raw("DCGM_FI_DEV_GPU_UTIL") / 100.0, active)
        if signal is Signal.POD_ATTACHED:
            attached = _grid(*self.shape, np.nan)
            for part in self.parts:
                _cells(attached)[part.flat] = part.group.pod[part.rows] >= 0
            return attached
        used, free = self.raw("DCGM_FI_DEV_FB_USED"), self.raw("DCGM_FI_DEV_FB_FREE")
        if self._reserved is None:  # asked for by each framebuffer signal
            self._reserved = np.nan_to_num(self.raw("DCGM_FI_DEV_FB_RESERVED"), nan=0.0)
        reserved = self._reserved
        if signal is Signal.FB_TOTAL_MIB:
            return used + free + reserved
        if signal is Signal.FB_USED_RATIO:
            return fb_used_ratio(used, free, reserved)
        if signal is Signal.FB_USED_MIB:
            return used
        return self.raw(_PLAIN[signal])


_PLAIN = {
    Signal.TEMP_C: "DCGM_FI_DEV_GPU_TEMP",
    Signal.POWER_W: "DCGM_FI_DEV_POWER_USAGE",
    Signal.XID: "DCGM_FI_DEV_XID_ERRORS",
    Signal.TENSOR_ACTIVE_RATIO: "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
}
"""Signals that are an exporter metric as it is."""


def _utc(unix_s: int) -> datetime:
    return datetime.fromtimestamp(unix_s, tz=UTC)
