"""A Parquet file of raw exporter samples answers as the samples it was written from:
the simulator's week, exported as a user exports raw samples, gives the same devices,
the same hourly aggregates and the same holders."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpuwatch.analysis.pricing import load_price_book
from gpuwatch.analysis.rules.evaluate import required_specs
from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.config.settings import Settings, SimulatorSettings
from gpuwatch.model.metrics import HistoryRequest, PodRef, WindowRequest
from gpuwatch.notify.console import RecordingNotifier
from gpuwatch.pipeline import Components
from gpuwatch.report.data import ReportPeriod
from gpuwatch.sources.samples_file import SampleFile, SampleFileMetricsSource, _mode
from gpuwatch.sources.simulator import (
    SimulatedCluster,
    SimulatorClusterSource,
    SimulatorMetricsSource,
)
from gpuwatch.sources.simulator.exposition import write_samples_parquet
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from gpuwatch.state.base import MemoryState
from gpuwatch.weekly.build import build_report, build_tables
from gpuwatch.weekly.hourly import SPECS
from gpuwatch.wiring import build_metrics_source, sample_interval_s

END = SHOWCASE_AT.replace(minute=0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimulatedCluster, Path]:
    cluster = SimulatedCluster(SimulatorSettings(gpus=64, days=3, step_s=60), end=END)
    start = cluster.history_start
    days = [
        cluster.samples(start + timedelta(days=k), start + timedelta(days=k + 1)) for k in range(3)
    ]
    path = tmp_path_factory.mktemp("samples") / "samples.parquet"
    assert write_samples_parquet(path, days, cluster.layout.gpus) > 0
    return cluster, path


def _rows(reference: tuple, devices: tuple) -> list[int]:
    order = {d.device_id: i for i, d in enumerate(reference)}
    return [order[d.device_id] for d in devices]


def test_the_file_holds_the_exporter_s_columns_a_row_group_a_day(exported):
    _, path = exported
    parquet = pq.ParquetFile(path)
    assert parquet.num_row_groups == 3
    names = parquet.schema_arrow.names
    assert {"timestamp", "UUID", "Hostname", "pod", "DCGM_FI_DEV_FB_USED"} <= set(names)
    assert pa.types.is_timestamp(parquet.schema_arrow.field("timestamp").type)


def test_samples_devices_and_interval_are_the_simulator_s(exported):
    cluster, path = exported
    samples = SampleFile(path)
    assert samples.step_s == 60
    mine = cluster.samples(END - timedelta(hours=30), END)
    theirs = samples.samples(END - timedelta(hours=30), END)
    rows = _rows(mine.devices, theirs.devices)
    assert [mine.devices[i] for i in rows] == list(theirs.devices)
    for signal, values in mine.values.items():
        assert np.array_equal(values[rows], theirs.values[signal], equal_nan=True), signal


def test_history_window_and_holders_are_the_simulator_s(exported):
    cluster, path = exported
    specs = frozenset(SPECS.values()) | required_specs(load_rules())
    request = HistoryRequest(END - timedelta(days=2), END, 3600, specs)
    simulator, from_file = (
        SimulatorMetricsSource(cluster),
        SampleFileMetricsSource(SampleFile(path)),
    )
    for first, second in ((simulator.history(request), from_file.history(request)),):
        rows = _rows(first.devices, second.devices)
        for spec in specs:
            assert np.array_equal(first.values[spec][rows], second.values[spec], equal_nan=True)
    window = WindowRequest(END, specs)
    a, b = simulator.window_stats(window), from_file.window_stats(window)
    rows = _rows(a.devices, b.devices)
    assert all(np.array_equal(a.values[s][rows], b.values[s], equal_nan=True) for s in specs)
    # The holders: served from the history's read, and read afresh, alike.
    ids = [d.device_id for d in a.devices]
    expected = simulator.holders(request)
    for held in (
        from_file.holders(request),
        SampleFileMetricsSource(SampleFile(path)).holders(request),
    ):
        names = np.array([str(p) for p in held.pods] + ["-"])[held.aligned(ids)]
        assert np.array_equal(
            np.array([str(p) for p in expected.pods] + ["-"])[expected.aligned(ids)], names
        )
    assert isinstance(expected.pods[0], PodRef)


def test_the_holder_of_a_step_is_the_pod_named_most():
    codes = np.array([[2, 2, 1, -1, -1, -1], [-1, -1, -1, -1, -1, -1], [3, 1, 3, 1, 0, -1]])
    assert _mode(codes).tolist() == [2, -1, 1]


def test_a_user_export_with_mig_jitter_and_a_gpu_gone_mid_file(tmp_path: Path):
    """Labels as dcgm-exporter writes them (MIG instances, a GPU seen only in the older
    row group), times a few seconds off the grid, and no pod on some samples."""
    base = int(END.timestamp()) - 2 * 3600

    def rows(start: int, gpus: list[tuple[str, str | None]], pod: str | None) -> pa.Table:
        times, uuids, migs, pods = [], [], [], []
        for k in range(60):  # an hour at 60 s, each sample 3 s late
            for uuid, mig in gpus:
                times.append(start + 60 * k + 63)
                uuids.append(uuid)
                migs.append(mig)
                pods.append(pod if k % 2 == 1 else None)
        n = len(times)
        return pa.table(
            {
                "timestamp": pa.array(times, pa.timestamp("s", tz="UTC")),
                "UUID": uuids,
                "GPU_I_ID": migs,
                "GPU_I_PROFILE": ["1g.10gb" if m else None for m in migs],
                "gpu": ["0"] * n,
                "Hostname": ["node-a"] * n,
                "modelName": ["NVIDIA A100-SXM4-80GB"] * n,
                "pod": pods,
                "namespace": ["team" if p else None for p in pods],
                "DCGM_FI_DEV_GPU_UTIL": [50.0] * n,
                "DCGM_FI_DEV_FB_USED": [100.0] * n,
                "DCGM_FI_DEV_FB_FREE": [900.0] * n,
            }
        )

    path = tmp_path / "export.parquet"
    older = rows(base, [("GPU-a", "1"), ("GPU-a", "2"), ("GPU-gone", None)], "job-0")
    newer = rows(base + 3600, [("GPU-a", "1"), ("GPU-a", "2")], "job-1")
    with pq.ParquetWriter(path, older.schema) as writer:
        writer.write_table(older)
        writer.write_table(newer)
    samples = SampleFile(path)
    assert samples.step_s == 60
    ids = [d.device_id for d in samples.devices]
    assert sorted(ids) == ["GPU-a/mig-1", "GPU-a/mig-2", "GPU-gone"]
    mig = samples.devices[ids.index("GPU-a/mig-1")]
    assert (mig.mig_profile, mig.pod) == ("1g.10gb", PodRef("team", "job-1"))
    block = samples.samples(END - timedelta(hours=2), END)
    util = block.values[next(iter(s for s in block.values if s.value == "util_ratio"))]
    assert block.times_s[0] % 60 == 0 and np.nanmax(util) == 0.5
    gone = ids.index("GPU-gone")
    # 3 s late: each sample is on the next grid time (the older hour's fill columns 1-60).
    assert not np.isnan(util[gone, 1:61]).any()
    assert np.isnan(util[gone, 61:]).all() and np.isnan(util[gone, 0])
    source = SampleFileMetricsSource(samples)
    held = source.holders(HistoryRequest(END - timedelta(hours=2), END, 3600, frozenset()))
    names = [[str(held.pods[c]) if c >= 0 else None for c in row] for row in held.codes]
    assert names[ids.index("GPU-a/mig-1")] == ["team/job-0", "team/job-1"]
    assert names[gone] == ["team/job-0", "team/job-0"]  # its last sample is in hour two


def test_settings_select_the_file_and_its_report_is_the_simulator_s(exported, tmp_path: Path):
    cluster, path = exported
    with pytest.raises(ValueError, match="samples_path"):
        Settings.model_validate({"metrics": {"source": "samples-file"}})
    settings = Settings.model_validate(
        {
            "metrics": {"source": "samples-file", "samples_path": str(path)},
            "cluster": {"source": "snapshot", "snapshot_path": str(tmp_path / "none.json")},
        }
    )
    metrics = build_metrics_source(settings, {}, lambda: cluster)
    assert isinstance(metrics, SampleFileMetricsSource)
    assert sample_interval_s(settings) == 60.0
    period = ReportPeriod.between(END - timedelta(days=1), END)
    tables = []
    for source in (SimulatorMetricsSource(cluster), metrics):
        components = Components(
            metrics=source,
            cluster=SimulatorClusterSource(cluster),
            rules=tuple(load_rules()),
            state=MemoryState(),
            notifier=RecordingNotifier(),
            price_book=load_price_book(),
        )
        tables.append(build_tables(components, Settings(), period, 60.0).tables)
    simulated, from_file = tables
    for name in ("gpu_hourly", "holder_hourly", "findings"):
        order = [
            ("device_id", "ascending"),
            ("hour" if name != "findings" else "start", "ascending"),
        ]
        if name == "holder_hourly":
            order.append(("pod", "ascending"))
        if name == "findings":
            order.append(("rule", "ascending"))
        assert simulated[name].sort_by(order).equals(from_file[name].sort_by(order)), name


class _CountingFile(SampleFile):
    """A samples file that counts each row group's decodes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.decodes: dict[int, int] = {}

    def _group(self, group: int):
        if group not in self._cache:
            self.decodes[group] = self.decodes.get(group, 0) + 1
        return super()._group(group)


def test_a_report_decodes_each_row_group_once(exported):
    """The savings' cycle (window statistics, the forecast's recent series, the week) and
    the report's tables and holders all read the file: each row group is decoded once."""
    cluster, path = exported
    samples = _CountingFile(path)
    components = Components(
        metrics=SampleFileMetricsSource(samples),
        cluster=SimulatorClusterSource(cluster),
        rules=tuple(load_rules()),
        state=MemoryState(),
        notifier=RecordingNotifier(),
        price_book=load_price_book(),
    )
    settings = Settings.model_validate({"savings": {"lookback": "48h"}})
    data = build_report(
        components, settings, ReportPeriod.between(END - timedelta(days=2), END), 60.0
    )
    assert data.tables["gpu_hourly"].num_rows and data.tables["savings"].num_rows
    assert samples.decodes and set(samples.decodes.values()) == {1}, samples.decodes
