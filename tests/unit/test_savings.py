"""Each savings calculation redone by hand on small scenarios, its exclusions, overlaps."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.savings import (
    SavingsInputs,
    compute_savings,
    idle,
    quantization,
    reserved,
    scale_down,
    sharing,
    spot,
)
from gpuwatch.analysis.savings.overlap import totals
from gpuwatch.config.settings import SavingsSettings
from gpuwatch.model.cluster import WHOLE_GPU_RESOURCE, ClusterState, Controller, Node, OwnerRef, Pod
from gpuwatch.model.findings import Finding, GpuHolder, Role, Severity
from gpuwatch.model.metrics import Aggregate, AggregateSpec, HistoryFrame, Signal
from gpuwatch.model.savings import Saving
from gpuwatch.model.tenant import MODEL_PARAMS
from gpuwatch.pipeline import run_cycle
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from tests.builders import AT, device
from tests.unit.test_cost import BOOK
from tests.unit.test_pipeline import SETTINGS, _components

A100, T4 = "NVIDIA-A100-SXM4-80GB", "Tesla T4"
A10_BOOK_ENTRY = {"name": "NVIDIA A10", "memory_gib": 24, "prices": {"on-demand": "10.50"}}


def node(name="n1", pool="gpu-training", gpus=8):
    return Node(name, {"pool": pool}, capacity={WHOLE_GPU_RESOURCE: float(gpus)})


def gpu(i, pod=None, model=A100, n=None, capacity="on-demand", share=1.0):
    n = n or node()
    holders = (GpuHolder("ns", pod, f"PyTorchJob/ns/{pod}", "team", share),) if pod else ()
    return GpuContext(
        n.name,
        device(i, node=n.name),
        n,
        n.labels.get("pool"),
        capacity,
        model,
        holders,
        "exact" if pod else "none",
    )


def inputs(
    contexts,
    pods=(),
    controllers=(),
    findings=(),
    p95=None,
    mem=None,
    total=None,
    history=None,
    book=BOOK,
    **settings,
):
    n = len(contexts)
    cluster = ClusterState(
        AT, tuple({c.node.name: c.node for c in contexts}.values()), tuple(pods), tuple(controllers)
    )
    return SavingsInputs(
        at=AT,
        contexts=contexts,
        cluster=cluster,
        book=book,
        findings=findings,
        settings=SavingsSettings.model_validate(settings),
        util_p95=np.array(p95 if p95 is not None else [np.nan] * n, dtype=float),
        fb_used_max_ratio=np.array(mem if mem is not None else [np.nan] * n, dtype=float),
        fb_total_mib=np.array(total if total is not None else [81920.0] * n, dtype=float),
        attached_hourly=history,
    )


def training_pod(name, annotations=None, image="registry/train:1"):
    return Pod(
        "ns",
        name,
        "n1",
        "Running",
        {WHOLE_GPU_RESOURCE: 8},
        annotations=annotations or {},
        owner=OwnerRef("PyTorchJob", name),
        images=(image,),
    )


class TestSpot:
    def test_by_hand(self):
        pods = [
            training_pod(
                "llm", {"gpuwatch.io/checkpoint": "true", "gpuwatch.io/checkpoint-interval": "600"}
            )
        ]
        (saving,), excluded = spot.compute(inputs([gpu(i, "llm") for i in range(8)], pods))
        # (32.00 - 9.60) - 0.05/h x (300 s + 300 s)/3600 x 9.60 = 22.32 per GPU-hour
        assert saving.monthly == Decimal("128563.20")  # 22.32 x 8 GPUs x 720 h
        assert saving.inputs["checkpoint_interval_s"] == 600 and saving.confidence == "high"
        assert len(saving.gpu_uuids) == 8 and excluded == []

    def test_checkpoint_on_the_owner_and_assumed_interval(self):
        pods = [training_pod("llm")]
        owners = [
            Controller("PyTorchJob", "ns", "llm", annotations={"gpuwatch.io/checkpoint": "true"})
        ]
        (saving,), _ = spot.compute(inputs([gpu(0, "llm")], pods, owners))
        # interval 1800 s assumed: (32 - 9.6) - 0.05 x (900 + 300)/3600 x 9.6 = 22.24
        assert saving.monthly == Decimal("16012.80") and saving.confidence == "medium"

    def test_no_checkpoints_no_saving_and_says_why(self):
        saved, (skipped,) = spot.compute(inputs([gpu(0, "job")], [training_pod("job")]))
        assert saved == [] and "no checkpoints" in skipped.reason

    @pytest.mark.parametrize(
        ("notes", "why"),
        [
            ({"gpuwatch.io/checkpoint": "yes"}, "no checkpoints"),
            (
                {"gpuwatch.io/checkpoint": "true", "gpuwatch.io/checkpoint-interval": "banana"},
                "checkpoint-interval is unreadable",
            ),
            (
                {"gpuwatch.io/checkpoint": "true", "gpuwatch.io/checkpoint-interval": "-5"},
                "checkpoint-interval is unreadable",
            ),
        ],
    )
    def test_an_unreadable_annotation_is_no_opt_in(self, notes, why):
        saved, (skipped,) = spot.compute(inputs([gpu(0, "llm")], [training_pod("llm", notes)]))
        assert saved == [] and why in skipped.reason

    def test_already_on_spot(self):
        pods = [training_pod("llm", {"gpuwatch.io/checkpoint": "true"})]
        assert spot.compute(inputs([gpu(0, "llm", capacity="spot")], pods)) == ([], [])

    def test_rework_costlier_than_spot_saves(self):
        pods = [
            training_pod(
                "llm",
                {"gpuwatch.io/checkpoint": "true", "gpuwatch.io/checkpoint-interval": "86400"},
            )
        ]
        saved, (skipped,) = spot.compute(
            inputs([gpu(0, "llm")], pods, spot={"preemptions_per_hour": 1.0})
        )
        assert saved == [] and "rework" in skipped.reason


def inference_pod(name, image="nvcr.io/nvidia/tritonserver:24.08", annotations=None):
    return Pod(
        "ns",
        name,
        "n1",
        "Running",
        {WHOLE_GPU_RESOURCE: 1},
        images=(image,),
        annotations=annotations or {},
    )


A10_BOOK = BOOK.__class__(
    BOOK.book.model_copy(
        update={"models": [*BOOK.book.models, BOOK.book.models[0].model_validate(A10_BOOK_ENTRY)]}
    )
)


class TestSharing:
    def test_packs_first_fit_decreasing(self):
        contexts = [gpu(i, f"r{i}", model="NVIDIA A10") for i in range(3)]
        pods = [inference_pod(f"r{i}") for i in range(3)]
        (saving,), _ = sharing.compute(
            inputs(
                contexts,
                pods,
                p95=[0.1, 0.1, 0.1],
                mem=[0.25, 0.25, 0.25],
                total=[24576.0] * 3,
                book=A10_BOOK,
            )
        )
        assert saving.monthly == Decimal("15120.00")  # 2 GPUs freed x 10.50 x 720
        assert saving.inputs["packed_gpus"] == 1 and len(saving.gpu_uuids) == 2
        assert [len(step["pods"]) for step in saving.plan] == [3]

    def test_utilization_cap_keeps_busy_pods_apart(self):
        contexts = [gpu(i, f"r{i}", model="NVIDIA A10") for i in range(2)]
        saved, skipped = sharing.compute(
            inputs(
                contexts,
                [inference_pod("r0"), inference_pod("r1")],
                p95=[0.29, 0.29],
                mem=[0.1, 0.1],
                total=[24576.0] * 2,
                book=A10_BOOK,
                sharing={"pack_util_max": 0.5},
            )
        )
        assert saved == [] and "do not fit together" in skipped[0].reason

    def test_pod_at_80_percent_memory_is_not_shareable(self):
        contexts = [gpu(0, "big", model="NVIDIA A10"), gpu(1, "small", model="NVIDIA A10")]
        saved, skipped = sharing.compute(
            inputs(
                contexts,
                [inference_pod("big"), inference_pod("small")],
                p95=[0.05, 0.05],
                mem=[0.8, 0.1],
                total=[24576.0] * 2,
                book=A10_BOOK,
            )
        )
        assert saved == []
        assert any("peak memory 80% over 50%" in s.reason for s in skipped)

    def test_training_pods_are_not_candidates(self):
        result = sharing.compute(inputs([gpu(0, "t")], [training_pod("t")], p95=[0.0], mem=[0.0]))
        assert result == ([], [])


class TestQuantization:
    def test_by_hand(self):
        contexts = [gpu(i, "chat", model="NVIDIA A10") for i in range(2)]
        pods = [inference_pod("chat", "vllm/vllm-openai:v0.6", {"gpuwatch.io/model-params": "7B"})]
        (saving,), _ = quantization.compute(inputs(contexts, pods, book=A10_BOOK))
        # INT8: 7e9 B = 6.52 GiB x 1.3 = 8.48 GiB <= T4's 16 GiB x 0.9
        assert saving.inputs["int8"]["target_model"] == "Tesla T4"
        assert saving.inputs["int8"]["footprint_gib"] == 8.48
        assert saving.monthly == Decimal("6480.00")  # (10.50 - 6.00) x 2 GPUs x 720

    def test_no_cheaper_gpu_fits(self):
        pods = [inference_pod("big", "vllm/vllm-openai", {"gpuwatch.io/model-params": "70B"})]
        saved, (skipped,) = quantization.compute(inputs([gpu(0, "big")], pods))
        assert saved == [] and "no cheaper GPU" in skipped.reason

    def test_unknown_size_and_small_model(self):
        unknown = [inference_pod("x", "vllm/vllm-openai")]
        assert (
            "model size unknown"
            in quantization.compute(inputs([gpu(0, "x")], unknown))[1][0].reason
        )
        small = [inference_pod("x", "vllm/vllm-openai", {"gpuwatch.io/model-params": "1B"})]
        reason = quantization.compute(inputs([gpu(0, "x")], small))[1][0].reason
        assert "not mostly weights" in reason

    @pytest.mark.parametrize(
        ("text", "value"),
        [
            ("7B", 7e9),
            ("1.5b", 1.5e9),
            ("500M", 5e8),
            ("7e9", 7e9),
            ("13000000000", 1.3e10),
            ("lots", None),
            ("nan", None),
            ("inf", None),
            ("-7B", None),
            ("0", None),
        ],
    )
    def test_parse_params(self, text, value):
        assert MODEL_PARAMS.get({MODEL_PARAMS.key: text}) == value


def idle_finding(ctx):
    return Finding(
        "gpu-idle",
        Severity.WARNING,
        ctx.device.uuid,
        ctx.node_name,
        ctx.pool,
        0.01,
        0.1,
        1800,
        AT,
        "idle",
        namespace="ns",
        pod=ctx.holders[0].pod,
        workload=ctx.holders[0].workload,
        team="team",
        role=Role.IDLE,
    )


def test_idle_release_by_hand():
    contexts = [gpu(0, "nb"), gpu(1, "nb")]
    (saving,), _ = idle.compute(inputs(contexts, findings=[idle_finding(c) for c in contexts]))
    assert saving.monthly == Decimal("46080.00")  # 2 x 32.00 x 720


class TestScaleDown:
    def contexts(self):
        nodes = [node(f"n{i}") for i in range(3)]
        held = [gpu(i, "job", n=nodes[0]) for i in range(8)]
        return held + [gpu(i, n=nodes[k]) for k in (1, 2) for i in range(8)]

    def test_floor_limits_the_nodes_removed(self):
        (saving,), _ = scale_down.compute(inputs(self.contexts(), floors={"gpu-training": 2}))
        assert saving.inputs["removable_nodes"] == 1 and saving.confidence == "high"
        assert saving.monthly == Decimal("184320.00")  # 1 node x 8 x 32.00 x 720

    def test_at_the_floor_nothing(self):
        saved, (skipped,) = scale_down.compute(inputs(self.contexts(), floors={"gpu-training": 3}))
        assert saved == [] and "floor" in skipped.reason

    def test_pending_pod_for_the_pool_lowers_confidence(self):
        waiting = Pod(
            "ns",
            "w",
            None,
            "Pending",
            {WHOLE_GPU_RESOURCE: 8},
            node_selector={"pool": "gpu-training"},
        )
        elsewhere = Pod(
            "ns", "v", None, "Pending", {WHOLE_GPU_RESOURCE: 8}, node_selector={"pool": "gpu-spot"}
        )
        (saving,), _ = scale_down.compute(inputs(self.contexts(), [waiting, elsewhere]))
        assert saving.inputs["pending_gpu_pods"] == 1 and saving.confidence == "low"


def test_reserved_baseline_less_claimed_gpus():
    contexts = [gpu(i, f"p{i}" if i < 6 else None) for i in range(8)]
    hours = 24 * 7
    attached = np.zeros((8, hours))
    attached[:4] = 1.0  # four GPUs always in use
    attached[4:6, ::2] = 1.0  # two more every other hour
    history = HistoryFrame(
        tuple(c.device for c in contexts),
        np.arange(hours) * 3600,
        {AggregateSpec(Signal.POD_ATTACHED, Aggregate.MAX, 3600): attached},
    )
    claim = Saving(
        "spot", {}, Decimal(1), "CNY", {}, "", (), "high", "", gpu_uuids=(contexts[0].device.uuid,)
    )
    (saving,), _ = reserved.compute(inputs(contexts, history=history), [claim])
    assert saving.inputs["baseline_gpus"] == 4  # p10 of hourly counts {4, 6}
    assert saving.inputs["reservable_gpus"] == 3  # one moves to spot
    assert saving.monthly == Decimal("27648.00")  # 3 x (32.00 - 19.20) x 720


def saving(kind, amount, gpus, currency="CNY"):
    return Saving(kind, {}, Decimal(amount), currency, {}, "", (), "high", "", gpu_uuids=gpus)


def test_overlap_counts_each_gpu_once_and_keeps_currencies_apart():
    result = totals(
        [
            saving("idle_release", "200", ("g1", "g2")),  # 100 per GPU
            saving("sharing", "150", ("g2",)),  # claims g2 again
            saving("reserved", "50", ()),
            saving("spot", "7", ("g9",), "USD"),
        ]
    )
    cny, usd = result
    assert (cny.gross_monthly, cny.overlap_monthly, cny.net_monthly) == (
        Decimal("400"),
        Decimal("100.00"),
        Decimal("300.00"),
    )
    assert (usd.currency, usd.net_monthly) == ("USD", Decimal("7.00"))


def test_demo_savings_every_kind_and_never_more_than_the_cost(showcase_result):
    kinds = {s.kind for s in showcase_result.savings}
    assert kinds == {"spot", "sharing", "quantization", "idle_release", "scale_down", "reserved"}
    lines = {line.gpu_uuid: line for line in showcase_result.cost.lines}
    for item in showcase_result.savings:
        if not item.gpu_uuids:
            continue
        # A saving cannot exceed what its GPUs cost at their price, per 30 days.
        ceiling = sum(lines[u].price.per_gpu_hour * 720 for u in item.gpu_uuids)
        assert item.monthly <= ceiling, item.kind
    (total,) = showcase_result.savings_totals
    assert total.net_monthly == total.gross_monthly - total.overlap_monthly
    assert total.overlap_monthly > 0  # the idle rerank GPU that sharing also frees


@pytest.fixture(scope="module")
def showcase_result():
    return run_cycle(_components(), SETTINGS, SHOWCASE_AT)


def test_compute_savings_sorts_largest_first():
    pods = [training_pod("llm", {"gpuwatch.io/checkpoint": "true"})]
    contexts = [gpu(0, "llm"), gpu(1, "nb")]
    result = compute_savings(inputs(contexts, pods, findings=[idle_finding(contexts[1])]))
    amounts = [s.monthly for s in result.savings]
    assert amounts == sorted(amounts, reverse=True)
