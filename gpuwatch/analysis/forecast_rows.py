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

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gpuwatch.analysis.forecast import (
    MAX_FIT_SAMPLES,
    FitSettings,
    FitVerdict,
    GrowthFit,
    eta_of,
    judged,
    theil_sen,
    verdict_of,
)
from gpuwatch.model.metrics import FloatArray

PAIRS_PER_CHUNK = 1 << 18
"""Pairwise slopes held at once (2 MiB of float64 per array), whatever the fleet."""

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class RowFits:
    """The fits of many rows: each row's verdict and estimate at hand, its ``GrowthFit``
    built when asked (a fleet of fit objects would cost more than the fits)."""

    threshold: float
    settings: FitSettings
    verdicts: list[FitVerdict]
    eta_s: list[float | None]
    """Each row's ``eta_s``: seconds to the threshold (rising), 0 (reached), else None."""
    samples: IntArray
    segment_start_s: FloatArray
    """NaN where the row has no samples or has reached the threshold."""
    last: FloatArray
    """NaN where the row has no samples."""
    lines: FloatArray
    """(rows x 3): the fitted line's slope, level and R² (NaN where no line was fitted)."""

    def __len__(self) -> int:
        return len(self.verdicts)

    def __getitem__(self, row: int) -> GrowthFit:
        verdict, samples = self.verdicts[row], int(self.samples[row])
        start = None if math.isnan(self.segment_start_s[row]) else float(self.segment_start_s[row])
        last = None if math.isnan(self.last[row]) else float(self.last[row])
        if verdict in (FitVerdict.TOO_FEW_SAMPLES, FitVerdict.REACHED):
            return GrowthFit(verdict, samples, start, last=last, eta_s=self.eta_s[row])
        slope, level, r2 = self.lines[row].tolist()
        return judged(
            samples, start, last, slope, level, max(r2, 0.0), self.threshold, self.settings
        )


def fit_rows(
    times_s: FloatArray,
    values: FloatArray,
    threshold: float,
    settings: FitSettings,
) -> RowFits:
    """``fit_growth(times_s, values[i], threshold, settings)`` for every row ``i`` of
    ``values`` (rows x len(times_s), NaN where missing), as ``RowFits``."""
    t_all = np.asarray(times_s, dtype=np.float64)
    v_all = np.asarray(values, dtype=np.float64)
    n = v_all.shape[0]
    lines = np.full((n, 3), np.nan)
    if t_all.size == 0:
        nothing = np.full(n, np.nan)
        return RowFits(
            threshold, settings, [FitVerdict.TOO_FEW_SAMPLES] * n, [None] * n,
            np.zeros(n, np.int64), nothing, nothing, lines,
        )  # fmt: skip
    rows = np.arange(n)
    present = ~np.isnan(v_all)
    col = np.arange(t_all.size, dtype=np.int32)  # column indices: half the memory of int64
    # Per column: the column of the row's latest present sample at or before it.
    latest = np.maximum.accumulate(np.where(present, col, -1), axis=1)
    newest = latest[:, -1]
    empty = newest < 0
    last = np.where(empty, np.nan, v_all[rows, np.maximum(newest, 0)])
    before = np.concatenate([np.full((n, 1), -1), latest[:, :-1]], axis=1)
    with np.errstate(invalid="ignore"):
        step = v_all - v_all[rows[:, None], np.maximum(before, 0)]
        drop = present & (before >= 0) & (step < -settings.restart_drop)
        reached = ~empty & (last >= threshold)
    start = np.where(drop.any(axis=1), np.where(drop, col, -1).max(axis=1), present.argmax(axis=1))
    in_segment = present & (col >= start[:, None])
    samples = np.where(reached, present.sum(axis=1), in_segment.sum(axis=1))
    span = t_all[np.maximum(newest, 0)] - t_all[start]
    short = (samples < max(settings.min_samples, 2)) | (span < settings.min_span_s)
    verdicts = [FitVerdict.TOO_FEW_SAMPLES] * n
    eta_s: list[float | None] = [None] * n
    for i in np.flatnonzero(reached).tolist():
        verdicts[i], eta_s[i] = FitVerdict.REACHED, 0.0
    fitted = np.flatnonzero(~empty & ~reached & ~short)
    picked = _thinned(in_segment[fitted], samples[fitted])
    lengths = picked.sum(axis=1)
    for length in np.unique(lengths).tolist():
        group = np.flatnonzero(lengths == length)
        chunk = max(PAIRS_PER_CHUNK // max(length * (length - 1) // 2, 1), 1)
        for first in range(0, group.size, chunk):
            members = fitted[group[first : first + chunk]]
            columns = np.nonzero(picked[group[first : first + chunk]])[1]
            columns = columns.reshape(members.size, length)
            lines[members] = _lines(t_all[columns], v_all[members[:, None], columns])
    for i, (slope, level, r2) in zip(fitted.tolist(), lines[fitted].tolist(), strict=True):
        verdicts[i] = verdict_of(slope, max(r2, 0.0), settings)
        if verdicts[i] is FitVerdict.RISING:
            eta_s[i] = eta_of(threshold, level, slope)
    segment_start = np.where(empty | reached, np.nan, t_all[start])
    return RowFits(threshold, settings, verdicts, eta_s, samples, segment_start, last, lines)


def _thinned(in_segment: npt.NDArray[np.bool_], samples: IntArray) -> npt.NDArray[np.bool_]:
    """The samples each fit uses: every k-th back from the newest when there are more
    than ``MAX_FIT_SAMPLES`` (``fit_growth``'s thinning)."""
    every = np.where(samples > MAX_FIT_SAMPLES, -(-samples // MAX_FIT_SAMPLES), 1)
    after = samples[:, None] - np.cumsum(in_segment, axis=1)  # segment samples after each
    return in_segment & (after % every[:, None] == 0)


def _lines(t: FloatArray, v: FloatArray) -> FloatArray:
    """(rows x 3): the slope, the level at the newest sample and the R² (before it is
    floored at 0) of each row's Theil–Sen line, as ``fit_growth`` computes them."""
    size = t.shape[1]
    offset = t - t[:, :1]
    i, j = np.triu_indices(size, k=1)
    dt = offset[:, j] - offset[:, i]
    regular = (dt > 0).all(axis=1)
    # (The medians may sort the temporaries they are given in place.)
    if regular.all():
        slope = np.median((v[:, j] - v[:, i]) / dt, axis=1, overwrite_input=True)
    else:
        slope = np.empty(t.shape[0])
        if regular.any():
            slopes = (v[regular][:, j] - v[regular][:, i]) / dt[regular]
            slope[regular] = np.median(slopes, axis=1, overwrite_input=True)
        for row in np.flatnonzero(~regular).tolist():
            slope[row] = theil_sen(t[row], v[row])[0]
    intercept = np.median(v - slope[:, None] * offset, axis=1, overwrite_input=True)
    level = intercept + slope * offset[:, -1]
    residual = v - (intercept[:, None] + slope[:, None] * offset)
    total = np.sum((v - v.mean(axis=1, keepdims=True)) ** 2, axis=1)
    explained = np.sum(residual**2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(total > 0, 1.0 - explained / total, 0.0)
    return np.stack([slope, level, r2], axis=1)
