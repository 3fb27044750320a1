"""Who holds which GPU: exporter labels, scheduler annotations, or the node's allocations."""

from __future__ import annotations

from gpuwatch.analysis.attribution import attribute
from gpuwatch.analysis.ownership import OwnerIndex, team_of
from gpuwatch.analysis.pools import capacity_type_of, pool_of
from gpuwatch.config.settings import CLOUD_POOL_LABELS, AttributionSettings
from gpuwatch.model.cluster import (
    CGPU_COUNT_RESOURCE,
    CGPU_INDEX_ANNOTATION,
    CGPU_MEMORY_RESOURCE,
    WHOLE_GPU_RESOURCE,
    ClusterState,
    Controller,
    Namespace,
    Node,
    OwnerRef,
    Pod,
    Taint,
)
from gpuwatch.model.metrics import GpuDevice, PodRef
from tests.builders import AT, device, gpu_node

SETTINGS = AttributionSettings()


def _pod(name: str, requests: dict, node: str | None = "node-a", **kw) -> Pod:
    return Pod("team-a", name, node, kw.pop("phase", "Running"), requests, **kw)


def _attribute(devices, nodes, pods, controllers=(), lookback_s=1800):
    state = ClusterState(AT, tuple(nodes), tuple(pods), tuple(controllers))
    return attribute(devices, state, SETTINGS, AT, lookback_s)


def test_exporter_label_is_exact():
    devices = [device(0, pod="train-0"), device(1)]
    pods = [_pod("train-0", {WHOLE_GPU_RESOURCE: 1})]
    result = _attribute(devices, [gpu_node(gpus=2)], pods)
    first, second = result.contexts
    assert first.attribution == "exact" and first.holders[0].pod == "train-0"
    assert second.holders == () and second.attribution == "none"
    assert result.notes == ()


def test_unlabelled_whole_gpu_pod_is_approximate_and_says_so():
    devices = [device(0), device(1)]
    pods = [_pod("infer-0", {WHOLE_GPU_RESOURCE: 1})]
    result = _attribute(devices, [gpu_node(gpus=2)], pods)
    assert result.contexts[0].attribution == "approximate"
    assert result.contexts[1].holders == ()
    assert [n.kind for n in result.notes] == ["approximate_attribution"]


def test_cgpu_pods_share_by_memory_at_the_scheduler_index():
    node = Node(
        "t4",
        {"pool": "gpu-inference"},
        capacity={CGPU_MEMORY_RESOURCE: 60, CGPU_COUNT_RESOURCE: 4},
    )
    devices = [device(i, node="t4") for i in range(4)]
    pods = [
        _pod("emb-0", {CGPU_MEMORY_RESOURCE: 6}, "t4", annotations={CGPU_INDEX_ANNOTATION: "2"}),
        _pod("emb-1", {CGPU_MEMORY_RESOURCE: 3}, "t4", annotations={CGPU_INDEX_ANNOTATION: "2"}),
    ]
    result = _attribute(devices, [node], pods)
    shared = result.contexts[2]
    assert [(h.pod, round(h.share, 2)) for h in shared.holders] == [("emb-0", 0.4), ("emb-1", 0.2)]
    assert shared.attribution == "exact"
    assert all(not c.holders for i, c in enumerate(result.contexts) if i != 2)


def test_cgpu_pod_without_index_is_placed_first_fit_approximately():
    node = Node("t4", {"pool": "p"}, capacity={CGPU_MEMORY_RESOURCE: 30, CGPU_COUNT_RESOURCE: 2})
    devices = [device(0, node="t4"), device(1, node="t4")]
    pods = [
        _pod("a", {CGPU_MEMORY_RESOURCE: 10}, "t4"),
        _pod("b", {CGPU_MEMORY_RESOURCE: 10}, "t4"),
    ]
    result = _attribute(devices, [node], pods)
    assert [h.pod for h in result.contexts[0].holders] == ["a"]
    assert [h.pod for h in result.contexts[1].holders] == ["b"]
    assert result.contexts[0].attribution == "approximate"


