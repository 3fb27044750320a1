"""Window reductions over raw samples, with PromQL's semantics.

Used where the samples are local (the simulator, tests, history already downloaded), so
that a local source answers exactly as Prometheus would: windows are left-open
``(at - window_s, at]``, missing samples are skipped rather than taken as zero, and a
device with no sample in the window yields NaN (PromQL returns no series).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
from numpy.lib.stride_tricks import as_strided

from gpuwatch.model.metrics import Aggregate, AggregateSpec, FloatArray, SeriesBlock, Signal


def window_mask(times_s: np.ndarray, at: datetime, window_s: int) -> np.ndarray:
    """Boolean mask of the grid times inside ``(at - window_s, at]``."""
    at_s = at.timestamp()
    return (times_s > at_s - window_s) & (times_s <= at_s)


def reduce_window(block: SeriesBlock, spec: AggregateSpec, at: datetime) -> FloatArray:
    """One aggregate for every device of ``block``, NaN where a device has no sample."""
    mask = window_mask(block.times_s, at, spec.window_s)
    return reduce_rows(block.values[spec.signal][:, mask], block.times_s[mask], spec.aggregate)


def reduce_windows_many(
    block: SeriesBlock, specs: Sequence[AggregateSpec], at_s: np.ndarray
) -> dict[AggregateSpec, FloatArray]:
    """``reduce_window`` of each of ``specs`` at each of the instants ``at_s``: per spec
    an array (devices, instants).

    Where the block's times are a regular grid holding every window whole (the windows'
    ends on the grid, their length a whole number of steps), the windows are gathered
    into one (devices x instants, samples) array and reduced in one call; the rows are
    the very samples ``reduce_window`` would take, in the same order, so the results are
    the same to the bit. Otherwise, one instant at a time. The aggregates of one signal
    over one window length share one gathering of the windows."""
    out: dict[AggregateSpec, FloatArray] = {}
    shared: dict[tuple[Signal, int], list[AggregateSpec]] = {}
    for spec in specs:
        shared.setdefault((spec.signal, spec.window_s), []).append(spec)
    times = block.times_s
    step = int(times[1] - times[0]) if times.size > 1 else 0
    ends = np.searchsorted(times, at_s, side="right")
    grid = step > 0 and bool(np.all(np.diff(times) == step))
    on_grid = bool(np.all(times[np.maximum(ends - 1, 0)] == at_s)) if times.size else False
    for (signal, window_s), alike in shared.items():
        width = window_s // step if step else 0
        regular = grid and on_grid and window_s % step == 0 and bool(np.all(ends - width >= 0))
        if not regular or width == 0:
            for spec in alike:
                out[spec] = np.empty((len(block.devices), at_s.size))
                for col, at in enumerate(at_s.tolist()):
                    when = datetime.fromtimestamp(at, tz=UTC)
                    out[spec][:, col] = reduce_window(block, spec, when)
            continue
        values = block.values[signal]
        index = ends[:, None] - width + np.arange(width)  # (instants, samples)
        gathered = _gathered(values, ends, width, index)
        for spec in alike:
            reduced = reduce_rows(gathered, times[index], spec.aggregate, at_s.size)
            out[spec] = reduced.reshape(values.shape[0], at_s.size)
    return out


def _gathered(values: FloatArray, ends: np.ndarray, width: int, index: np.ndarray) -> FloatArray:
    """The windows ending at columns ``ends`` of ``values`` (each ``width`` samples) as
    one (devices x instants, samples) array, column-major as ``values[:, mask]`` is: a
    row then sums in the same order as one window alone. Windows evenly spaced (hours
    of a grid) are copied through a strided view, not gathered by index."""
    n, k = values.shape[0], ends.size
    spacing = np.diff(ends)
    if k > 1 and not bool(np.all(spacing == spacing[0])):
        return np.asfortranarray(values[:, index].reshape(-1, width))
    row, col = values.strides
    period = int(spacing[0]) if k > 1 else width
    view = as_strided(
        values[:, int(ends[0]) - width :],
        shape=(n, k, width),
        strides=(row, period * col, col),
        writeable=False,
    )
    out = np.empty((width, n, k))
    np.copyto(out, view.transpose(2, 0, 1))
    return out.reshape(width, n * k).T


def reduce_rows(
    values: FloatArray, times: np.ndarray, aggregate: Aggregate, per_row_times: int = 0
) -> FloatArray:
    """``aggregate`` of each row of ``values`` (its samples at ``times``), NaN for a row
    without a sample. ``times`` is one row of times for every row, or with
    ``per_row_times`` = k one row of times per row modulo k (gathered windows)."""
    present = ~np.isnan(values)
    count = present.sum(axis=1).astype(np.float64)
    empty = count == 0
    if aggregate is Aggregate.COUNT:
        return count
    with warnings.catch_warnings():
        # All-NaN rows are expected (a GPU with no data); they are set to NaN below.
        warnings.simplefilter("ignore", category=RuntimeWarning)
        if aggregate is Aggregate.AVG:
            result = np.nanmean(values, axis=1)
        elif aggregate is Aggregate.MAX:
            result = np.nanmax(values, axis=1) if values.shape[1] else count * np.nan
        elif aggregate is Aggregate.MIN:
            result = np.nanmin(values, axis=1) if values.shape[1] else count * np.nan
        elif aggregate in (Aggregate.LAST, Aggregate.LAST_TS):
            # Index of the newest present sample in each row.
            last_idx = values.shape[1] - 1 - np.argmax(present[:, ::-1], axis=1)
            if values.shape[1] == 0:
                result = count * np.nan
            elif aggregate is Aggregate.LAST:
                result = values[np.arange(values.shape[0]), last_idx]
            elif per_row_times:
                rows = np.arange(values.shape[0]) % per_row_times
                result = times[rows, last_idx].astype(np.float64)
            else:
                result = times[last_idx].astype(np.float64)
        elif aggregate is Aggregate.P95:
            result = nan_percentile(values, 95.0) if values.shape[1] else count * np.nan
        elif aggregate is Aggregate.CHANGES:
            result = changes(values)
        else:  # pragma: no cover - exhaustive over Aggregate
            raise ValueError(f"unknown aggregate {aggregate}")
    result = np.asarray(result, dtype=np.float64)
    result[empty] = np.nan
    return result


def nan_percentile(values: FloatArray, q: float) -> FloatArray:
    """``np.nanpercentile(values, q, axis=1)`` (linear interpolation, as Prometheus'
    ``quantile_over_time``) for a 2-D array, vectorised: one sort instead of a Python
    call per row, which is what numpy does as soon as a row has a NaN."""
    ordered = np.sort(values, axis=1)  # NaN sort last
    count = (~np.isnan(values)).sum(axis=1)
    rank = (q / 100.0) * np.maximum(count - 1, 0)
    low = np.floor(rank).astype(np.int64)
    high = np.minimum(low + 1, np.maximum(count - 1, 0))
    rows = np.arange(values.shape[0])
    below, above = ordered[rows, low], ordered[rows, high]
    result = below + (above - below) * (rank - low)
    return np.where(count > 0, result, np.nan)


def changes(values: FloatArray) -> FloatArray:
    """PromQL ``changes()`` per row: value changes between consecutive present samples,
    vectorised (each sample is compared with the newest present one before it)."""
    present = ~np.isnan(values)
    if values.shape[1] < 2:
        return np.zeros(values.shape[0])
    cols = np.arange(values.shape[1])
    newest = np.maximum.accumulate(np.where(present, cols, -1), axis=1)
    rows = np.arange(values.shape[0])[:, None]
    before = newest[:, :-1]
    previous = values[rows, np.maximum(before, 0)]
    counted = present[:, 1:] & (before >= 0) & (values[:, 1:] != previous)
    return counted.sum(axis=1).astype(np.float64)
