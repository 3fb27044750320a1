"""Window reductions over raw samples, with PromQL's semantics.

Used where the samples are local (the simulator, tests, history already downloaded), so
that a local source answers exactly as Prometheus would: windows are left-open
``(at - window_s, at]``, missing samples are skipped rather than taken as zero, and a
device with no sample in the window yields NaN (PromQL returns no series).
"""

from __future__ import annotations

import warnings
from datetime import datetime

import numpy as np

from gpuwatch.model.metrics import Aggregate, AggregateSpec, FloatArray, SeriesBlock


def window_mask(times_s: np.ndarray, at: datetime, window_s: int) -> np.ndarray:
    """Boolean mask of the grid times inside ``(at - window_s, at]``."""
    at_s = at.timestamp()
    return (times_s > at_s - window_s) & (times_s <= at_s)


def reduce_window(block: SeriesBlock, spec: AggregateSpec, at: datetime) -> FloatArray:
    """One aggregate for every device of ``block``, NaN where a device has no sample."""
    mask = window_mask(block.times_s, at, spec.window_s)
    values = block.values[spec.signal][:, mask]
    times = block.times_s[mask].astype(np.float64)
    present = ~np.isnan(values)
    count = present.sum(axis=1).astype(np.float64)
    empty = count == 0
    if spec.aggregate is Aggregate.COUNT:
        return count
    with warnings.catch_warnings():
        # All-NaN rows are expected (a GPU with no data); they are set to NaN below.
        warnings.simplefilter("ignore", category=RuntimeWarning)
        if spec.aggregate is Aggregate.AVG:
            result = np.nanmean(values, axis=1)
        elif spec.aggregate is Aggregate.MAX:
            result = np.nanmax(values, axis=1) if values.shape[1] else count * np.nan
        elif spec.aggregate is Aggregate.MIN:
            result = np.nanmin(values, axis=1) if values.shape[1] else count * np.nan
        elif spec.aggregate in (Aggregate.LAST, Aggregate.LAST_TS):
            # Index of the newest present sample in each row.
            last_idx = values.shape[1] - 1 - np.argmax(present[:, ::-1], axis=1)
            if values.shape[1] == 0:
                result = count * np.nan
            elif spec.aggregate is Aggregate.LAST:
                result = values[np.arange(values.shape[0]), last_idx]
            else:
                result = times[last_idx]
        elif spec.aggregate is Aggregate.P95:
            result = nan_percentile(values, 95.0) if values.shape[1] else count * np.nan
        elif spec.aggregate is Aggregate.CHANGES:
            result = changes(values)
        else:  # pragma: no cover - exhaustive over Aggregate
            raise ValueError(f"unknown aggregate {spec.aggregate}")
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
