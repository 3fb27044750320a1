"""The fits of many GPUs at once are ``fit_growth``'s, row by row, to the last bit."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from gpuwatch.analysis.forecast import MAX_FIT_SAMPLES, FitSettings, FitVerdict, fit_growth
from gpuwatch.analysis.forecast_rows import fit_rows

SETTINGS = FitSettings()


def _same(times: np.ndarray, values: np.ndarray, threshold: float, settings: FitSettings):
    """Each row's batch fit against its fit alone, compared field by field and bit by bit
    (pickles compare floats by their bits: -0.0 is not 0.0, NaN is NaN)."""
    batch = fit_rows(times, values, threshold, settings)
    assert len(batch) == values.shape[0]
    fits = [batch[row] for row in range(len(batch))]
    for row, got in enumerate(fits):
        want = fit_growth(times, values[row], threshold, settings)
        assert pickle.dumps(got) == pickle.dumps(want), (row, got, want)
        # What a rule filters on before it asks for the fit: the fit's own.
        assert batch.verdicts[row] is want.verdict
        assert pickle.dumps(batch.eta_s[row]) == pickle.dumps(want.eta_s)
    return fits


def _minutes(n: int, step_s: float = 60.0) -> np.ndarray:
    return 1.7e9 + step_s * np.arange(n, dtype=np.float64)


def test_every_verdict_in_one_batch():
    t = _minutes(60)
    k = np.arange(60)
    rows = np.array(
        [
            0.60 + 0.005 * k,  # rising
            np.full(60, 0.9),  # flat
            0.9 - 0.002 * k,  # falling
            0.90 + 0.01 * np.sin(k) + 0.0002 * k,  # noisy plateau: poor fit
            np.full(60, 0.97),  # reached
            np.full(60, np.nan),  # no samples
            np.where(k < 55, np.nan, 0.5 + 0.001 * k),  # too few samples
        ]
    )
    fits = _same(t, rows, 0.95, SETTINGS)
    assert [f.verdict for f in fits] == [
        FitVerdict.RISING,
        FitVerdict.FLAT,
        FitVerdict.FALLING,
        FitVerdict.POOR_FIT,
        FitVerdict.REACHED,
        FitVerdict.TOO_FEW_SAMPLES,
        FitVerdict.TOO_FEW_SAMPLES,
    ]


def test_gaps_restarts_and_rows_of_different_lengths():
    rng = np.random.default_rng(11)
    t = _minutes(150, 30.0)
    base = rng.uniform(0.2, 0.8, (60, 1)) + rng.normal(0, 0.0004, (60, 1)) * np.arange(150)
    values = base + rng.normal(0, 0.003, (60, 150))
    values[rng.random((60, 150)) < 0.4] = np.nan  # gaps: each row keeps its own samples
    values[rng.random((60, 150)) < 0.02] -= 0.3  # restarts at random places
    values[:5, :140] = np.nan  # a few rows with fewer than the minimum
    fits = _same(t, values, 0.95, SETTINGS)
    assert len({f.samples for f in fits}) > 10  # many lengths, so many groups


def test_more_samples_than_a_fit_keeps_are_thinned_alike():
    t = _minutes(3 * MAX_FIT_SAMPLES + 7, 15.0)
    k = np.arange(t.size)
    rows = np.array([0.3 + 0.0002 * k, 0.3 + 0.0002 * k + 0.001 * np.cos(k)])
    rows[1, ::7] = np.nan
    _same(t, rows, 0.95, SETTINGS)


def test_ties_zeros_and_rounded_values():
    rng = np.random.default_rng(5)
    t = _minutes(40)
    values = np.round(rng.uniform(0, 0.02, (30, 1)) * np.arange(40) / 10, 2)
    values[:3] = 0.0
    values[3] = -0.0
    values[4, ::2] = 0.5  # every other sample the same: many equal slopes
    _same(t, values, 0.95, FitSettings(min_samples=2, min_span_s=0.0))


def test_repeated_sample_times_are_fitted_one_at_a_time_alike():
    t = np.repeat(_minutes(20), 2)  # each time twice: pairs with no time between them
    values = np.vstack([0.5 + 0.001 * np.arange(40), 0.5 + 0.002 * np.arange(40)])
    _same(t, values, 0.95, FitSettings(min_samples=2, min_span_s=0.0))


@pytest.mark.parametrize("n", [0, 1, 2, 9, 10])
def test_edges_of_the_minimum(n):
    t = _minutes(n)
    values = np.vstack([0.5 + 0.01 * np.arange(n), np.full(n, np.nan)])
    _same(t, values, 0.95, SETTINGS)
    _same(t, values, 0.95, FitSettings(min_samples=2, min_span_s=0.0))
    assert len(fit_rows(t, np.empty((0, n)), 0.95, SETTINGS)) == 0  # no GPU at all


def test_random_fleets_of_every_shape():
    rng = np.random.default_rng(2024)
    for _ in range(60):
        size = int(rng.integers(0, 130))
        t = _minutes(size, float(rng.choice([15.0, 30.0, 60.0, 300.0])))
        n = int(rng.integers(1, 25))
        slope = rng.normal(0, 0.001, (n, 1))
        values = rng.uniform(0.1, 0.9, (n, 1)) + slope * np.arange(size)
        values += rng.normal(0, float(rng.choice([0.0, 1e-3, 1e-2])), (n, size))
        values[rng.random((n, size)) < float(rng.choice([0.0, 0.3, 0.7]))] = np.nan
        settings = FitSettings(
            min_samples=int(rng.choice([2, 10])), min_span_s=float(rng.choice([0.0, 600.0]))
        )
        _same(t, values, float(rng.choice([0.5, 0.95, 1.0])), settings)
