"""The utilization heatmap: a row per GPU (or group of GPUs) and a column per hour, gaps
kept as gaps (NaN), never drawn as 0 % (which would read as idle)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gpuwatch.report.data import ReportPeriod
from gpuwatch.report.figures.columns import NO_POOL, Columns


@dataclass(frozen=True, eq=False)
class Heatmap:
    """Utilization per GPU (row) and hour (column); NaN where there was no data."""

    values: np.ndarray
    """float64, shape ``(len(row_labels), hours)``, 0..1 or NaN."""
    row_labels: tuple[str, ...]
    row_pools: tuple[str, ...]
    start: datetime
    gpus: int
    gpus_per_row: int
    """1, or the size of the groups of consecutive GPUs each row averages."""

    @property
    def hours(self) -> int:
        return int(self.values.shape[1])

    @property
    def grouped(self) -> bool:
        return self.gpus_per_row > 1


def heatmap(hourly: pa.Table | Columns, period: ReportPeriod, *, max_rows: int = 240) -> Heatmap:
    """Utilization per GPU and hour of ``period``.

    Rows are the GPUs (devices: a MIG instance is its own row) sorted by pool, node and
    index. With more GPUs than ``max_rows``, each row is a group of consecutive GPUs of
    one pool (a group never spans pools while that fits), the coverage-weighted mean of
    the group's GPUs. A cell no GPU of its row has data for is NaN.
    """
    columns = Columns.of(hourly)
    hours = max(period.hours, 0)
    device_codes, devices = _sorted_devices(columns)
    group_size, group_of = _group_devices([pool for _, pool, *_ in devices], max_rows)
    rows = int(group_of.max()) + 1 if devices else 0
    values = np.full((rows, hours), np.nan)
    if devices and hours:
        hour_s = pc.cast(columns.table["hour"], pa.int64()).to_numpy(zero_copy_only=False)
        column = (hour_s - int(period.start.timestamp())) // 3600
        util = columns.floats("util_mean_ratio")
        coverage = columns.floats("coverage_ratio")
        inside = (column >= 0) & (column < hours)
        weight = np.where(np.isnan(util) | ~inside, 0.0, np.clip(coverage, 0.0, 1.0))
        cell = group_of[device_codes] * hours + np.where(inside, column, 0)
        weighted = np.bincount(cell, weights=np.nan_to_num(util) * weight, minlength=rows * hours)
        total = np.bincount(cell, weights=weight, minlength=rows * hours)
        with np.errstate(invalid="ignore", divide="ignore"):
            flat = np.where(total > 0, weighted / total, np.nan)
        values = np.clip(flat.reshape(rows, hours), 0.0, 1.0)
    labels, pools = _row_labels(devices, group_of, rows)
    return Heatmap(
        values=values,
        row_labels=labels,
        row_pools=pools,
        start=period.start,
        gpus=len(devices),
        gpus_per_row=group_size,
    )


_Device = tuple[str, str, str, int | None, str | None]
"""device_id, pool (keyed), node, gpu_index, mig_profile."""


def _sorted_devices(hourly: pa.Table | Columns) -> tuple[np.ndarray, list[_Device]]:
    """Each row's device as its position in the devices sorted, and the devices: each
    with the least pool, node, index and MIG profile of its rows (nulls skipped)."""
    columns = Columns.of(hourly)
    if not columns.num_rows:
        return np.zeros(0, dtype=np.int64), []
    device = columns.keys("device_id", "")
    count = len(device.names)
    found = zip(
        device.names,
        *(_least(columns.values(name), device.codes, count) for name in _DEVICE_COLUMNS),
        range(count),
        strict=True,
    )
    devices = sorted(
        found, key=lambda d: (d[1] is None, d[1] or "", d[2], d[3] is None, d[3] or 0, d[0])
    )
    position = np.empty(count, dtype=np.int64)
    position[[d[-1] for d in devices]] = np.arange(count)
    return position[device.codes], [
        (device, pool or NO_POOL, node, index, mig) for device, pool, node, index, mig, _ in devices
    ]


_DEVICE_COLUMNS = ("pool", "node", "gpu_index", "mig_profile")


def _least(column: tuple[np.ndarray, list[Any]], groups: np.ndarray, count: int) -> list[Any]:
    """Per group, the least value of a column (its ``value_codes``) in it, as pyarrow's
    ``min`` (strings by code point, which is UTF-8's byte order); None when all of them
    are null."""
    codes, values = column
    order = sorted(range(len(values)), key=lambda i: (values[i] is None, values[i]))
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.arange(len(values))
    least = np.full(count, len(values), dtype=np.int64)
    np.minimum.at(least, groups, rank[codes])
    ranked = [values[i] for i in order] + [None]
    return [ranked[r] for r in least.tolist()]


def _group_devices(pools: Sequence[str], max_rows: int) -> tuple[int, np.ndarray]:
    """Group size and each device's row. Groups are consecutive devices of one pool, the
    smallest size for which all rows fit; when even that cannot fit (more pools than
    rows), groups span pools."""
    count = len(pools)
    if count <= max_rows:
        return 1, np.arange(count, dtype=np.int64)
    # Pool runs: the devices are sorted by pool, so each pool is one run.
    starts = np.flatnonzero(np.r_[True, np.asarray(pools[1:]) != np.asarray(pools[:-1])])
    lengths = np.diff(np.r_[starts, count])
    size = math.ceil(count / max_rows)
    if starts.size <= max_rows:
        while int(np.ceil(lengths / size).sum()) > max_rows:
            size += 1
        position = np.arange(count) - np.repeat(starts, lengths)
        rows_before = np.r_[0, np.cumsum(np.ceil(lengths / size).astype(np.int64))[:-1]]
        return size, np.repeat(rows_before, lengths) + position // size
    return size, np.arange(count, dtype=np.int64) // size


def _row_labels(
    devices: Sequence[_Device], group_of: np.ndarray, rows: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    labels: list[str] = []
    pools: list[str] = []
    if not rows:
        return (), ()
    starts = np.searchsorted(group_of, np.arange(rows), side="left")
    ends = np.r_[starts[1:], len(devices)]
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        _, pool, node, index, mig = devices[start]
        pools.append(pool)
        if end - start == 1:
            name = f"{node}/{index}" if index is not None else node
            labels.append(f"{name} {mig}" if mig else name)
            continue
        last_node = devices[end - 1][2]
        nodes = node if node == last_node else f"{node} … {last_node}"
        labels.append(f"{nodes} ({end - start} GPUs)")
    return tuple(labels), tuple(pools)
