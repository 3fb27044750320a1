"""Time to a threshold: a robust straight-line fit of a GPU's recent samples.

GPU memory in a training job grows linearly or in steps between restarts (a cache that
fills, a curriculum that raises the batch or the resolution, a leak) and falls back when
the process restarts or is OOM-killed. So the fit uses only the samples since the last
drop, and it is Theil–Sen (the median of the slopes between every pair of samples, the
intercept the median residual): one spike or one step moves it little, where a
least-squares line (PromQL's ``predict_linear``) follows the spike.

A fit that explains little of the samples' variation (a noisy plateau), or too few
samples, gives no estimate at all and says why: a forecast that cries wolf on flat
series is worse than none. Pure: arrays in, a frozen result out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from gpuwatch.model.metrics import FloatArray

MAX_FIT_SAMPLES = 90
"""Theil–Sen costs a pair per two samples; above this many samples the newest are kept
every k-th, which leaves the median slope where it was (4,005 pairs a GPU)."""


class FitVerdict(StrEnum):
    """Why a fit gives an estimate, or why it gives none."""

    RISING = "rising"
    """Rising, and the line explains the samples: ``eta_s`` is an estimate."""
    REACHED = "reached"
    """The newest sample is at or past the threshold already."""
    FLAT = "flat"
    FALLING = "falling"
    POOR_FIT = "poor_fit"
    """Rising on the median, but the line explains too little of the variation."""
    TOO_FEW_SAMPLES = "too_few_samples"
    """Fewer samples, or a shorter span, since the last restart than the fit needs."""


@dataclass(frozen=True)
class FitSettings:
    """How demanding the fit is; a forecast rule's fields."""

    min_samples: int = 10
    """Samples since the last restart below which no line is drawn."""
    min_span_s: float = 600.0
    """Seconds between the first and newest sample since the last restart: a line over
    a few minutes says nothing about the next half hour."""
    min_fit_r2: float = 0.6
    """Least share of the samples' variance the line must explain (R², 0..1)."""
    restart_drop: float = 0.10
    """A fall between consecutive samples larger than this (in the signal's unit, so a
    tenth of the card for a ratio) is a restart: the fit starts after it."""
    min_rise_per_h: float = 0.002
    """A slope below this per hour is flat (0.2 % of the card an hour for a ratio)."""


@dataclass(frozen=True)
class GrowthFit:
    """The fit of one GPU's samples, and its estimate of time to the threshold."""

    verdict: FitVerdict
    samples: int
    """Samples the fit used (those since the last restart)."""
    segment_start_s: float | None = None
    """Unix seconds of the first sample used."""
    slope_per_s: float | None = None
    """Growth per second in the signal's unit (ratio per second)."""
    level: float | None = None
    """The line's value at the newest sample."""
    last: float | None = None
    """The newest sample itself."""
    fit_r2: float | None = None
    """Share of the variance since the last restart the line explains (0..1)."""
    eta_s: float | None = None
    """Seconds from the newest sample until the line crosses the threshold; only for a
    ``rising`` fit (0 for ``reached``)."""

    @property
    def rate_per_h(self) -> float | None:
        return None if self.slope_per_s is None else self.slope_per_s * 3600.0


def last_segment(values: FloatArray, restart_drop: float) -> int:
    """Index of the first sample after the last drop larger than ``restart_drop`` (0 when
    there is none); ``values`` holds only present samples."""
    if values.size < 2:
        return 0
    drops = np.flatnonzero(np.diff(values) < -restart_drop)
    return 0 if drops.size == 0 else int(drops[-1]) + 1


def theil_sen(times_s: FloatArray, values: FloatArray) -> tuple[float, float]:
    """(slope, intercept at ``times_s[0]``): the median pairwise slope, and the median
    of what is left once it is taken out."""
    t = times_s - times_s[0]
    i, j = np.triu_indices(t.size, k=1)
    dt = t[j] - t[i]
    keep = dt > 0
    slope = float(np.median((values[j] - values[i])[keep] / dt[keep]))
    intercept = float(np.median(values - slope * t))
    return slope, intercept


def fit_growth(
    times_s: FloatArray,
    values: FloatArray,
    threshold: float,
    settings: FitSettings = FitSettings(),
) -> GrowthFit:
    """When ``values`` (sampled at ``times_s``, NaN where missing) reach ``threshold``
    if they keep growing as they have since the last restart."""
    present = ~np.isnan(values)
    t = np.asarray(times_s, dtype=np.float64)[present]
    v = np.asarray(values, dtype=np.float64)[present]
    if v.size == 0:
        return GrowthFit(FitVerdict.TOO_FEW_SAMPLES, 0)
    last = float(v[-1])
    if last >= threshold:
        return GrowthFit(FitVerdict.REACHED, int(v.size), last=last, eta_s=0.0)
    start = last_segment(v, settings.restart_drop)
    t, v = t[start:], v[start:]
    span_s = float(t[-1] - t[0]) if t.size else 0.0
    base = GrowthFit(
        FitVerdict.TOO_FEW_SAMPLES, int(v.size), segment_start_s=float(t[0]), last=last
    )
    if v.size < max(settings.min_samples, 2) or span_s < settings.min_span_s:
        return base
    if v.size > MAX_FIT_SAMPLES:
        every = math.ceil(v.size / MAX_FIT_SAMPLES)
        picked = np.arange(v.size - 1, -1, -every)[::-1]
        t, v = t[picked], v[picked]
    slope, intercept = theil_sen(t, v)
    level = intercept + slope * float(t[-1] - t[0])
    residual = v - (intercept + slope * (t - t[0]))
    total = float(np.sum((v - v.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / total if total > 0 else 0.0
    return judged(
        base.samples, base.segment_start_s, last, slope, level, max(r2, 0.0), threshold, settings
    )


def verdict_of(slope: float, r2: float, settings: FitSettings) -> FitVerdict:
    """The verdict on a fitted line rising ``slope`` a second and explaining ``r2``."""
    if abs(slope) * 3600.0 < settings.min_rise_per_h:
        return FitVerdict.FLAT
    if slope < 0:
        return FitVerdict.FALLING
    if r2 < settings.min_fit_r2:
        return FitVerdict.POOR_FIT
    return FitVerdict.RISING


def eta_of(threshold: float, level: float, slope: float) -> float:
    """Seconds until a rising line at ``level`` now crosses ``threshold``."""
    return max((threshold - level) / slope, 0.0)


def judged(
    samples: int,
    segment_start_s: float | None,
    last: float | None,
    slope: float,
    level: float,
    r2: float,
    threshold: float,
    settings: FitSettings,
) -> GrowthFit:
    """The fit of a line through ``samples`` samples from ``segment_start_s``, the
    newest ``last``, with its verdict (and its estimate where it is rising)."""
    verdict = verdict_of(slope, r2, settings)
    return GrowthFit(
        verdict,
        samples,
        segment_start_s,
        slope_per_s=slope,
        level=level,
        last=last,
        fit_r2=r2,
        eta_s=eta_of(threshold, level, slope) if verdict is FitVerdict.RISING else None,
    )
