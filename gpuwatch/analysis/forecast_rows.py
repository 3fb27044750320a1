"""``fit_growth`` of many GPUs at once: the same fits, to the last bit, in array passes.

A cycle fits a line through every allocated GPU's recent samples; one call per GPU
spends its time in the calls, not in the arithmetic (a few dozen samples each). Here the
steps of ``fit_growth`` run over all the rows together: the present samples, the last
restart, the gates on samples and span, the thinning to ``MAX_FIT_SAMPLES``, then
Theil–Sen over the rows that fit the same number of samples (each row's pairs in the
order ``theil_sen`` takes them, so the medians and sums are the same numbers). Rows
whose sample times repeat (pairs ``theil_sen`` leaves out) are fitted one at a time.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gpuwatch.analysis.forecast import (
    MAX_FIT_SAMPLES,
    FitSettings,
    FitVerdict,
    GrowthFit,
    judged,
    theil_sen,
)
from gpuwatch.model.metrics import FloatArray

PAIRS_PER_CHUNK = 1 << 21
"""Pairwise slopes held at once (16 MiB of float64 per array), whatever the fleet."""

IntArray = npt.NDArray[np.int64]


def fit_rows(
    times_s: FloatArray,
    values: FloatArray,
    threshold: float,
    settings: FitSettings,
) -> list[GrowthFit]:
    """``fit_growth(times_s, values[i], threshold, settings)`` for every row ``i`` of
    ``values`` (rows x len(times_s), NaN where missing)."""
    t_all = np.asarray(times_s, dtype=np.float64)
    v_all = np.asarray(values, dtype=np.float64)
    if t_all.size == 0:
        return [GrowthFit(FitVerdict.TOO_FEW_SAMPLES, 0) for _ in range(v_all.shape[0])]
    rows = np.arange(v_all.shape[0])
    present = ~np.isnan(v_all)
    col = np.arange(t_all.size)
    # Per column: the column of the row's latest present sample at or before it.
    latest = np.maximum.accumulate(np.where(present, col, -1), axis=1)
    newest = latest[:, -1]
    last = v_all[rows, np.maximum(newest, 0)]
    before = np.concatenate([np.full((rows.size, 1), -1), latest[:, :-1]], axis=1)
    with np.errstate(invalid="ignore"):
        step = v_all - v_all[rows[:, None], np.maximum(before, 0)]
        drop = present & (before >= 0) & (step < -settings.restart_drop)
    start = np.where(drop.any(axis=1), np.where(drop, col, -1).max(axis=1), present.argmax(axis=1))
    in_segment = present & (col >= start[:, None])
    samples = in_segment.sum(axis=1)
    span = t_all[np.maximum(newest, 0)] - t_all[start]
    fits: list[GrowthFit | None] = [None] * rows.size
    empty = newest < 0
    reached = ~empty & (last >= threshold)
    short = (samples < max(settings.min_samples, 2)) | (span < settings.min_span_s)
    for i in np.flatnonzero(empty).tolist():
        fits[i] = GrowthFit(FitVerdict.TOO_FEW_SAMPLES, 0)
    for i in np.flatnonzero(reached).tolist():
        fits[i] = GrowthFit(
            FitVerdict.REACHED, int(present[i].sum()), last=float(last[i]), eta_s=0.0
        )
    bases = {
        i: GrowthFit(
            FitVerdict.TOO_FEW_SAMPLES,
            int(samples[i]),
            segment_start_s=float(t_all[start[i]]),
            last=float(last[i]),
        )
        for i in np.flatnonzero(~empty & ~reached).tolist()
    }
    for i in np.flatnonzero(~empty & ~reached & short).tolist():
        fits[i] = bases[i]
    fitted = np.flatnonzero(~empty & ~reached & ~short)
    picked = _thinned(in_segment[fitted], samples[fitted])
    lengths = picked.sum(axis=1)
    for length in np.unique(lengths).tolist():
        group = np.flatnonzero(lengths == length)
        chunk = max(PAIRS_PER_CHUNK // max(length * (length - 1) // 2, 1), 1)
        for first in range(0, group.size, chunk):
            members = group[first : first + chunk]
            columns = np.nonzero(picked[members])[1].reshape(members.size, length)
            lines = _lines(t_all[columns], v_all[fitted[members, None], columns])
            for k, (slope, level, r2) in enumerate(zip(*lines, strict=True)):
                i = int(fitted[members[k]])
                fits[i] = judged(bases[i], slope, level, r2, threshold, settings)
    return fits  # type: ignore[return-value]


def _thinned(in_segment: npt.NDArray[np.bool_], samples: IntArray) -> npt.NDArray[np.bool_]:
    """The samples each fit uses: every k-th back from the newest when there are more
    than ``MAX_FIT_SAMPLES`` (``fit_growth``'s thinning)."""
    every = np.where(samples > MAX_FIT_SAMPLES, -(-samples // MAX_FIT_SAMPLES), 1)
    after = samples[:, None] - np.cumsum(in_segment, axis=1)  # segment samples after each
    return in_segment & (after % every[:, None] == 0)


def _lines(t: FloatArray, v: FloatArray) -> tuple[list[float], list[float], list[float]]:
    """(slope, level at the newest sample, R² floored at 0) of each row's Theil–Sen line,
    as ``fit_growth`` computes them."""
    size = t.shape[1]
    offset = t - t[:, :1]
    i, j = np.triu_indices(size, k=1)
    dt = offset[:, j] - offset[:, i]
    regular = (dt > 0).all(axis=1)
    slope = np.empty(t.shape[0])
    if regular.any():
        slope[regular] = np.median((v[regular][:, j] - v[regular][:, i]) / dt[regular], axis=1)
    for row in np.flatnonzero(~regular).tolist():
        slope[row] = theil_sen(t[row], v[row])[0]
    intercept = np.median(v - slope[:, None] * offset, axis=1)
    level = intercept + slope * offset[:, -1]
    residual = v - (intercept[:, None] + slope[:, None] * offset)
    total = np.sum((v - v.mean(axis=1, keepdims=True)) ** 2, axis=1)
    explained = np.sum(residual**2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(total > 0, 1.0 - explained / total, 0.0)
    return slope.tolist(), level.tolist(), [max(r, 0.0) for r in r2.tolist()]
