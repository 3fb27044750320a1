"""The ``kubectl get -o json`` snapshot source, on a realistic file and on broken ones."""

from __future__ import annotations

import io
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gpuwatch.analysis.attribution import attribute
from gpuwatch.analysis.ownership import OwnerIndex
from gpuwatch.analysis.pools import capacity_type_of, physical_gpu_count, pool_of
from gpuwatch.config.settings import AttributionSettings
from gpuwatch.model.cluster import (
    CGPU_INDEX_ANNOTATION,
    CGPU_MEMORY_RESOURCE,
    WHOLE_GPU_RESOURCE,
    gpu_request_kind,
)
from gpuwatch.model.errors import SourceBadResponse, SourceError, SourceUnreachable
from gpuwatch.model.metrics import GpuDevice, PodRef
from gpuwatch.sources.base import ClusterSource
from gpuwatch.sources.snapshot_file import SnapshotFileClusterSource

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "kubectl_snapshot.json"
AT = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def state():
    return SnapshotFileClusterSource(FIXTURE).snapshot(AT)


def _pod(state, namespace: str, name: str):
    return next(p for p in state.pods if (p.namespace, p.name) == (namespace, name))


def _node(state, name: str):
    return next(n for n in state.nodes if n.name == name)


def test_it_is_a_cluster_source():
    source = SnapshotFileClusterSource(FIXTURE)
    assert isinstance(source, ClusterSource)
    assert source.name == "snapshot-file"


def test_every_object_is_read(state):
    assert [n.name for n in state.nodes] == [
        "infer-t4-0",
        "legacy-0",
        "mig-a100-0",
        "spot-a100-0",
        "train-a100-0",
    ]
    assert len(state.pods) == 8
    assert sorted((c.kind, c.name) for c in state.controllers) == [
        ("CronJob", "nightly-eval"),
        ("Deployment", "asr"),
        ("Deployment", "embed"),
        ("Job", "nightly-eval-29400000"),
        ("PyTorchJob", "big-sweep"),
        ("PyTorchJob", "llm-pretrain"),
        ("ReplicaSet", "asr-5c7d8f9b4"),
        ("ReplicaSet", "asr-6b9c8d7f5"),
        ("ReplicaSet", "embed-7f9d6c5b8"),
        ("StatefulSet", "alice"),
    ]


def test_observed_at_is_when_kubectl_wrote_the_file(tmp_path):
    path = tmp_path / "cluster.json"
    path.write_bytes(FIXTURE.read_bytes())
    written = datetime(2026, 11, 24, 1, 59, 30, tzinfo=UTC)
    os.utime(path, (written.timestamp(), written.timestamp()))
    assert SnapshotFileClusterSource(path).snapshot(AT).observed_at == written


def test_nodes_pools_and_capacity(state):
    settings = AttributionSettings()
    pools = {
        n.name: pool_of(n, settings.pool_label, settings.pool_label_fallbacks) for n in state.nodes
    }
    assert pools == {
        "infer-t4-0": "gpu-inference",
        "legacy-0": None,  # no pool label of any kind
        "mig-a100-0": "gpu-mig",  # from karpenter.sh/nodepool
        "spot-a100-0": "gpu-spot",
        "train-a100-0": "gpu-training",
    }
    assert capacity_type_of(_node(state, "spot-a100-0")) == "spot"  # the ACK spot taint
    train = _node(state, "train-a100-0")
    assert train.capacity[WHOLE_GPU_RESOURCE] == 8
    assert train.capacity["memory"] == 1056375180 * 1024
    assert physical_gpu_count(_node(state, "infer-t4-0")) == 4
    assert _node(state, "infer-t4-0").capacity[CGPU_MEMORY_RESOURCE] == 60
    assert physical_gpu_count(_node(state, "mig-a100-0")) == 2
    assert physical_gpu_count(_node(state, "legacy-0")) == 0


