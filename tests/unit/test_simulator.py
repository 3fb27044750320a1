"""The simulated cluster: deterministic, consistent in pieces, shaped like the real thing."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from gpuwatch.config.settings import Settings, SimulatorSettings
from gpuwatch.model.cluster import CGPU_MEMORY_RESOURCE, WHOLE_GPU_RESOURCE
from gpuwatch.model.metrics import Aggregate, AggregateSpec, Signal, WindowRequest
from gpuwatch.pipeline import gather
from gpuwatch.sources.simulator import SimulatedCluster, SimulatorMetricsSource
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from tests.builders import RecordingGenerator, simulated_components

AT = SHOWCASE_AT


def _cluster(**kwargs) -> SimulatedCluster:
    return SimulatedCluster(SimulatorSettings(**kwargs), end=AT)


def test_same_seed_same_samples_other_seed_other_samples():
    a = _cluster().samples(AT - timedelta(hours=2), AT)
    b = _cluster().samples(AT - timedelta(hours=2), AT)
    c = _cluster(seed=7).samples(AT - timedelta(hours=2), AT)
    for signal in Signal:
        np.testing.assert_array_equal(a.values[signal], b.values[signal])
    assert not np.array_equal(a.values[Signal.UTIL_RATIO], c.values[Signal.UTIL_RATIO], True)


def test_a_range_generated_in_pieces_equals_the_whole():
    cluster = _cluster()
    whole = cluster.samples(AT - timedelta(hours=5), AT)
    first = cluster.samples(AT - timedelta(hours=5), AT - timedelta(minutes=97))
    second = cluster.samples(AT - timedelta(minutes=97), AT)
    np.testing.assert_array_equal(whole.times_s, np.concatenate([first.times_s, second.times_s]))
    for signal in Signal:
        joined = np.concatenate([first.values[signal], second.values[signal]], axis=1)
        np.testing.assert_array_equal(whole.values[signal], joined)


@pytest.mark.parametrize(("asked", "got"), [(1, 8), (10, 16), (64, 64), (65, 72), (130, 136)])
def test_gpus_round_up_to_whole_nodes(asked, got):
    assert len(_cluster(gpus=asked).devices) == got


def test_no_samples_before_history_or_after_end():
    cluster = _cluster(days=1)
    before = cluster.samples(AT - timedelta(days=2), AT - timedelta(days=1, minutes=1))
    assert np.isnan(before.values[Signal.UTIL_RATIO]).all()
    after = cluster.samples(AT, AT + timedelta(hours=1))
    assert after.times_s.size == 0


def test_values_have_dcgm_units_and_ranges():
    block = _cluster().samples(AT - timedelta(days=1), AT)
    v = block.values
    util = v[Signal.UTIL_RATIO][~np.isnan(v[Signal.UTIL_RATIO])]
    assert util.min() >= 0.0 and util.max() <= 1.0
    ratio = v[Signal.FB_USED_RATIO][~np.isnan(v[Signal.FB_USED_RATIO])]
    assert ratio.max() < 1.0
    used = v[Signal.FB_USED_MIB]
    assert np.nanmax(used) <= 81920 and np.nanmin(used) >= 0
    assert set(np.unique(v[Signal.XID][~np.isnan(v[Signal.XID])])) <= {0.0, 94.0}
    # T4s have no profiling metrics here: their utilization is GPU_UTIL, whole percents.
    t4 = [i for i, d in enumerate(block.devices) if d.model_name == "Tesla T4"]
    t4_util = v[Signal.UTIL_RATIO][t4]
    t4_util = t4_util[~np.isnan(t4_util)]
    np.testing.assert_allclose(t4_util * 100, np.round(t4_util * 100), atol=1e-9)


def test_devices_carry_exporter_labels():
    devices = _cluster().devices
    assert len({d.uuid for d in devices}) == len(devices)
    assert all(d.uuid.startswith("GPU-") for d in devices)
    labelled = [d for d in devices if d.pod is not None]
    # Whole-GPU pods are labelled by the exporter; cGPU shares are not.
    assert {d.model_name for d in labelled} == {
        "NVIDIA A100-SXM4-80GB",
        "NVIDIA A100-SXM4-40GB",
        "NVIDIA A10",
    }


def test_cluster_objects_look_like_the_design_document():
    state = _cluster().state()
    pools = {n.labels["pool"] for n in state.nodes}
    assert pools == {"gpu-training", "gpu-inference", "gpu-spot", "cpu"}
    spot = [n for n in state.nodes if n.labels["pool"] == "gpu-spot"]
    assert all(any(t.key == "china.alibabacloud.com/spot" for t in n.taints) for n in spot)
    cgpu_pods = [p for p in state.pods if CGPU_MEMORY_RESOURCE in p.requests]
    assert cgpu_pods and all("ALIYUN_COM_GPU_MEM_IDX" in p.annotations for p in cgpu_pods)
    pending = [p for p in state.pods if p.phase == "Pending"]
    assert [p.node_name for p in pending] == [None]
    assert pending[0].requests[WHOLE_GPU_RESOURCE] == 8
    kinds = {c.kind for c in state.controllers}
    assert {"PyTorchJob", "Deployment", "ReplicaSet", "Job", "CronJob", "Notebook"} <= kinds


def test_window_stats_skip_gpus_without_data():
    source = SimulatorMetricsSource(_cluster())
    spec = AggregateSpec(Signal.UTIL_RATIO, Aggregate.COUNT, 300)
    # At 02:02 spot-a100-1's exporter has been down since 01:38: absent from a 5 m window.
    stats = source.window_stats(WindowRequest(AT + timedelta(minutes=2), frozenset({spec})))
    nodes = {d.node for d in stats.devices}
    assert "spot-a100-1" not in nodes and "spot-a100-0" in nodes
    assert (stats.get(spec) > 0).all()


def test_ten_thousand_gpus_are_possible():
    cluster = _cluster(gpus=10_000, days=1)
    assert len(cluster.devices) >= 10_000
    source = SimulatorMetricsSource(cluster)
    spec = AggregateSpec(Signal.UTIL_RATIO, Aggregate.AVG, 1800)
    stats = source.window_stats(WindowRequest(AT, frozenset({spec})))
    assert len(stats.devices) >= 9_000
    assert not np.isnan(stats.get(spec)).any()


def test_a_cycle_generates_each_sample_once():
    """A cycle's reads overlap (its windows, the week's history chunk by chunk with each
    chunk's window before it, the forecast's series): the samples of each time are still
    generated once, so that a cycle at 10,000 GPUs costs one week's generation."""
    cluster = _cluster(gpus=8)
    recording = RecordingGenerator.record(cluster)
    gather(simulated_components(cluster), Settings(), AT)
    times = recording.times()
    assert times.size, "the cycle read no samples"
    assert np.unique(times).size == times.size, "a sample time was generated twice"
    # And the reads covered the week the savings look back over.
    assert times.min() <= int(AT.timestamp()) - Settings().savings.lookback_s + cluster.step_s