def test_mig_slices_by_profile():
    node = Node(
        "mig", {"pool": "p", "nvidia.com/gpu.count": "1"}, capacity={"nvidia.com/mig-1g.10gb": 7}
    )
    devices = [
        GpuDevice("GPU-x", 0, "mig", "NVIDIA A100", mig_profile="1g.10gb", mig_instance_id=i)
        for i in range(3)
    ]
    pods = [_pod("m", {"nvidia.com/mig-1g.10gb": 2}, "mig")]
    result = _attribute(devices, [node], pods)
    assert [bool(c.holders) for c in result.contexts] == [True, True, False]
    assert len({c.device.device_id for c in result.contexts}) == 3


def test_labelled_mig_slice_is_exact():
    node = Node(
        "mig", {"pool": "p", "nvidia.com/gpu.count": "1"}, capacity={"nvidia.com/mig-3g.40gb": 2}
    )
    devices = [
        GpuDevice("GPU-x", 0, "mig", "A100", mig_profile="3g.40gb", mig_instance_id=1),
        GpuDevice(
            "GPU-x", 0, "mig", "A100", mig_profile="3g.40gb", mig_instance_id=2,
            pod=PodRef("team-a", "m"),
        ),
    ]  # fmt: skip
    result = _attribute(devices, [node], [_pod("m", {"nvidia.com/mig-3g.40gb": 1}, "mig")])
    assert [c.attribution for c in result.contexts] == ["none", "exact"]


def test_gpus_the_node_has_but_metrics_lack_become_contexts_without_device():
    result = _attribute([device(0)], [gpu_node(gpus=4)], [])
    assert len(result.contexts) == 4
    assert [c.device is None for c in result.contexts] == [False, True, True, True]


def test_gpu_on_a_node_that_is_gone():
    result = _attribute(
        [device(0, node="gone", pod="p")], [], [_pod("p", {WHOLE_GPU_RESOURCE: 1}, "gone")]
    )
    (ctx,) = result.contexts
    assert ctx.node is None and ctx.pool is None and not ctx.in_gpu_pool
    assert "unknown_node" in [n.kind for n in result.notes]


def test_pending_pods_are_listed_and_hold_nothing():
    pods = [_pod("waiting", {WHOLE_GPU_RESOURCE: 8}, None, phase="Pending")]
    result = _attribute([device(0)], [gpu_node(gpus=1)], pods)
    assert [p.name for p in result.pending_gpu_pods] == ["waiting"]
    assert result.contexts[0].holders == ()


def test_recently_finished_pod_marks_free_gpus_released():
    done = _pod(
        "job",
        {WHOLE_GPU_RESOURCE: 1},
        phase="Succeeded",
        finished_at=AT.replace(hour=1, minute=50),
    )
    old = _pod(
        "old", {WHOLE_GPU_RESOURCE: 1}, "node-b", phase="Succeeded", finished_at=AT.replace(hour=0)
    )
    result = _attribute(
        [device(0), device(0, node="node-b")],
        [gpu_node(gpus=1), gpu_node("node-b", 1)],
        [done, old],
    )
    assert [c.recently_released for c in result.contexts] == [True, False]


def test_owner_chains():
    controllers = [
        Controller("ReplicaSet", "ns", "web-abc", OwnerRef("Deployment", "web")),
        Controller("Deployment", "ns", "web"),
        Controller("Job", "ns", "nightly-123", OwnerRef("CronJob", "nightly")),
        Controller("CronJob", "ns", "nightly"),
        Controller("PyTorchJob", "ns", "llm"),
    ]
    index = OwnerIndex(controllers)

    def pod(owner: OwnerRef | None) -> Pod:
        return Pod("ns", "p", "n", "Running", owner=owner)

    assert index.workload_of(pod(OwnerRef("ReplicaSet", "web-abc"))) == "Deployment/ns/web"
    assert index.workload_of(pod(OwnerRef("Job", "nightly-123"))) == "CronJob/ns/nightly"
    assert index.workload_of(pod(OwnerRef("PyTorchJob", "llm"))) == "PyTorchJob/ns/llm"
    # A snapshot without the ReplicaSet resolves as far as it can.
    assert index.workload_of(pod(OwnerRef("ReplicaSet", "api-9"))) == "ReplicaSet/ns/api-9"
    assert index.workload_of(pod(None)) is None


