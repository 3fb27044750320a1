"""The weekly tables' array shortcuts give exactly what the straightforward computations
give: money on micro-units as pyarrow's decimal products and rounding, holder rows
placed cell by cell as a sort of every row, episodes' worst values as the fold hour by
hour."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gpuwatch.analysis.rules.hits import Hits
from gpuwatch.analysis.rules.schema import ThresholdRule
from gpuwatch.model.findings import GpuHolder
from gpuwatch.report.schema import MONEY
from gpuwatch.weekly import episodes
from gpuwatch.weekly.holders import ALLOCATION, EXPORTER, _Source, _with_rest
from gpuwatch.weekly.micro import from_micro, ratio_micro, times, to_micro

_EPSILON = 1e-9


def _ratios(rng: np.random.Generator) -> np.ndarray:
    """Ratios in 0..1: random, on the sixth place and exactly half-way past it."""
    return np.concatenate(
        [
            rng.random(20_000),
            np.arange(0, 1_000_001, 997) / 1e6,
            (np.arange(0, 2_000_001, 1999) + 0.5) / 2e6,
            [0.0, 1.0, 0.5, 5e-7, 1.5e-6, 2.5e-6, 0.9999995, 0.1234565, 0.1234575],
        ]
    )


def test_ratios_round_as_pyarrow_rounds_and_casts_them():
    ratios = _ratios(np.random.default_rng(3))
    expected, _ = to_micro(pc.round(pa.array(ratios), 6).cast(MONEY))
    assert ratio_micro(ratios).tolist() == expected.tolist()


def test_products_round_half_to_even_as_pyarrow_decimals_do():
    rng = np.random.default_rng(4)
    n = 30_000
    total = rng.integers(-(10**17), 10**17, n)
    total[:8] = [500_000, 1_500_000, 2_500_000, 1, 3, 7, -1, -1_500_000]
    factor = rng.integers(0, 10**6 + 1, n)
    factor[:8] = [1, 1, 1, 500_000, 500_000, 500_000, 500_000, 1]
    valid = np.ones(n, dtype=bool)
    product = pc.multiply(from_micro(total, valid), from_micro(factor, valid))
    expected, _ = to_micro(pc.round(product, 6).cast(MONEY))
    assert times(total, factor).tolist() == expected.tolist()


def _sorted_rows(size: int, sources: list[_Source]) -> list[tuple]:
    """The holder rows as a sort of every row gives them (scaled, rest added)."""
    cell = np.concatenate([s.cell for s in sources])
    code = np.concatenate([s.code for s in sources])
    fraction = np.concatenate([s.fraction for s in sources])
    evidence = np.concatenate([np.full(s.cell.size, s.evidence, np.int8) for s in sources])
    total = np.bincount(cell, weights=fraction, minlength=size)
    over = total > 1.0
    fraction = np.where(over[cell], fraction / np.where(over, total, 1.0)[cell], fraction)
    total = np.minimum(total, 1.0)
    rest = np.flatnonzero(total < 1.0 - _EPSILON)
    cell = np.concatenate([cell, rest])
    code = np.concatenate([code, np.full(rest.size, -1)])
    fraction = np.concatenate([fraction, 1.0 - total[rest]])
    evidence = np.concatenate([evidence, np.full(rest.size, -1, np.int8)])
    order = np.lexsort((code, -fraction, code < 0, cell))
    return list(
        zip(
            cell[order].tolist(),
            code[order].tolist(),
            fraction[order].tolist(),
            evidence[order].tolist(),
            strict=True,
        )
    )


def test_holder_rows_land_where_sorting_every_row_puts_them():
    rng = np.random.default_rng(5)
    size = 3_000
    sources = []
    for k, evidence in enumerate((EXPORTER, ALLOCATION, ALLOCATION, ALLOCATION)):
        cell = np.flatnonzero(rng.random(size) < (0.7 if k == 0 else 0.3))
        # Equal shares (ties), shares adding up past the GPU, holders named twice.
        fraction = rng.choice([0.25, 0.5, 0.6, 1.0, 0.3333], cell.size)
        code = rng.integers(0, 6, cell.size).astype(np.int32)
        sources.append(_Source(cell, code, fraction, evidence))
    vocabulary = tuple(GpuHolder("ns", f"pod-{i}", None, "team") for i in range(6))
    held = _with_rest(vocabulary, size, sources)
    got = list(
        zip(
            held.cell.tolist(),
            held.code.tolist(),
            held.fraction.tolist(),
            held.evidence.tolist(),
            strict=True,
        )
    )
    assert got == _sorted_rows(size, sources)
    first = {}
    for cell, code, _, _ in got:
        first.setdefault(cell, code)
    assert held.main.tolist() == [first[c] if first.get(c, -1) >= 0 else -1 for c in range(size)]


def test_the_worst_of_each_run_is_the_fold_of_its_hours():
    rng = np.random.default_rng(6)
    values = rng.choice([0.05, 0.1, 0.2, 0.5, 0.9, np.nan], (40, 60))
    fired = rng.random(values.shape) < 0.6
    for threshold in (0.2, None):
        hits = Hits(fired, values, values, threshold, "ratio")
        edges = np.diff(np.pad(fired, ((0, 0), (1, 1))).astype(np.int8), axis=1)
        rows, starts = np.nonzero(edges == 1)
        ends = np.nonzero(edges == -1)[1] - 1
        rule = ThresholdRule(
            id="r",
            kind="threshold",
            signal="util_ratio",
            aggregate="avg",
            op="<",
            threshold=0.2,
            window="1h",
        )
        runs = episodes._Runs(rule, hits, rows, starts, ends)
        worst = runs.worst()
        for k, (i, j0, j1) in enumerate(zip(rows, starts, ends, strict=True)):
            first = None if np.isnan(values[i, j0]) else float(values[i, j0])
            folded = episodes._worst(first, values[i, j0 + 1 : j1 + 1], threshold)
            assert (np.isnan(worst[k]) and folded is None) or worst[k] == folded
