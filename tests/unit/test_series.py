"""Window reductions follow PromQL: left-open windows, gaps skipped, no data is NaN."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from gpuwatch.config.settings import SimulatorSettings
from gpuwatch.model.metrics import Aggregate, AggregateSpec, SeriesBlock, Signal
from gpuwatch.model.series import reduce_window, reduce_windows_many
from gpuwatch.sources.simulator import SimulatedCluster
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from tests.builders import AT, device

NAN = np.nan


def _block(rows: list[list[float]], step_s: int = 60) -> SeriesBlock:
    n = len(rows[0])
    at_s = int(AT.timestamp())
    times = np.arange(at_s - (n - 1) * step_s, at_s + 1, step_s, dtype=np.int64)
    devices = tuple(device(i) for i in range(len(rows)))
    return SeriesBlock(devices, times, {Signal.UTIL_RATIO: np.array(rows, dtype=np.float64)})


def _reduce(block: SeriesBlock, agg: Aggregate, window_s: int) -> np.ndarray:
    return reduce_window(block, AggregateSpec(Signal.UTIL_RATIO, agg, window_s), AT)


def test_window_is_left_open_right_closed():
    # Samples at at-180, at-120, at-60, at. A 120 s window holds at-60 and at only.
    block = _block([[9.0, 5.0, 1.0, 3.0]])
    assert _reduce(block, Aggregate.COUNT, 120)[0] == 2
    assert _reduce(block, Aggregate.AVG, 120)[0] == pytest.approx(2.0)
    assert _reduce(block, Aggregate.MAX, 180)[0] == 5.0


def test_gaps_are_skipped_not_zero():
    block = _block([[0.5, NAN, NAN, 0.5]])
    assert _reduce(block, Aggregate.AVG, 240)[0] == pytest.approx(0.5)
    assert _reduce(block, Aggregate.COUNT, 240)[0] == 2


def test_device_without_data_is_nan():
    block = _block([[NAN, NAN, NAN], [1.0, 2.0, 3.0]])
    for agg in (Aggregate.AVG, Aggregate.MAX, Aggregate.MIN, Aggregate.LAST, Aggregate.LAST_TS):
        assert np.isnan(_reduce(block, agg, 300)[0])
    assert _reduce(block, Aggregate.COUNT, 300)[0] == 0


def test_last_and_last_ts_skip_trailing_gap():
    block = _block([[1.0, 2.0, NAN, NAN]])
    assert _reduce(block, Aggregate.LAST, 300)[0] == 2.0
    assert _reduce(block, Aggregate.LAST_TS, 300)[0] == (AT - timedelta(seconds=120)).timestamp()


def test_changes_counts_value_changes_across_gaps():
    block = _block([[0.0, 79.0, NAN, 79.0, 0.0]])
    assert _reduce(block, Aggregate.CHANGES, 600)[0] == 2
    assert _reduce(_block([[7.0, 7.0, 7.0]]), Aggregate.CHANGES, 600)[0] == 0


def test_empty_window():
    block = _block([[1.0, 2.0]])
    empty = SeriesBlock(block.devices, block.times_s[:0], {Signal.UTIL_RATIO: np.empty((1, 0))})
    assert np.isnan(_reduce(empty, Aggregate.MAX, 60)[0])
    assert _reduce(empty, Aggregate.COUNT, 60)[0] == 0


def test_windows_reduced_together_are_bit_for_bit_those_reduced_one_by_one():
    cluster = SimulatedCluster(SimulatorSettings(gpus=64, days=1, step_s=60), end=SHOWCASE_AT)
    end = SHOWCASE_AT.replace(minute=0)
    block = cluster.samples(end - timedelta(hours=8), end)  # exporter gaps included
    at = np.arange(int(end.timestamp()) - 5 * 3600, int(end.timestamp()) + 1, 3600)
    for signal in Signal:
        for aggregate in Aggregate:
            for window_s in (300, 1800, 3600):
                spec = AggregateSpec(signal, aggregate, window_s)
                together = reduce_windows_many(block, [spec], at)[spec]
                one_by_one = np.stack(
                    [reduce_window(block, spec, datetime.fromtimestamp(t, tz=UTC)) for t in at],
                    axis=1,
                )
                assert np.array_equal(together, one_by_one, equal_nan=True), spec


@pytest.mark.parametrize(
    "offsets",
    [
        [-5 * 3600, -4 * 3600, -3 * 3600, -2 * 3600, -3600, 0],  # hours: strided
        [-3 * 3600, -5400, -3600, -1800, 0],  # windows overlapping: strided
        [-4 * 3600, -3 * 3600, -3600 - 600, 0],  # uneven: gathered by index
        [0],  # one instant
    ],
)
def test_windows_shared_by_aggregates_are_those_reduced_one_by_one(offsets: list[int]):
    cluster = SimulatedCluster(SimulatorSettings(gpus=16, days=1, step_s=60), end=SHOWCASE_AT)
    end = SHOWCASE_AT.replace(minute=0)
    block = cluster.samples(end - timedelta(hours=8), end)  # exporter gaps included
    at = int(end.timestamp()) + np.array(offsets, dtype=np.int64)
    specs = [
        AggregateSpec(signal, aggregate, window_s)
        for signal in (Signal.UTIL_RATIO, Signal.FB_USED_RATIO, Signal.XID)
        for aggregate in Aggregate
        for window_s in (60, 600, 3600)
    ]
    together = reduce_windows_many(block, specs, at)
    for spec in specs:
        one_by_one = np.stack(
            [reduce_window(block, spec, datetime.fromtimestamp(t, tz=UTC)) for t in at], axis=1
        )
        assert np.array_equal(together[spec], one_by_one, equal_nan=True), spec
        alone = reduce_windows_many(block, [spec], at)[spec]
        assert np.array_equal(alone, one_by_one, equal_nan=True)