def test_owner_cycle_terminates():
    controllers = [
        Controller("A", "ns", "a", OwnerRef("B", "b")),
        Controller("B", "ns", "b", OwnerRef("A", "a")),
    ]
    assert OwnerIndex(controllers).workload_of(
        Pod("ns", "p", "n", "Running", owner=OwnerRef("A", "a"))
    )


def test_team_label_or_namespace():
    pod = Pod("ns", "p", "n", "Running", labels={"team": "search"})
    assert team_of(pod, "team") == "search"
    assert team_of(pod, None) == "ns"
    assert team_of(Pod("ns", "q", "n", "Running"), "team") == "ns"


def test_pools_and_capacity_types():
    def node(labels=None, taints=()):
        return Node("n", labels or {}, tuple(taints))

    assert pool_of(node({"pool": "gpu-training"}), "pool", CLOUD_POOL_LABELS) == "gpu-training"
    assert (
        pool_of(node({"cloud.google.com/gke-nodepool": "a100"}), "pool", CLOUD_POOL_LABELS)
        == "a100"
    )
    assert pool_of(node({}), "pool", CLOUD_POOL_LABELS) is None
    assert capacity_type_of(node({"karpenter.sh/capacity-type": "spot"})) == "spot"
    assert capacity_type_of(node({"eks.amazonaws.com/capacityType": "SPOT"})) == "spot"
    assert capacity_type_of(node({"cloud.google.com/gke-spot": "true"})) == "spot"
    assert capacity_type_of(node(taints=[Taint("china.alibabacloud.com/spot")])) == "spot"
    assert capacity_type_of(node({"karpenter.sh/capacity-type": "reserved"})) == "reserved"
    assert capacity_type_of(node({"gpuwatch.io/capacity-type": "reserved"})) == "reserved"
    assert capacity_type_of(node({"karpenter.sh/capacity-type": "on-demand"})) == "on-demand"
    assert capacity_type_of(node({"eks.amazonaws.com/capacityType": "CAPACITY_BLOCK"})) == (
        "reserved"
    )
    assert capacity_type_of(node({"eks.amazonaws.com/capacityType": "ON_DEMAND"})) == "on-demand"
    assert capacity_type_of(node({"kubernetes.azure.com/scalesetpriority": "spot"})) == "spot"
    assert capacity_type_of(node({"oci.oraclecloud.com/oke-is-preemptible": "true"})) == "spot"
    assert capacity_type_of(node({"cloud.google.com/gke-preemptible": "true"})) == "spot"
    # The override wins over what the platform's labels say.
    overridden = node(
        {"karpenter.sh/capacity-type": "spot", "gpuwatch.io/capacity-type": "reserved"}
    )
    assert capacity_type_of(overridden) == "reserved"
    assert capacity_type_of(node()) == "on-demand"


def test_team_from_namespace_label():
    state = ClusterState(
        AT,
        (gpu_node(gpus=2),),
        (
            _pod("a", {WHOLE_GPU_RESOURCE: 1}, labels={"team": "search"}),
            _pod("b", {WHOLE_GPU_RESOURCE: 1}),
        ),
        namespaces=(Namespace("team-a", {"team": "ads"}),),
    )
    settings = AttributionSettings(team_label="team")
    result = attribute([device(0, pod="a"), device(1, pod="b")], state, settings, AT, 1800)
    assert [c.holders[0].team for c in result.contexts] == ["search", "ads"]
