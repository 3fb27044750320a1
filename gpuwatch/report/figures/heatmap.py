"""The utilization heatmap: a row per GPU (or group of GPUs) and a column per hour, gaps
kept as gaps (NaN), never drawn as 0 % (which would read as idle)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gpuwatch.report.data import ReportPeriod
from gpuwatch.report.figures.columns import NO_POOL, floats


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


def heatmap(hourly: pa.Table, period: ReportPeriod, *, max_rows: int = 240) -> Heatmap:
    """Utilization per GPU and hour of ``period``.

    Rows are the GPUs (devices: a MIG instance is its own row) sorted by pool, node and
    index. With more GPUs than ``max_rows``, each row is a group of consecutive GPUs of
    one pool (a group never spans pools while that fits), the coverage-weighted mean of
    the group's GPUs. A cell no GPU of its row has data for is NaN.
    """
    hours = max(period.hours, 0)
    devices = _sorted_devices(hourly)
    group_size, group_of = _group_devices([pool for _, pool, *_ in devices], max_rows)
    rows = int(group_of.max()) + 1 if devices else 0
    values = np.full((rows, hours), np.nan)
    if devices and hours:
        device_ids = pa.array([device for device, *_ in devices], pa.string())
        device_row = pc.index_in(hourly["device_id"], value_set=device_ids).to_numpy(
            zero_copy_only=False
        )
        hour_s = pc.cast(hourly["hour"], pa.int64()).to_numpy(zero_copy_only=False)
        column = (hour_s - int(period.start.timestamp())) // 3600
        util = floats(hourly, "util_mean_ratio")
        coverage = floats(hourly, "coverage_ratio")
        inside = (column >= 0) & (column < hours)
        weight = np.where(np.isnan(util) | ~inside, 0.0, np.clip(coverage, 0.0, 1.0))
        cell = group_of[device_row] * hours + np.where(inside, column, 0)
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


def _sorted_devices(hourly: pa.Table) -> list[_Device]:
    if not hourly.num_rows:
        return []
    grouped = hourly.group_by("device_id").aggregate(
        [("pool", "min"), ("node", "min"), ("gpu_index", "min"), ("mig_profile", "min")]
    )
    devices = list(
        zip(
            grouped["device_id"].to_pylist(),
            grouped["pool_min"].to_pylist(),
            grouped["node_min"].to_pylist(),
            grouped["gpu_index_min"].to_pylist(),
            grouped["mig_profile_min"].to_pylist(),
            strict=True,
        )
    )
    devices.sort(key=lambda d: (d[1] is None, d[1] or "", d[2], d[3] is None, d[3] or 0, d[0]))
    return [
        (device, pool or NO_POOL, node, index, mig) for device, pool, node, index, mig in devices
    ]


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
