"""The pure parts that read real platforms' formats: physical GPU counts under every
device-plugin mode, GPU models from every label, pod label sets, where a device's node
is, several pods on one GPU, and what a MIG instance is billed."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from gpuwatch.analysis.attribution import attribute
from gpuwatch.analysis.cost import allocate_cost
from gpuwatch.analysis.mig import with_gpu_fractions
from gpuwatch.analysis.pools import gpu_model_of, mig_single_profile, physical_gpu_count
from gpuwatch.analysis.pricing import PriceBook, PriceBookFile, load_price_book
from gpuwatch.analysis.rules.evaluate import evaluate
from gpuwatch.config.settings import AttributionSettings
from gpuwatch.kube.objects.requests import node_capacity
from gpuwatch.model.cluster import WHOLE_GPU_RESOURCE, ClusterState, Node, OwnerRef, Pod
from gpuwatch.model.metrics import Aggregate, GpuDevice, PodRef, Signal
from gpuwatch.model.mig import compute_slices, family_of, instances_per_gpu
from gpuwatch.promql import POD_LABEL_SETS, pod_labels_for
from tests.builders import AT, context, full_count, stats

A100 = "NVIDIA-A100-SXM4-80GB"
A30 = "NVIDIA-A30"


def _gfd(product: str, **extra: str) -> dict[str, str]:
    return {"nvidia.com/gpu.product": product, **extra}


# ---------------------------------------------------------------- physical GPU counts


@pytest.mark.parametrize(
    ("labels", "capacity", "cards"),
    [
        # Whole GPUs, with or without GPU feature discovery's count.
        ({}, {WHOLE_GPU_RESOURCE: 8}, 8),
        ({"nvidia.com/gpu.count": "4"}, {WHOLE_GPU_RESOURCE: 4}, 4),
        ({"nvidia.com/gpu.count": "junk"}, {WHOLE_GPU_RESOURCE: 2}, 2),
        ({}, {}, 0),
        # The single MIG strategy: nvidia.com/gpu counts instances of one profile.
        (_gfd(f"{A100}-MIG-1g.10gb"), {WHOLE_GPU_RESOURCE: 56}, 8),
        (_gfd(f"{A100}-MIG-3g.40gb"), {WHOLE_GPU_RESOURCE: 16}, 8),
        (_gfd(f"{A100}-MIG-1g.10gb", **{"nvidia.com/gpu.count": "7"}), {WHOLE_GPU_RESOURCE: 7}, 1),
        # One instance short of a full card still needs the card.
        (_gfd(f"{A100}-MIG-1g.10gb"), {WHOLE_GPU_RESOURCE: 8}, 2),
        (_gfd(f"{A30}-MIG-1g.6gb"), {WHOLE_GPU_RESOURCE: 4}, 1),
        (_gfd(f"{A30}-MIG-1g.6gb"), {WHOLE_GPU_RESOURCE: 5}, 2),
        # A uniform mig-parted configuration says the same where the product lacks it.
        ({"nvidia.com/mig.config": "all-1g.10gb"}, {WHOLE_GPU_RESOURCE: 14}, 2),
        # The mixed strategy: per profile, and the compute slices they take together.
        ({}, {"nvidia.com/mig-1g.10gb": 7, "nvidia.com/mig-3g.40gb": 2}, 2),
        ({}, {"nvidia.com/mig-3g.40gb": 2}, 1),
        ({}, {"nvidia.com/mig-3g.40gb": 3}, 2),
        (_gfd(A30), {"nvidia.com/mig-1g.6gb": 4}, 1),
        # An A30 has 4 compute slices, not 7; its profiles name it without a model.
        (_gfd(A30), {"nvidia.com/mig-2g.12gb": 2, "nvidia.com/mig-1g.6gb": 2}, 2),
        ({}, {"nvidia.com/mig-2g.12gb": 2, "nvidia.com/mig-1g.6gb": 2}, 2),
        # Mixed beside whole GPUs: both count; an advertised 0 is not a profile in use.
        ({}, {WHOLE_GPU_RESOURCE: 2, "nvidia.com/mig-3g.40gb": 2}, 3),
        ({}, {WHOLE_GPU_RESOURCE: 1, "nvidia.com/mig-1g.10gb": 0}, 1),
        # A product naming MIG under the mixed strategy's label is not single.
        (
            _gfd(f"{A100}-MIG-1g.10gb", **{"nvidia.com/mig.strategy": "mixed"}),
            {"nvidia.com/mig-1g.10gb": 14},
            2,
        ),
        # cGPU: the count resource.
        ({}, {"aliyun.com/gpu-count": 2, "aliyun.com/gpu-mem": 30}, 2),
    ],
)
def test_physical_gpu_count(labels, capacity, cards):
    assert physical_gpu_count(Node("n1", labels, capacity=capacity)) == cards


def _node_object(capacity: dict[str, str], labels: dict[str, str]) -> int:
    return int(node_capacity({"capacity": capacity}, labels, "node n1")[WHOLE_GPU_RESOURCE])


def test_time_slicing_replicas_are_divided_out_when_the_node_is_read():
    replicas = {"nvidia.com/gpu.replicas": "10"}
    # Renamed (nvidia.com/gpu.shared) or not, 40 slices shared 10 ways are 4 GPUs.
    assert _node_object({"nvidia.com/gpu": "40"}, replicas) == 4
    assert _node_object({"nvidia.com/gpu.shared": "40"}, replicas) == 4
    assert _node_object({"nvidia.com/gpu": "4"}, {"nvidia.com/gpu.replicas": "junk"}) == 4
    assert _node_object({"nvidia.com/gpu": "4"}, {"nvidia.com/gpu.replicas": "0"}) == 4


def test_single_strategy_profile():
    assert mig_single_profile(Node("n", _gfd(f"{A100}-MIG-2g.20gb"), capacity={})) == "2g.20gb"
    assert mig_single_profile(Node("n", _gfd(A100), capacity={WHOLE_GPU_RESOURCE: 8})) is None
    # A uniform configuration with no nvidia.com/gpu advertised is the mixed strategy's.
    mixed = Node(
        "n", {"nvidia.com/mig.config": "all-1g.10gb"}, capacity={"nvidia.com/mig-1g.10gb": 7}
    )
    assert mig_single_profile(mixed) is None
    # all-balanced is not one profile.
    balanced = Node(
        "n", {"nvidia.com/mig.config": "all-balanced"}, capacity={WHOLE_GPU_RESOURCE: 4}
    )
    assert mig_single_profile(balanced) is None


# ---------------------------------------------------------------- models and MIG tables


@pytest.mark.parametrize(
    ("labels", "dcgm", "model"),
    [
        (_gfd(f"{A100}-MIG-1g.10gb"), None, A100),
        (_gfd("Tesla-T4-SHARED"), None, "Tesla-T4"),
        (_gfd("NVIDIA-H100-80GB-HBM3"), "NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3"),
        ({}, "NVIDIA L4", "NVIDIA L4"),
        ({"cloud.google.com/gke-accelerator": "nvidia-l4"}, None, "nvidia-l4"),
        ({"karpenter.k8s.aws/instance-gpu-name": "a10g"}, None, "a10g"),
        ({"k8s.amazonaws.com/accelerator": "nvidia-tesla-t4"}, None, "nvidia-tesla-t4"),
        ({}, None, None),
    ],
)
def test_gpu_model_of(labels, dcgm, model):
    assert gpu_model_of(Node("n", labels), dcgm) == model


def test_mig_profile_tables_read_the_model_where_profiles_repeat():
    assert family_of("NVIDIA-A100-SXM4-40GB") == "a100-40gb"
    assert family_of("NVIDIA A100 80GB PCIe") == "80gb"
    assert family_of("NVIDIA H100 NVL") == "h100-94gb"
    assert family_of("Tesla T4") is None and family_of(None) is None
    # 1g.10gb is a seventh of an 80 GB card but a quarter of a 40 GB one.
    assert instances_per_gpu("1g.10gb", "NVIDIA-A100-SXM4-80GB") == 7
    assert instances_per_gpu("1g.10gb", "NVIDIA-A100-SXM4-40GB") == 4
    assert instances_per_gpu("1g.10gb") == 7
    assert instances_per_gpu("1g.6gb") == 4
    assert instances_per_gpu("9g.1tb") is None
    assert (compute_slices("3g.40gb"), compute_slices("junk")) == (3, None)


# ---------------------------------------------------------------- pod label sets


@pytest.mark.parametrize(
    ("mode", "seen", "chosen"),
    [
        ("auto", {"exported_pod", "pod", "Hostname"}, "exported"),
        ("auto", {"pod_name", "pod_namespace"}, "legacy"),
        ("auto", {"pod", "namespace"}, "plain"),
        ("auto", set(), "plain"),
        ("legacy", {"exported_pod"}, "legacy"),
        ("plain", {"exported_pod"}, "plain"),
    ],
)
def test_pod_labels_for(mode, seen, chosen):
    assert pod_labels_for(mode, seen) == POD_LABEL_SETS[chosen]


# ---------------------------------------------------------------- where a device is


SETTINGS = AttributionSettings()


def _dev(index: int = 0, *, candidates: tuple[str, ...] = ("n1",), **kw) -> GpuDevice:
    return GpuDevice(
        uuid=kw.pop("uuid", f"GPU-{index}"),
        index=index,
        node=candidates[0] if candidates else "",
        model_name="NVIDIA A100-SXM4-80GB",
        node_candidates=candidates,
        **kw,
    )


def _attribute(devices, nodes, pods=()):
    return attribute(devices, ClusterState(AT, tuple(nodes), tuple(pods)), SETTINGS, AT, 1800)


def _exporter(name: str, node: str) -> Pod:
    return Pod("gpu-operator", name, node, "Running", {}, owner=OwnerRef("DaemonSet", "dcgm"))


def test_a_device_is_on_the_first_node_label_that_names_a_known_node():
    nodes = [Node("worker-1", capacity={WHOLE_GPU_RESOURCE: 1})]
    result = _attribute([_dev(candidates=("dcgm-exporter-x7k2p", "worker-1"))], nodes)
    (ctx,) = result.contexts
    assert ctx.node_name == "worker-1" and ctx.node is nodes[0]
    (note,) = result.notes
    assert note.kind == "node_label" and "dcgm-exporter-x7k2p" in note.message


def test_a_hostname_naming_the_exporter_pod_places_the_device_on_that_pods_node():
    nodes = [Node("worker-1", capacity={WHOLE_GPU_RESOURCE: 1})]
    pods = [_exporter("dcgm-exporter-x7k2p", "worker-1")]
    result = _attribute([_dev(candidates=("dcgm-exporter-x7k2p",))], nodes, pods)
    assert result.contexts[0].node_name == "worker-1"
    assert "pod gpu-operator/dcgm-exporter-x7k2p, on node worker-1" in result.notes[0].message


def test_a_device_already_on_its_node_says_nothing_and_one_on_none_is_unknown():
    nodes = [Node("n1", capacity={WHOLE_GPU_RESOURCE: 1})]
    assert _attribute([_dev()], nodes).notes == ()
    lost = _attribute([_dev(candidates=("elsewhere",))], nodes)
    assert [n.kind for n in lost.notes] == ["unknown_node"]
    # ... and the node's GPU the metrics never showed is still one of its GPUs.
    assert [c.device for c in lost.contexts if c.node_name == "n1"] == [None]


def _gpu_pod(name: str, gpus: float) -> Pod:
    return Pod("team-a", name, "n1", "Running", {WHOLE_GPU_RESOURCE: gpus})


def test_pods_the_exporter_puts_on_one_gpu_share_it_by_their_requests():
    shared = _dev(pod=PodRef("team-a", "a"), shared_with=(PodRef("team-a", "b"),))
    nodes = [Node("n1", capacity={WHOLE_GPU_RESOURCE: 1})]
    result = _attribute([shared], nodes, [_gpu_pod("a", 2), _gpu_pod("b", 1)])
    (ctx,) = result.contexts
    assert ctx.attribution == "approximate"
    assert [(h.pod, h.share) for h in ctx.holders] == [
        ("a", pytest.approx(2 / 3)),
        ("b", pytest.approx(1 / 3)),
    ]
    # "a" asked for 2 time-slicing replicas, both on this GPU: none is missing.
    assert [n.kind for n in result.notes] == ["approximate_attribution"]
    assert "2 pods share it" in result.notes[0].message


def test_a_sharing_pod_not_in_the_cluster_leaves_the_gpu_to_the_others():
    shared = _dev(pod=PodRef("team-a", "a"), shared_with=(PodRef("team-a", "gone"),))
    result = _attribute(
        [shared], [Node("n1", capacity={WHOLE_GPU_RESOURCE: 1})], [_gpu_pod("a", 1)]
    )
    assert [(h.pod, h.share) for h in result.contexts[0].holders] == [("a", 1.0)]


def test_whole_gpu_requests_under_the_single_strategy_land_on_mig_instances():
    node = Node("n1", _gfd(f"{A100}-MIG-3g.40gb"), capacity={WHOLE_GPU_RESOURCE: 2})
    instances = [_dev(0, mig_profile="3g.40gb", mig_instance_id=i, uuid="GPU-0") for i in (1, 2)]
    result = _attribute(instances, [node], [_gpu_pod("infer", 1)])
    held = [c.holders[0].pod if c.holders else None for c in result.contexts]
    assert held == ["infer", None]
    assert result.contexts[0].attribution == "approximate"
    # Two instances of one card: one physical GPU, none missing.
    assert len(result.contexts) == 2


# ---------------------------------------------------------------- what a MIG share costs


BOOK = PriceBook(
    PriceBookFile.model_validate(
        {
            "version": 1,
            "currency": "USD",
            "models": [
                {
                    "name": "NVIDIA A100-SXM4-80GB",
                    "memory_gib": 80,
                    "mig_slices": {"1g.10gb": 7, "3g.40gb": 2},
                    "prices": {"on-demand": "7.00"},
                }
            ],
        }
    )
)


def _instances(*profiles: str, uuid: str = "GPU-0"):
    contexts = []
    for i, profile in enumerate(profiles):
        dev = GpuDevice(uuid, 0, "node-a", "NVIDIA A100-SXM4-80GB", "", profile, i + 1)
        contexts.append(context(dev, allocated=i == 0))
    return contexts


def test_a_full_card_of_instances_is_the_card():
    out, partitioned, notes = with_gpu_fractions(_instances(*["1g.10gb"] * 7), BOOK)
    assert [c.gpu_fraction for c in out] == [pytest.approx(1 / 7)] * 7
    assert partitioned == () and notes == ()


def test_what_no_instance_covers_is_the_cards_remainder_and_is_still_paid():
    out, (card,), _ = with_gpu_fractions(_instances("3g.40gb"), BOOK)
    assert out[0].gpu_fraction == 0.5 and card.remainder == pytest.approx(0.5)
    report = allocate_cost(out, np.array([0.5]), [], BOOK, AT, 3600, (card,))
    held, remainder = report.lines
    assert (held.pod, held.gpu_hours, held.cost) == ("train-worker-0", 0.5, Decimal("3.50"))
    assert (remainder.pod, remainder.gpu_hours, remainder.cost) == (None, 0.5, Decimal("3.50"))
    # A finance reader's check: one card, one hour, its price; never more.
    assert report.totals[0].capacity_cost == Decimal("7.00")


def test_instances_that_add_up_to_more_than_a_card_are_scaled_to_one_card():
    out, partitioned, notes = with_gpu_fractions(_instances(*["1g.10gb"] * 8), BOOK)
    assert sum(c.gpu_fraction for c in out) == pytest.approx(1.0)
    assert partitioned == ()
    assert any("add up to 1.14" in n.message for n in notes)


def test_profiles_the_book_lacks_fall_back_to_nvidias_table_then_compute_slices():
    book = load_price_book()
    assert book.mig_fraction("NVIDIA A100-SXM4-80GB", "1g.20gb")[0] == pytest.approx(1 / 4)
    fraction, how = book.mig_fraction("NVIDIA A100-SXM4-80GB", "5g.60gb")
    assert fraction == pytest.approx(5 / 7) and "compute slices" in how
    fraction, how = book.mig_fraction(None, "garbage")
    assert fraction == 1.0 and "unreadable" in how
    out, _, notes = with_gpu_fractions(_instances("5g.60gb"), book)
    assert out[0].gpu_fraction == pytest.approx(5 / 7)
    assert [n.kind for n in notes] == ["mig"]


# ---------------------------------------------------------------- messages on old exporters


def _anonymous_gpu() -> GpuDevice:
    """What an exporter without ``Hostname`` and ``gpu`` labels gives (2020 outputs)."""
    return GpuDevice("GPU-5fa1c2d3", -1, "", "Tesla T4")


def test_a_gpu_without_host_or_index_is_named_by_its_uuid_and_no_node(shipped_rules):
    dev = _anonymous_gpu()
    ctx = context(dev, node=Node(""))
    window = 1800
    thin = stats(
        [dev],
        {
            (Signal.UTIL_RATIO, Aggregate.AVG, window): [0.01],
            (Signal.UTIL_RATIO, Aggregate.COUNT, window): [full_count(window) * 0.1],
        },
    )
    rules = [shipped_rules["gpu-idle"]]
    (note,) = evaluate(rules, thin, [ctx]).notes
    assert note.message.startswith("gpu-idle: GPU GPU-5fa1c2d3 on (no node label) not judged")
    full = stats(
        [dev],
        {
            (Signal.UTIL_RATIO, Aggregate.AVG, window): [0.01],
            (Signal.UTIL_RATIO, Aggregate.COUNT, window): [full_count(window)],
        },
    )
    (finding,) = evaluate(rules, full, [ctx]).findings
    assert finding.message.startswith("GPU GPU-5fa1c2d3 on (no node label)")
    assert finding.gpu_index is None and finding.where == "(no node label)"