def test_pytorchjob_workers_with_init_containers(state):
    index = OwnerIndex(state.controllers)
    for role in ("master", "worker"):
        pod = _pod(state, "llm", f"llm-pretrain-{role}-0")
        assert pod.requests == {"cpu": 32.0, "memory": 256 * 2.0**30, WHOLE_GPU_RESOURCE: 4.0}
        assert index.workload_of(pod) == "PyTorchJob/llm/llm-pretrain"
        assert pod.started_at == datetime(2026, 11, 22, 18, 0, 9, tzinfo=UTC)


def test_deployment_replicaset_pod_chain_with_cgpu(state):
    pod = _pod(state, "serving", "asr-5c7d8f9b4-q8zlw")
    assert gpu_request_kind(pod.requests) == "cgpu"
    assert pod.requests[CGPU_MEMORY_RESOURCE] == 8.0
    assert pod.annotations[CGPU_INDEX_ANNOTATION] == "1"
    assert OwnerIndex(state.controllers).workload_of(pod) == "Deployment/serving/asr"


def test_mig_pod_with_overhead(state):
    pod = _pod(state, "serving", "embed-7f9d6c5b8-n4v7t")
    assert gpu_request_kind(pod.requests) == "mig"
    assert pod.requests["nvidia.com/mig-1g.10gb"] == 1.0
    assert pod.requests["cpu"] == 2.25  # 2 + the RuntimeClass overhead of 250m
    assert OwnerIndex(state.controllers).workload_of(pod) == "Deployment/serving/embed"


def test_cronjob_job_pod_chain_finished(state):
    pod = _pod(state, "vision", "nightly-eval-29400000-x7k2p")
    assert pod.phase == "Succeeded"
    assert pod.finished_at == datetime(2026, 11, 24, 0, 58, 41, tzinfo=UTC)
    assert OwnerIndex(state.controllers).workload_of(pod) == "CronJob/vision/nightly-eval"


def test_pending_gpu_pod_has_no_node(state):
    pod = _pod(state, "research", "big-sweep-worker-0")
    assert (pod.phase, pod.node_name, pod.requests[WHOLE_GPU_RESOURCE]) == ("Pending", None, 8)
    assert OwnerIndex(state.controllers).workload_of(pod) == "PyTorchJob/research/big-sweep"


def test_owner_missing_from_the_file_resolves_as_far_as_it_can(state):
    # The Notebook itself was not captured; its StatefulSet names it as controller.
    pod = _pod(state, "research", "alice-0")
    assert OwnerIndex(state.controllers).workload_of(pod) == "Notebook/research/alice"
    bare = _pod(state, "default", "debug-shell")
    assert bare.owner is None and OwnerIndex(state.controllers).workload_of(bare) is None


def test_attribution_runs_on_the_file(state):
    """The file's pods attribute like the simulator's: GPUs, pending, a gone node."""
    devices = [GpuDevice(f"GPU-t{i}", i, "train-a100-0", "A100", pod=None) for i in range(8)] + [
        GpuDevice("GPU-t4-1", 1, "infer-t4-0", "Tesla T4"),
        GpuDevice("GPU-gone", 0, "train-a100-9", "A100", PodRef("research", "alice-0")),
    ]
    result = attribute(devices, state, AttributionSettings(), AT, 3600)
    holders = {c.device.uuid: [h.workload for h in c.holders] for c in result.contexts if c.device}
    assert holders["GPU-t0"] == ["PyTorchJob/llm/llm-pretrain"]
    assert holders["GPU-t4-1"] == ["Deployment/serving/asr"]  # from ALIYUN_COM_GPU_MEM_IDX
    assert [p.name for p in result.pending_gpu_pods] == ["big-sweep-worker-0"]
    kinds = {n.kind for n in result.notes}
    assert "unknown_node" in kinds  # the pod's node is gone from the cluster
    # The eval pod on spot-a100-0 finished 61 minutes before AT: inside a 2 h look-back
    # its GPUs count as recently released, outside a 1 h one they do not.
    spot = [GpuDevice("GPU-s0", 0, "spot-a100-0", "A100")]
    for lookback_s, released in ((7200, True), (3600, False)):
        (context, *_) = attribute(spot, state, AttributionSettings(), AT, lookback_s).contexts
        assert context.recently_released is released


# --- standard input -------------------------------------------------------------------------


