"""A samples file read the fast way (row groups bisected, rows put on the grid through
one flat index, the windows of a grid gathered through a strided view, the holders from
the history's read) answers exactly as the samples do taken one by one: on exports with
gaps, MIG instances, a metric never sent and one sent by some GPUs only, 60 s and 15 s
intervals, rows in and out of time order, and a last hour the file holds part of."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpuwatch.model.metrics import (
    Aggregate,
    AggregateSpec,
    HistoryRequest,
    Signal,
    fb_used_ratio,
)
from gpuwatch.model.series import reduce_window
from gpuwatch.sources.samples_file import SampleFile, SampleFileMetricsSource, _mode

END = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
GPUS = [("GPU-a", None), ("GPU-b", "1"), ("GPU-b", "2"), ("GPU-c", None), ("GPU-d", None)]
"""Devices: whole GPUs and two MIG instances of one card."""


def _export(path: Path, step_s: int, *, shuffled: bool, seed: int) -> dict:
    """Three hours and 40 minutes of samples ending 20 minutes before ``END``, an hour
    and a bit per row group; each sample a few seconds late, a tenth of them missing,
    GPU-c without engine activity (utilization instead), no tensor metric at all, pods
    that change within hours. Returns every sample, by (device id, grid time)."""
    rng = np.random.default_rng(seed)
    first = int(END.timestamp()) - 4 * 3600
    last = int(END.timestamp()) - 20 * 60
    rows: dict[str, list] = {k: [] for k in ("t", "uuid", "mig", "pod", "util", "active")}
    for k in ("used", "free", "reserved", "temp", "power", "xid"):
        rows[k] = []
    truth: dict[tuple[str, int], dict] = {}
    for t in range(first, last + 1, step_s):
        for uuid, mig in GPUS:
            if rng.random() < 0.1:
                continue  # a gap
            late = int(rng.integers(1, min(step_s, 10))) if rng.random() < 0.3 else 0
            pod = None if rng.random() < 0.2 else f"job-{int(rng.integers(0, 3))}"
            sample = {
                "t": t - step_s + late + 1 if late else t,
                "uuid": uuid,
                "mig": mig,
                "pod": pod,
                "util": float(rng.integers(0, 101)),
                "active": None if uuid == "GPU-c" else float(rng.random()),
                "used": float(rng.integers(0, 80_000)),
                "free": float(rng.integers(0, 80_000)),
                "reserved": None if rng.random() < 0.5 else 512.0,
                "temp": float(rng.integers(30, 90)),
                "power": float(rng.random() * 400),
                "xid": float(rng.integers(0, 3)) if rng.random() < 0.05 else 0.0,
            }
            for key, value in sample.items():
                rows[key].append(value)
            device_id = uuid if mig is None else f"{uuid}/mig-{mig}"
            truth[(device_id, t)] = sample
    n = len(rows["t"])
    table = pa.table(
        {
            "timestamp": pa.array([s * 1000 for s in rows["t"]], pa.timestamp("ms", tz="UTC")),
            "UUID": rows["uuid"],
            "gpu": ["0"] * n,
            "Hostname": ["node-a"] * n,
            "modelName": ["NVIDIA A100-SXM4-80GB"] * n,
            "GPU_I_ID": rows["mig"],
            "GPU_I_PROFILE": ["1g.10gb" if m else None for m in rows["mig"]],
            "pod": rows["pod"],
            "namespace": ["team" if p else None for p in rows["pod"]],
            "DCGM_FI_DEV_GPU_UTIL": pa.array(rows["util"], pa.float64()),
            "DCGM_FI_PROF_GR_ENGINE_ACTIVE": pa.array(rows["active"], pa.float64()),
            "DCGM_FI_DEV_FB_USED": pa.array(rows["used"], pa.float64()),
            "DCGM_FI_DEV_FB_FREE": pa.array(rows["free"], pa.float64()),
            "DCGM_FI_DEV_FB_RESERVED": pa.array(rows["reserved"], pa.float64()),
            "DCGM_FI_DEV_GPU_TEMP": pa.array(rows["temp"], pa.float64()),
            "DCGM_FI_DEV_POWER_USAGE": pa.array(rows["power"], pa.float64()),
            "DCGM_FI_DEV_XID_ERRORS": pa.array(rows["xid"], pa.float64()),
        }
    )
    size = (3600 // step_s + 7) * len(GPUS)  # row groups that straddle hours
    with pq.ParquetWriter(path, table.schema) as writer:
        for start in range(0, n, size):
            part = table.slice(start, size)
            if shuffled:
                part = part.take(pa.array(rng.permutation(part.num_rows)))
            writer.write_table(part)
    return truth


def _naive(samples: SampleFile, truth: dict, start: int, end: int) -> dict[Signal, np.ndarray]:
    """The signals on the grid of ``(start, end]``, sample by sample."""
    step = samples.step_s
    grid = np.arange((start // step + 1) * step, end + 1, step)
    ids = [d.device_id for d in samples.devices]
    out = {s: np.full((len(ids), grid.size), np.nan) for s in Signal}
    free, reserved = np.full_like(out[Signal.XID], np.nan), np.zeros_like(out[Signal.XID])
    for (device_id, t), s in truth.items():
        if not start < t <= end:
            continue
        i, j = ids.index(device_id), (t - grid[0]) // step
        active = s["active"]
        out[Signal.UTIL_RATIO][i, j] = active if active is not None else s["util"] / 100.0
        out[Signal.FB_USED_MIB][i, j] = s["used"]
        free[i, j], reserved[i, j] = s["free"], s["reserved"] or 0.0
        out[Signal.FB_TOTAL_MIB][i, j] = s["used"] + s["free"] + reserved[i, j]
        out[Signal.TEMP_C][i, j] = s["temp"]
        out[Signal.POWER_W][i, j] = s["power"]
        out[Signal.XID][i, j] = s["xid"]
        out[Signal.POD_ATTACHED][i, j] = s["pod"] is not None
    out[Signal.FB_USED_RATIO] = fb_used_ratio(out[Signal.FB_USED_MIB], free, reserved)
    return out


CASES = [(60, False), (15, False), (60, True), (15, True)]


@pytest.mark.parametrize(("step_s", "shuffled"), CASES)
def test_samples_on_the_grid_are_the_file_s_rows(tmp_path: Path, step_s: int, shuffled: bool):
    path = tmp_path / "export.parquet"
    truth = _export(path, step_s, shuffled=shuffled, seed=step_s + shuffled)
    samples = SampleFile(path)
    assert samples.step_s == step_s
    assert len(samples.devices) == len(GPUS)
    for hours in ((5, 0), (3, 1), (2, 0)):
        start, end = END - timedelta(hours=hours[0]), END - timedelta(hours=hours[1])
        block = samples.samples(start, end)
        expected = _naive(samples, truth, int(start.timestamp()), int(end.timestamp()))
        for signal, values in expected.items():
            assert np.array_equal(block.values[signal], values, equal_nan=True), signal
        assert np.isnan(block.values[Signal.TENSOR_ACTIVE_RATIO]).all()  # never sent


SPECS = frozenset(
    AggregateSpec(signal, aggregate, window_s)
    for signal in (Signal.UTIL_RATIO, Signal.FB_USED_RATIO, Signal.POD_ATTACHED, Signal.XID)
    for aggregate in Aggregate
    for window_s in (15, 300, 600, 1800, 3600)
)


@pytest.mark.parametrize(("step_s", "shuffled"), CASES)
def test_hourly_history_is_each_window_reduced_alone(tmp_path: Path, step_s: int, shuffled: bool):
    """Every aggregate of every hour (the last one partly in the file, the first before
    any sample) as ``reduce_window`` gives it at that hour's end over all the samples; and the
    holders served from the history's read, a forecast's read in between, are those
    read afresh."""
    path = tmp_path / "export.parquet"
    _export(path, step_s, shuffled=shuffled, seed=7 * step_s + shuffled)
    source = SampleFileMetricsSource(SampleFile(path))
    request = HistoryRequest(END - timedelta(hours=6), END, 3600, SPECS)
    frame = source.history(request)
    series = HistoryRequest(END - timedelta(hours=1), END, 60, frozenset(list(SPECS)[:3]))
    source.history(series)
    held = source.holders(request)

    fresh = SampleFile(path)
    block = fresh.samples(END - timedelta(hours=7), END)
    ids = [d.device_id for d in frame.devices]
    rows = [ids.index(d.device_id) for d in block.devices if d.device_id in ids]
    for spec in SPECS:
        alone = np.stack(
            [
                reduce_window(block, spec, datetime.fromtimestamp(int(t), tz=UTC))
                for t in frame.times_s
            ],
            axis=1,
        )
        assert np.array_equal(frame.values[spec][rows], alone, equal_nan=True), spec
    again = SampleFileMetricsSource(fresh).holders(request)
    names = np.array([str(p) for p in held.pods] + ["-"])[held.codes]
    names_again = np.array([str(p) for p in again.pods] + ["-"])[again.codes]
    assert held.device_ids == again.device_ids
    assert np.array_equal(names, names_again)
    assert (held.codes >= 0).any() and (held.codes[:, 0] == -1).all()  # the hour before


def test_the_mode_of_rows_alike_is_their_code():
    rng = np.random.default_rng(3)
    codes = rng.integers(-1, 4, size=(200, 12))
    codes[::3] = codes[::3, :1]  # a third of the rows name one pod (or none) all along

    def naive(row: np.ndarray) -> int:
        named = [int(c) for c in row if c >= 0]
        if not named:
            return -1
        return min(named, key=lambda c: (-named.count(c), c))

    assert _mode(codes).tolist() == [naive(row) for row in codes]
    assert _mode(codes[::3]).tolist() == [naive(row) for row in codes[::3]]
