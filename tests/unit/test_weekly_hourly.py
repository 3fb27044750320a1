"""The weekly tables' holders and money: every GPU-hour's holders and shares as the
cycle's cost takes them, idle cost only in the minutes with samples, and holder money
that adds up to the GPU-hour's to the micro-unit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from gpuwatch.analysis.attribution import attribute
from gpuwatch.analysis.pricing import load_price_book
from gpuwatch.config.settings import Settings, SimulatorSettings
from gpuwatch.model.cluster import WHOLE_GPU_RESOURCE, ClusterState, Namespace, Pod
from gpuwatch.model.metrics import HistoryFrame, HolderHistory, PodRef
from gpuwatch.report.data import ReportPeriod
from gpuwatch.report.schema import MONEY
from gpuwatch.sources.simulator import (
    SimulatedCluster,
)
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from gpuwatch.weekly.build import build_tables
from gpuwatch.weekly.hourly import HOUR_S, SPECS, HourlyInputs, hourly_tables
from gpuwatch.weekly.micro import from_micro, split, to_micro
from tests.builders import device, gpu_node, simulated_components

START = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
A100_PRICE = Decimal("32.000000")  # the shipped (example) book, on-demand


# --------------------------------------------------------------------------- simulator


@pytest.fixture(scope="module")
def simulated_day() -> dict[str, pa.Table]:
    cluster = SimulatedCluster(SimulatorSettings(gpus=64, days=2), end=SHOWCASE_AT)
    components = simulated_components(cluster)
    period = ReportPeriod.between(SHOWCASE_AT - timedelta(days=1), SHOWCASE_AT)
    return build_tables(components, Settings(), period, 60.0, findings=False).tables


def _rows(table: pa.Table, node: str) -> list[dict]:
    return table.filter(pc.equal(table["node"], node)).to_pylist()


def test_cgpu_shares_go_to_the_serving_pods_that_hold_them(simulated_day):
    holders = simulated_day["holder_hourly"]
    t4 = _rows(holders, "infer-t4-0") + _rows(holders, "infer-t4-1")
    price = Decimal("6.000000")  # a T4 on demand, in the shipped book
    by_workload: dict[str | None, list[dict]] = {}
    for row in t4:
        by_workload.setdefault(row["workload"], []).append(row)
    hours = 24
    # embedding: 4 pods of 6 GiB, two on each of GPUs 0 and 1 (15 GiB): 0.4 a pod.
    # ocr: 4 x 4 GiB on GPUs 2 and 3; asr: 2 x 8 GiB, one on each of GPUs 0 and 1.
    for workload, pods, share in (
        ("Deployment/serving/embedding", 4, 6 / 15),
        ("Deployment/serving/ocr", 4, 4 / 15),
        ("Deployment/serving/asr", 2, 8 / 15),
    ):
        rows = by_workload[workload]
        assert {r["team"] for r in rows} == {"serving"}
        assert {r["evidence"] for r in rows} == {"allocation"}
        assert len({r["pod"] for r in rows}) == pods
        assert len(rows) == pods * hours
        assert sum(r["share_ratio"] for r in rows) == pytest.approx(pods * hours * share, abs=1e-4)
        cost = sum(r["cost"] for r in rows)
        assert abs(cost - price * pods * hours * Decimal(share)) < Decimal("0.0001") * pods * hours
    # What nobody held: the rest of the shared GPUs and infer-t4-1's two free ones.
    rest = by_workload[None]
    assert {r["team"] for r in rest} == {None} and {r["evidence"] for r in rest} == {None}
    free = sum(r["share_ratio"] for r in rest)
    assert free == pytest.approx(hours * (2 * 0.2 + 2 * (7 / 15) + 2 * (7 / 15) + 2), abs=1e-4)


def test_each_gpu_hour_is_split_exactly_and_named_by_its_main_holder(simulated_day):
    hourly, holders = simulated_day["gpu_hourly"], simulated_day["holder_hourly"]
    keys = ["device_id", "hour"]
    split_up = holders.group_by(keys).aggregate(
        [("cost", "sum"), ("idle_cost", "sum"), ("share_ratio", "sum")]
    )
    joined = hourly.select([*keys, "cost", "idle_cost", "allocated_ratio", "pod"]).join(
        split_up, keys
    )
    assert joined.num_rows == hourly.num_rows
    assert joined["cost"].to_pylist() == joined["cost_sum"].to_pylist()
    assert joined["idle_cost"].to_pylist() == joined["idle_cost_sum"].to_pylist()
    assert np.allclose(joined["share_ratio_sum"].to_numpy(), 1.0, atol=1e-5)
    # The whole GPUs the exporter labels keep their pod; the cGPU ones their main holder.
    a100 = _rows(hourly, "train-a100-0")
    assert {r["pod"] for r in a100} == {"llm-pretrain-worker-0"}
    assert {r["allocated_ratio"] for r in a100} == {1.0}
    t4 = {(r["gpu_index"], r["pod"][: r["pod"].index("-")]) for r in _rows(hourly, "infer-t4-0")}
    assert t4 == {(0, "embedding"), (1, "embedding"), (2, "ocr"), (3, "ocr")}
    free = [r for r in _rows(hourly, "infer-t4-1") if r["gpu_index"] >= 2]
    assert {(r["pod"], r["team"], r["allocated_ratio"]) for r in free} == {(None, None, 0.0)}


# --------------------------------------------------------------------------- by hand


def _frame(
    devices: Sequence, hours: int, util: float = 0.5, samples: Sequence[Sequence[float]] = ()
) -> HistoryFrame:
    """``SPECS`` for ``devices`` over ``hours`` hours from START; 60 samples an hour
    unless ``samples[i][j]`` says otherwise (util NaN where there are none)."""
    n = len(devices)
    counts = np.array(samples, dtype=float) if len(samples) else np.full((n, hours), 60.0)
    values = {spec: np.full((n, hours), 100.0) for spec in SPECS.values()}
    values[SPECS["samples"]] = counts
    values[SPECS["util_mean_ratio"]] = np.where(counts > 0, util, np.nan)
    times = np.arange(1, hours + 1, dtype=np.int64) * HOUR_S + int(START.timestamp())
    return HistoryFrame(tuple(devices), times, values)


def _pod(name: str, node: str = "node-a", started: datetime | None = None, **requests) -> Pod:
    return Pod(
        namespace="team-a",
        name=name,
        node_name=node,
        phase="Running",
        requests={WHOLE_GPU_RESOURCE: 1.0, **requests},
        started_at=started,
    )


def _tables(
    devices: Sequence,
    pods: Sequence[Pod],
    labels: Mapping[str, Sequence[str | None]],
    hours: int,
    **frame: object,
) -> tuple[pa.Table, pa.Table]:
    """Both tables for ``devices`` on node-a (created long before), ``pods`` running,
    the exporter labelling ``labels[device_id][j]`` at hour ``j``."""
    node = replace(gpu_node(), created_at=START - timedelta(days=30))
    cluster = ClusterState(START, (node,), tuple(pods), (), (Namespace("team-a", {}),))
    history = _frame(devices, hours, **frame)  # type: ignore[arg-type]
    refs = sorted({PodRef("team-a", p) for seq in labels.values() for p in seq if p}, key=str)
    codes = np.array(
        [
            [
                refs.index(PodRef("team-a", p)) if p else -1
                for p in labels.get(d.device_id, [None] * hours)
            ]
            for d in devices
        ],
        dtype=np.int32,
    ).reshape(len(devices), hours)
    holder_history = HolderHistory(
        tuple(d.device_id for d in devices), history.times_s, tuple(refs), codes
    )
    contexts = attribute(devices, cluster, Settings().attribution, START, 3600).contexts
    hourly = hourly_tables(
        HourlyInputs(
            frame=history,
            holders=holder_history,
            contexts=contexts[: len(devices)],
            cluster=cluster,
            book=load_price_book(),
            team_label=None,
            sample_interval_s=60.0,
        )
    )
    return hourly.gpu_hourly, hourly.holder_hourly


def test_idle_cost_counts_only_the_minutes_with_samples():
    gpu = device(0, pod="train-0")
    hourly, holders = _tables(
        [gpu],
        [_pod("train-0")],
        {gpu.device_id: ["train-0"] * 3},
        3,
        util=0.2,
        samples=[[60, 30, 0]],
    )
    rows = hourly.to_pylist()
    assert [r["coverage_ratio"] for r in rows] == [1.0, 0.5, 0.0]
    assert [r["cost"] for r in rows] == [A100_PRICE] * 3
    # Full hour: 32 x 0.8; half covered: 32 x 0.5 x 0.8; no samples: no idle cost at all.
    assert [r["idle_cost"] for r in rows] == [Decimal("25.600000"), Decimal("12.800000"), None]
    assert holders["idle_cost"].to_pylist() == [r["idle_cost"] for r in rows]


def test_the_exporter_names_who_held_a_gpu_that_changed_hands():
    gpu = device(0, pod="new")
    started = START + timedelta(hours=2, minutes=30)
    labels = {gpu.device_id: ["old", None, None, "new", None]}
    hourly, holders = _tables(
        [gpu],
        [_pod("new", started=started)],
        labels,
        5,
        samples=[[60, 60, 0, 60, 0]],
    )
    rows = holders.to_pylist()
    held = [(r["hour"].hour, r["pod"], r["evidence"], r["share_ratio"]) for r in rows]
    assert held == [
        (0, "old", "exporter", 1.0),  # gone now: the exporter's label is the evidence
        (1, None, None, 1.0),  # the exporter reports the GPU with no pod: nobody held it
        (2, "new", "allocation", 0.5),  # a gap: the allocation, from its pod's start
        (2, None, None, 0.5),
        (3, "new", "exporter", 1.0),
        (4, "new", "allocation", 1.0),  # a gap after the pod started: the allocation
    ]
    assert [r["pod"] for r in hourly.to_pylist()] == ["old", None, "new", "new", "new"]
    assert [r["allocated_ratio"] for r in hourly.to_pylist()] == [1.0, 0.0, 0.5, 1.0, 1.0]
    assert [r["namespace"] for r in rows[:2]] == ["team-a", None]
    costs = [r["cost"] for r in rows]
    assert costs[2] == costs[3] == A100_PRICE / 2


def test_a_time_sliced_gpu_is_split_by_requests_in_the_hours_the_exporter_names_one():
    gpu = replace(
        device(0, pod="a"), shared_with=(PodRef("team-a", "b"),)
    )  # time-slicing: the exporter maps both pods to the GPU
    pods = [_pod("a", **{WHOLE_GPU_RESOURCE: 3.0}), _pod("b")]
    _, holders = _tables([gpu], pods, {gpu.device_id: ["a", "a"]}, 2)
    rows = [(r["pod"], r["evidence"], r["share_ratio"], r["cost"]) for r in holders.to_pylist()]
    assert rows[:2] == [
        ("a", "exporter", 0.75, Decimal("24.000000")),
        ("b", "allocation", 0.25, Decimal("8.000000")),
    ]


def test_holder_money_adds_up_to_the_micro_unit():
    totals = np.array([100, 1, 7_000_001], dtype=np.int64)  # micro-units
    cells = np.array([0, 0, 0, 1, 1, 2, 2], dtype=np.int64)
    shares = np.array([1 / 3, 1 / 3, 1 / 3, 0.5, 0.5, 0.4, 0.6])
    parts = split(totals, cells, shares)
    assert parts.tolist() == [33, 33, 34, 0, 1, 2_800_000, 4_200_001]
    assert np.bincount(cells, weights=parts).astype(np.int64).tolist() == totals.tolist()


def test_micro_units_round_trip_decimals_exactly():
    values = [Decimal("1.5"), None, Decimal("-2.000001"), Decimal("123456789012.123456")]
    array = pa.array(values, MONEY)
    micro, valid = to_micro(array)
    assert micro.tolist() == [1_500_000, 0, -2_000_001, 123_456_789_012_123_456]
    assert from_micro(micro, valid).to_pylist() == values
    sliced, _ = to_micro(pa.chunked_array([array.slice(2)]))
    assert sliced.tolist() == [-2_000_001, 123_456_789_012_123_456]