def test_dash_reads_standard_input_once():
    stream = io.BytesIO(FIXTURE.read_bytes())
    source = SnapshotFileClusterSource("-", stdin=stream)
    first = source.snapshot(AT)
    again = source.snapshot(datetime(2026, 11, 24, 3, 0, tzinfo=UTC))
    assert first is again and first.observed_at == AT
    assert len(first.pods) == 8


def test_dash_defaults_to_sys_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(FIXTURE.read_bytes())))
    assert len(SnapshotFileClusterSource("-").snapshot(AT).nodes) == 5


def test_an_api_list_is_accepted_and_gives_its_items_their_kind(tmp_path):
    document = json.loads(FIXTURE.read_text())
    pods = [dict(i) for i in document["items"] if i["kind"] == "Pod"]
    for pod in pods:
        del pod["kind"], pod["apiVersion"]
    path = tmp_path / "pods.json"
    path.write_text(json.dumps({"kind": "PodList", "apiVersion": "v1", "items": pods}))
    assert len(SnapshotFileClusterSource(path).snapshot(AT).pods) == 8


def test_unknown_kinds_are_skipped_unless_something_is_owned_by_them(tmp_path):
    items: list[dict[str, Any]] = [
        {"kind": "Service", "apiVersion": "v1", "metadata": {"name": "svc", "namespace": "a"}},
        {
            "kind": "RayCluster",
            "apiVersion": "ray.io/v1",
            "metadata": {"name": "rc", "namespace": "a"},
        },
        {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": "head",
                "namespace": "a",
                "ownerReferences": [{"kind": "RayCluster", "name": "rc", "controller": True}],
            },
        },
    ]
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"kind": "List", "items": items}))
    state = SnapshotFileClusterSource(path).snapshot(AT)
    assert [(c.kind, c.name) for c in state.controllers] == [("RayCluster", "rc")]


# --- errors ---------------------------------------------------------------------------------


def _write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "snap.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def test_a_missing_file_is_unreachable(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(SourceUnreachable, match=rf"{path}: cannot read the cluster snapshot"):
        SnapshotFileClusterSource(path).snapshot(AT)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", r"snap\.json: not JSON \(line 1, column 2"),
        (b"\xff\xfe\x00", r"snap\.json: not (UTF-8|JSON)"),
        ('{"kind": "Pod", "metadata": {"name": "p"}}', r"expected a list of objects.*'Pod'"),
        ("[1, 2]", r"expected a list of objects.*got list"),
        ('{"kind": "List", "items": {"a": 1}}', r"items: expected a list"),
        ('{"kind": "List", "items": [1]}', r"items\[0\]: expected an object, got int"),
        (
            '{"kind": "List", "items": [{"metadata": {"name": "x"}}]}',
            r"items\[0\]: object without kind",
        ),
        (
            '{"kind": "List", "items": [{"kind": "Pod"}]}',
            r"items\[0\] \(Pod\): object without metadata",
        ),
    ],
)
def test_broken_files_say_where(tmp_path, content, expected):
    with pytest.raises(SourceBadResponse, match=expected):
        SnapshotFileClusterSource(_write(tmp_path, content)).snapshot(AT)


def test_a_malformed_object_names_file_item_object_and_field(tmp_path):
    document = json.loads(FIXTURE.read_text())
    index = next(i for i, o in enumerate(document["items"]) if o["metadata"]["name"] == "alice-0")
    document["items"][index]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = (
        "1x"
    )
    path = _write(tmp_path, json.dumps(document))
    with pytest.raises(SourceError) as caught:
        SnapshotFileClusterSource(path).snapshot(AT)
    message = str(caught.value)
    assert message.startswith(f"{path}: items[{index}]: pod research/alice-0: ")
    assert "spec.containers[0].resources.limits['nvidia.com/gpu']" in message
    assert "malformed quantity '1x'" in message


def test_an_empty_list_is_an_empty_cluster(tmp_path):
    state = SnapshotFileClusterSource(_write(tmp_path, '{"kind": "List", "items": []}')).snapshot(
        AT
    )
    assert (state.nodes, state.pods, state.controllers) == ((), (), ())
