"""The savings plan, lever by lever, on small clusters whose figures are worked by hand
in each test; then properties over random clusters: the items' net adds up to the total,
net never above gross, no node or GPU-hour banked twice, cash never above what it
touches costs."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.pricing import PriceBook, PriceBookFile
from gpuwatch.analysis.savings import SavingsInputs, compute_savings, totals
from gpuwatch.analysis.savings.use import HourlyUse
from gpuwatch.config.settings import ActionsSettings, SavingsSettings
from gpuwatch.model.cluster import (
    WHOLE_GPU_RESOURCE,
    ClusterState,
    Controller,
    Node,
    OwnerRef,
    Pod,
    Taint,
)
from gpuwatch.model.findings import Finding, GpuHolder, Role, Severity
from gpuwatch.model.savings import HIGH, LOW, MEDIUM, Saving
from gpuwatch.model.tenant import MODEL_PARAMS
from tests.builders import AT, device

A100, A10, T4, L4 = "NVIDIA A100-SXM4-80GB", "NVIDIA A10", "Tesla T4", "NVIDIA L4"
PRICES = {
    A100: (80, 1.0, {"on-demand": "32.00", "spot": "9.60", "reserved": "19.20"}),
    A10: (24, 0.25, {"on-demand": "10.50", "reserved": "6.30"}),
    T4: (16, 0.1, {"on-demand": "6.00", "reserved": "3.60"}),
    L4: (24, 0.4, {"on-demand": "8.00"}),
}


def book(*models: str) -> PriceBook:
    return PriceBook(
        PriceBookFile.model_validate(
            {
                "version": 1,
                "currency": "CNY",
                "models": [
                    {"name": m, "memory_gib": PRICES[m][0], "relative_throughput": PRICES[m][1],
                     "prices": PRICES[m][2]}
                    for m in models or (A100, A10, T4)
                ],
            }
        )
    )  # fmt: skip


SPOT_TAINT = Taint("spot", "true", "NoSchedule")


def node(name: str, pool: str = "train", gpus: int = 2, spot: bool = False) -> Node:
    return Node(
        name,
        {"pool": pool},
        taints=(SPOT_TAINT,) if spot else (),
        capacity={WHOLE_GPU_RESOURCE: float(gpus)},
    )


def gpu(n: Node, i: int, model: str = A100, pod: Pod | None = None, share: float = 1.0,
        workload: str | None = None) -> GpuContext:  # fmt: skip
    holders = ()
    if pod is not None:
        holders = (
            GpuHolder(pod.namespace, pod.name, workload or f"Pod/ns/{pod.name}", "t", share),
        )
    capacity = "spot" if n.taints else "on-demand"
    return GpuContext(
        n.name, device(i, node=n.name, pod=pod.name if pod else None), n, n.labels["pool"],
        capacity, model, holders, "exact" if pod else "none",
    )  # fmt: skip


def pod(name: str, node_name: str, kind: str = "StatefulSet", gpus: float = 1.0,
        annotations: dict | None = None, image: str = "registry/app:1") -> Pod:  # fmt: skip
    return Pod(
        "ns", name, node_name, "Running", {WHOLE_GPU_RESOURCE: gpus},
        annotations=annotations or {}, owner=OwnerRef(kind, name), images=(image,),
    )  # fmt: skip


def hours(n: int, memory: float = 0.2, **rows: tuple[list[float], list[float]]) -> HourlyUse:
    """Hourly use for ``n`` GPUs: ``rows[f"g{i}"] = (util per hour, held per hour)``; GPUs
    not given are sampled, unheld and idle; every GPU's memory peaks at ``memory``."""
    width = len(next(iter(rows.values()))[0]) if rows else 4
    util = np.zeros((n, width))
    held = np.zeros((n, width))
    for key, (u, h) in rows.items():
        util[int(key[1:])] = u
        held[int(key[1:])] = h
    memory = np.full((n, width), memory)
    times = np.arange(1, width + 1, dtype=np.int64) * 3600
    return HourlyUse(util, memory, held, width * 3600, times)


def plan(contexts, use, pods=(), controllers=(), findings=(), the_book=None, actions=None,
         **savings):  # fmt: skip
    nodes = tuple({c.node.name: c.node for c in contexts}.values())
    inputs = SavingsInputs(
        at=AT,
        contexts=contexts,
        cluster=ClusterState(AT, nodes, tuple(pods), tuple(controllers)),
        book=the_book or book(),
        findings=findings,
        settings=SavingsSettings.model_validate(savings),
        use=use,
        fb_total_mib=np.full(len(contexts), 24576.0),
        actions=ActionsSettings.model_validate(actions or {}),
    )
    result = compute_savings(inputs)
    return result, {(s.kind, s.scope.get("workload") or s.scope.get("pool")): s
                    for s in result.savings}  # fmt: skip


def idle(ctx: GpuContext) -> Finding:
    holder = ctx.holders[0]
    return Finding(
        "gpu-idle", Severity.WARNING, ctx.device.uuid, ctx.node_name, ctx.pool, 0.02, 0.1,
        1800, AT, "", namespace=holder.namespace, pod=holder.pod, workload=holder.workload,
        team=holder.team, role=Role.IDLE,
    )  # fmt: skip


# ---------------------------------------------------------------- 1 release


def test_release_counts_the_hours_it_idled_and_is_reclaimed_capacity():
    n = node("a")
    notebook = pod("nb", "a", kind="Notebook", annotations={"gpuwatch.io/reclaimable": "true"})
    ctx = gpu(n, 0, pod=notebook, workload="Notebook/ns/nb")
    # Held 4 hours: idle (5 %) in 2, busy in 1, no samples in 1 (unknown, never idle).
    use = hours(2, g0=([0.05, 0.05, 0.5, np.nan], [1, 1, 1, 1]))
    result, by = plan([ctx, gpu(n, 1)], use, [notebook], findings=[idle(ctx)])
    release = by[("release", "Notebook/ns/nb")]
    # 2 idle GPU-hours x 32.00 = 64.00 over 3 hours with data; x 720 / 3 = 15,360.00
    assert release.monthly == Decimal("15360.00")
    assert not release.cash and release.net_monthly == 0
    assert release.reclaimed_gpu_hours_monthly == pytest.approx(480.0)  # 2 x 720 / 3
    assert release.reclaimed_monthly == Decimal("15360.00")
    # Reclaimable (gpuwatch may act), but measured over 3 of 4 hours: high drops to medium.
    assert release.confidence == MEDIUM and release.hours_counted == 3
    (total,) = totals(result.savings)
    assert total.reclaimed_monthly == Decimal("15360.00")


def test_a_pool_billed_per_gpu_banks_a_release():
    n = node("a")
    notebook = pod("nb", "a", kind="Notebook")
    ctx = gpu(n, 0, pod=notebook, workload="Notebook/ns/nb")
    use = hours(1, g0=([0.05, 0.05, 0.5, 0.5], [1, 1, 1, 1]))
    _, by = plan([ctx], use, [notebook], findings=[idle(ctx)], billing={"train": "per-gpu"})
    release = by[("release", "Notebook/ns/nb")]
    # 2 x 32.00 over 4 hours x 720 / 4 = 11,520.00, cash; a human must stop it: low.
    assert release.cash and release.net_monthly == Decimal("11520.00") == release.monthly
    assert release.confidence == LOW


# ---------------------------------------------------------------- 4 remove nodes


TRAIN = {"pools": {"train": {"floor": 0}}}


def test_a_node_empty_every_hour_goes_and_is_cash():
    a, b = node("a"), node("b")
    busy = pod("srv", "b")
    contexts = [gpu(a, 0), gpu(a, 1), gpu(b, 0, pod=busy), gpu(b, 1, pod=busy)]
    use = hours(4, g2=([0.9] * 4, [1] * 4), g3=([0.9] * 4, [1] * 4))
    _, by = plan(contexts, use, [busy], actions=TRAIN)
    removal = by[("remove_nodes", "train")]
    # Node a: 2 GPUs x 32.00 = 64.00 an hour, empty all 4 hours: 64 x 720 = 46,080.00
    assert removal.net_monthly == removal.monthly == Decimal("46080.00")
    assert removal.nodes == ("a",) and removal.confidence == HIGH


@pytest.mark.parametrize(
    ("actions", "blocked"),
    [
        ({"pools": {"train": {"floor": 2}}}, None),  # floor 2 of 2: nothing goes
        ({}, "train is not in actions.pools"),
    ],
)
def test_floors_and_the_allowlist(actions, blocked):
    a, b = node("a"), node("b")
    result, by = plan([gpu(a, 0), gpu(a, 1), gpu(b, 0), gpu(b, 1)], hours(4), actions=actions)
    removal = by.get(("remove_nodes", "train"))
    if blocked is None:
        assert removal is None
        assert any(e.kind == "remove_nodes" for e in result.excluded)
    else:
        # Blocked: worth both nodes alone (128.00 x 720 = 92,160.00), banks nothing.
        assert removal.blocked.startswith(blocked) and removal.net_monthly == 0
        assert removal.monthly == Decimal("92160.00") and "actions.pools" in removal.unblock
        (total,) = totals(result.savings)
        assert total.net_monthly == 0 and total.blocked_monthly == Decimal("92160.00")


def test_the_release_and_the_node_it_empties_are_banked_once():
    """The audit's double count: the notebooks' release and the drain of their node."""
    a, b = node("a"), node("b")
    notes = {"gpuwatch.io/reclaimable": "true"}
    nb = pod("nb", "a", kind="Notebook", annotations=notes)
    busy = pod("srv", "b")
    ctx = gpu(a, 0, pod=nb, workload="Notebook/ns/nb")
    contexts = [ctx, gpu(a, 1), gpu(b, 0, pod=busy), gpu(b, 1, pod=busy)]
    # The notebook idles in hours 0-1, works in hour 2, is gone in hour 3.
    use = hours(
        4, g0=([0.05, 0.05, 0.5, 0.0], [1, 1, 1, 0]), g2=([0.9] * 4, [1] * 4),
        g3=([0.9] * 4, [1] * 4),
    )  # fmt: skip
    result, by = plan(contexts, use, [nb, busy], findings=[idle(ctx)], actions=TRAIN)
    release, removal = by[("release", "Notebook/ns/nb")], by[("remove_nodes", "train")]
    # Node a could go in hours 0, 1 and 3: 3 x 64.00 = 192.00 over 4 h; x 720 / 4 = 34,560.00
    assert removal.net_monthly == Decimal("34560.00")
    # The release (2 idle GPU-hours, 46.08 GPU-hours a month... worth 11,520.00) is
    # capacity reclaimed beside it, never cash on top.
    assert release.net_monthly == 0 and release.reclaimed_monthly == Decimal("11520.00")
    # The busy server's 2 GPUs and the notebook's working hour stay on on-demand: in use
    # 2, 2, 3, 2 GPUs an hour (hours the release and the removal took are gone); the
    # 10th percentile, 2 GPUs, reserved: 2 x (32.00 - 19.20) x 720 = 18,432.00
    assert by[("reserved", A100)].net_monthly == Decimal("18432.00")
    (total,) = totals(result.savings)
    assert total.net_monthly == Decimal("34560.00") + Decimal("18432.00")


# ---------------------------------------------------------------- 5 spot


def _spot_cluster(spot_free: int = 8, opted: bool = True, jobs: tuple[str, ...] = ("llm",)):
    od = node("od", gpus=8 * len(jobs))
    spot = node("sp", pool="spot", gpus=8, spot=True)
    notes = {"gpuwatch.io/checkpoint": "true", "gpuwatch.io/checkpoint-interval": "600"}
    if opted:
        notes["gpuwatch.io/migrate-to-spot"] = "true"
    pods = [pod(j, "od", kind="PyTorchJob", gpus=8, annotations=notes) for j in jobs]
    contexts = [
        gpu(od, 8 * k + i, pod=p, workload=f"PyTorchJob/ns/{p.name}")
        for k, p in enumerate(pods)
        for i in range(8)
    ]
    other = pod("other", "sp", gpus=8 - spot_free)
    contexts += [gpu(spot, i, pod=other if i >= spot_free else None) for i in range(8)]
    rows = {f"g{i}": ([0.9] * 4, [1] * 4) for i in range(8 * len(jobs))}
    return contexts, hours(len(contexts), **rows), [*pods, other]


def test_spot_by_hand():
    contexts, use, pods = _spot_cluster()
    _, by = plan(contexts, use, pods)
    saving = by[("spot", "PyTorchJob/ns/llm")]
    # (32.00 - 9.60) - 0.05/h x (300 s + 300 s)/3600 x 9.60 = 22.32 per GPU-hour;
    # 8 GPUs x 4 h held x 22.32 = 714.24 over 4 h; x 720 / 4 = 128,563.20
    assert saving.net_monthly == saving.monthly == Decimal("128563.20")
    assert saving.inputs["spot_pool"] == "spot" and saving.confidence == HIGH


@pytest.mark.parametrize(
    ("cluster", "blocked", "unblock"),
    [
        ({"spot_free": 7}, "spot pool spot has room for 7 of 8 GPUs", "room for 8"),
        ({"opted": False}, "PyTorchJob/ns/llm did not opt in", "gpuwatch.io/migrate-to-spot"),
    ],
)
def test_spot_blocked_banks_nothing_and_says_what_unblocks_it(cluster, blocked, unblock):
    contexts, use, pods = _spot_cluster(**cluster)
    _, by = plan(contexts, use, pods)
    saving = by[("spot", "PyTorchJob/ns/llm")]
    assert saving.blocked.startswith(blocked) and unblock in saving.unblock
    assert saving.net_monthly == 0 and saving.monthly == Decimal("128563.20")
    assert "128,563.20 CNY" in saving.unblock


def test_spot_without_a_spot_pool_of_the_model():
    contexts, use, pods = _spot_cluster()
    contexts = [c for c in contexts if c.pool != "spot"]
    use = HourlyUse(use.util[:8], use.memory[:8], use.held[:8], use.lookback_s, use.times_s)
    _, by = plan(contexts, use, pods[:1])
    saving = by[("spot", "PyTorchJob/ns/llm")]
    assert saving.blocked == f"no spot pool with {A100}"
    assert saving.unblock.startswith(f"add a spot pool of {A100}")


def test_a_pending_pod_of_the_jobs_size_in_the_spot_pool_blocks_it():
    contexts, use, pods = _spot_cluster()
    waiting = Pod(
        "ns", "w", None, "Pending", {WHOLE_GPU_RESOURCE: 8}, node_selector={"pool": "spot"}
    )
    _, by = plan(contexts, use, [*pods, waiting])
    assert "is pending for spot pool spot" in by[("spot", "PyTorchJob/ns/llm")].blocked


def test_spot_room_taken_by_one_job_is_not_offered_to_the_next():
    contexts, use, pods = _spot_cluster(jobs=("a", "b"))
    result, by = plan(contexts, use, pods)
    first, second = by[("spot", "PyTorchJob/ns/a")], by[("spot", "PyTorchJob/ns/b")]
    assert first.blocked is None and first.net_monthly == Decimal("128563.20")
    # Alone, b would fit (its gross); in the plan, a took the room.
    assert second.blocked == "spot pool spot has room for 0 of 8 GPUs"
    assert second.net_monthly == 0 and second.monthly == Decimal("128563.20")
    # b stays on on-demand, a steady baseline of 8: 8 x (32.00 - 19.20) x 720 = 73,728.00
    assert by[("reserved", A100)].net_monthly == Decimal("73728.00")
    (total,) = totals(result.savings)
    assert total.net_monthly == Decimal("128563.20") + Decimal("73728.00")


# ---------------------------------------------------------------- 3 quantization


def _serving(peak: float, *extra_models: str):
    n = node("i", pool="inference", gpus=4)
    t4 = node("t", pool="inference", gpus=1)
    srv = pod("chat", "i", kind="Deployment", gpus=4, image="vllm/vllm-openai:v0.6",
              annotations={MODEL_PARAMS.key: "7B"})  # fmt: skip
    contexts = [gpu(n, i, A10, pod=srv, workload="Deployment/ns/chat") for i in range(4)]
    contexts.append(gpu(t4, 0, T4))
    rows = {f"g{i}": ([peak, peak / 2, 0.1, 0.1], [1] * 4) for i in range(4)}
    # A vLLM server preallocates most of its GPU's memory: never a sharing candidate.
    return contexts, hours(5, memory=0.9, **rows), [srv], book(A100, A10, T4, *extra_models)


def test_a_cheaper_gpu_must_carry_the_measured_peak_load():
    """The audit's quantization: 4 A10s at 76 % in their busiest hour (42.00/h). T4s
    (throughput 0.1 to the A10's 0.25) need ceil(4 x 0.76 x 0.25 / 0.1) = ceil(7.6) = 8,
    at 48.00/h: a loss, so no saving."""
    contexts, use, pods, _ = _serving(0.76)
    result, by = plan(contexts, use, pods, the_book=book(A10, T4))
    assert ("quantization", "Deployment/ns/chat") not in by
    (why,) = [e.reason for e in result.excluded if e.kind == "quantization"]
    assert "8 Tesla T4 at 48.00/h" in why and "42.00/h today" in why


def test_a_gpu_type_the_cluster_lacks_is_blocked_with_what_it_would_save():
    contexts, use, pods, _ = _serving(0.76)
    _, by = plan(contexts, use, pods, the_book=book(A10, T4, L4))
    saving = by[("quantization", "Deployment/ns/chat")]
    # L4 (0.4): ceil(3.04 x 0.25 / 0.4) = ceil(1.9) = 2 at 8.00 = 16.00/h against 42.00/h:
    # (42.00 - 16.00) x 720 = 18,720.00, but there is no L4 capacity to move to.
    assert saving.monthly == Decimal("18720.00") and saving.net_monthly == 0
    assert saving.blocked == f"the cluster has no on-demand {L4} capacity"


def test_a_light_load_moves_to_cheaper_gpus_at_the_precision_that_fits():
    contexts, use, pods, _ = _serving(0.2)
    _, by = plan(contexts, use, pods, the_book=book(A10, T4))
    saving = by[("quantization", "Deployment/ns/chat")]
    # Load 4 x 0.2 = 0.8 A10s; T4s needed ceil(0.8 x 0.25 / 0.1) = 2 at 6.00 = 12.00/h.
    # FP16 7B needs 7e9 x 2 B x 1.3 = 16.9 GiB > 16 x 0.9: INT8 (8.5 GiB) fits.
    # (42.00 - 12.00) x 720 = 21,600.00, cash (the GPU type changes), low confidence.
    assert saving.net_monthly == saving.monthly == Decimal("21600.00")
    assert saving.inputs["proposed_bits"] == 8 and saving.confidence == LOW


# ---------------------------------------------------------------- 2 sharing


def test_sharing_packs_light_pods_and_frees_reclaimed_capacity():
    n = node("i", pool="inference", gpus=2)
    a = pod("a", "i", kind="Deployment", image="nvcr.io/nvidia/tritonserver:24.08")
    b = pod("b", "i", kind="Deployment", image="nvcr.io/nvidia/tritonserver:24.08")
    contexts = [gpu(n, 0, A10, pod=a), gpu(n, 1, A10, pod=b)]
    use = hours(2, g0=([0.1, 0.05, 0.1, 0.1], [1] * 4), g1=([0.15, 0.1, 0.1, 0.1], [1] * 4))
    _, by = plan(contexts, use, [a, b])
    saving = by[("sharing", "inference")]
    # 2 candidates packed on 1 GPU: 1 A10 freed, 10.50 x 720 = 7,560.00 reclaimed, not cash.
    assert saving.monthly == Decimal("7560.00") and saving.net_monthly == 0
    assert saving.reclaimed_gpu_hours_monthly == 720.0


def test_a_gpu_released_before_is_not_shared_again():
    n = node("i", pool="inference", gpus=2)
    a = pod("a", "i", kind="Deployment", image="nvcr.io/nvidia/tritonserver:24.08")
    b = pod("b", "i", kind="Deployment", image="nvcr.io/nvidia/tritonserver:24.08")
    ca, cb = gpu(n, 0, A10, pod=a, workload="Deployment/ns/a"), gpu(n, 1, A10, pod=b)
    use = hours(2, g0=([0.05, 0.05, 0.1, 0.1], [1] * 4), g1=([0.15, 0.1, 0.1, 0.1], [1] * 4))
    result, by = plan([ca, cb], use, [a, b], findings=[idle(ca)])
    shared = by[("sharing", "inference")]
    assert shared.counted_before and shared.net_monthly == 0 and shared.reclaimed_monthly == 0
    assert any("released already" in e.reason for e in result.excluded)


# ---------------------------------------------------------------- 6 reserved


def test_reserved_is_the_steady_baseline_left_by_the_levers_before():
    n = node("a")
    p1, p2 = pod("s1", "a"), pod("s2", "a")
    contexts = [gpu(n, 0, pod=p1), gpu(n, 1, pod=p2)]
    use = hours(2, g0=([0.9] * 4, [1] * 4), g1=([0.9] * 4, [1, 1, 0, 0]))
    _, by = plan(contexts, use, [p1, p2])
    reserved = by[("reserved", A100)]
    # In use per hour: 2, 2, 1, 1; the 10th percentile is 1 GPU:
    # 1 x (32.00 - 19.20) x 720 = 9,216.00
    assert reserved.net_monthly == reserved.monthly == Decimal("9216.00")
    assert reserved.confidence == LOW  # a purchase, decided outside gpuwatch


def test_a_job_moved_to_spot_leaves_the_reserved_baseline():
    contexts, use, pods = _spot_cluster()
    _, by = plan(contexts, use, pods)
    reserved = by.get(("reserved", A100))
    # Alone, the 8 on-demand GPUs of the job are a baseline of 8 (8 x 12.80 x 720 =
    # 73,728.00); moved to spot by lever 5 first, nothing is left to reserve.
    assert reserved is not None and reserved.monthly == Decimal("73728.00")
    assert reserved.net_monthly == 0 and reserved.counted_before


# ---------------------------------------------------------------- the plan, as a whole


def test_no_history_no_saving_and_a_history_shorter_than_the_lookback_says_so():
    contexts, use, pods = _spot_cluster()
    empty = HourlyUse.empty(len(contexts), 4 * 3600)
    result, _ = plan(contexts, empty, pods)
    assert result.savings == ()
    short = HourlyUse(use.util, use.memory, use.held, 8 * 3600, use.times_s)
    _, by = plan(contexts, short, pods)
    saving = by[("spot", "PyTorchJob/ns/llm")]
    assert saving.confidence == MEDIUM
    assert any("measured over 4 of the lookback's 4 hours" not in a for a in saving.assumptions)


MODELS = st.sampled_from([A100, A10, T4])


@st.composite
def clusters(draw):
    """A random cluster: nodes of GPUs, held by training jobs, notebooks or servers (or
    nobody), a spot pool or not, hourly use drawn hour by hour."""
    n_nodes = draw(st.integers(1, 4))
    per_node = draw(st.integers(1, 3))
    width = draw(st.integers(1, 6))
    contexts, pods, findings = [], [], []
    for k in range(n_nodes):
        spot = draw(st.booleans()) and k > 0
        model = A100 if spot else draw(MODELS)  # the book prices spot for the A100 only
        n = node(f"n{k}", pool="spot" if spot else f"p{k % 2}", gpus=per_node, spot=spot)
        for i in range(per_node):
            kind = draw(st.sampled_from([None, "PyTorchJob", "Notebook", "Deployment"]))
            holder = None
            if kind is not None:
                notes = {"gpuwatch.io/checkpoint": "true", "gpuwatch.io/migrate-to-spot": "true",
                         "gpuwatch.io/reclaimable": "true", MODEL_PARAMS.key: "7B"}  # fmt: skip
                image = "vllm/vllm" if kind == "Deployment" else "app"
                holder = pod(f"w{k}x{i}", n.name, kind=kind, annotations=notes, image=image)
                pods.append(holder)
            ctx = gpu(n, i, model, pod=holder, workload=f"{kind}/ns/w{k}x{i}" if kind else None)
            contexts.append(ctx)
            if holder is not None and draw(st.booleans()):
                findings.append(idle(ctx))
    m = len(contexts)
    level = st.floats(0, 1, allow_nan=False)
    util = np.array(draw(st.lists(st.lists(level, min_size=width, max_size=width),
                                  min_size=m, max_size=m)))  # fmt: skip
    held = np.array([[1.0 if c.holders else 0.0] * width for c in contexts])
    use = HourlyUse(util, np.full((m, width), 0.2), held, width * 3600,
                    np.arange(1, width + 1, dtype=np.int64) * 3600)  # fmt: skip
    return contexts, use, pods, findings


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster=clusters(), floor=st.integers(0, 2))
def test_the_plan_never_banks_anything_twice(cluster, floor):
    contexts, use, pods, findings = cluster
    actions = {"pools": {"p0": {"floor": floor}, "p1": {"floor": floor}}}
    result, _ = plan(contexts, use, pods, findings=findings, actions=actions)
    the_book = book()
    spend = sum(
        (the_book.price(c.model, c.capacity_type)[0].per_gpu_hour * 720 for c in contexts),
        Decimal(0),
    )
    for total in totals(result.savings):
        members = [s for s in result.savings if s.currency == total.currency]
        # The items' net adds up to the total, to the cent; gross beside it.
        assert sum((s.net_monthly for s in members), Decimal(0)) == total.net_monthly
        # Never more than the cluster costs a month.
        assert total.net_monthly <= spend
    nodes_banked: list[str] = []
    for saving in result.savings:
        assert 0 <= saving.net_monthly <= saving.monthly
        if saving.blocked or not saving.cash:
            assert saving.net_monthly == 0
        nodes_banked.extend(saving.nodes if saving.net_monthly else ())
        # Cash never above what the GPUs and nodes it touches cost.
        touched = {u for u in saving.gpu_uuids} | {
            c.device.uuid for c in contexts if c.node_name in saving.nodes and c.device
        }
        if saving.kind != "reserved" and saving.net_monthly:
            worth = sum(
                (the_book.price(c.model, c.capacity_type)[0].per_gpu_hour * 720
                 for c in contexts if c.device and c.device.uuid in touched),
                Decimal(0),
            )  # fmt: skip
            assert saving.net_monthly <= worth + Decimal("0.01")
    assert len(nodes_banked) == len(set(nodes_banked))
    # No GPU is moved by two cash levers (spot and quantization) in one plan.
    moved = [u for s in result.savings if s.net_monthly and s.kind in ("spot", "quantization")
             for u in s.gpu_uuids]  # fmt: skip
    assert len(moved) == len(set(moved))


def test_savings_of_different_currencies_are_never_added():
    one = Saving("spot", {}, Decimal(10), "CNY", {}, "", (), HIGH, "", net_monthly=Decimal(10))
    two = Saving("spot", {}, Decimal(5), "USD", {}, "", (), HIGH, "", net_monthly=Decimal(5))
    assert [(t.currency, t.net_monthly) for t in totals([one, two])] == [
        ("CNY", Decimal(10)),
        ("USD", Decimal(5)),
    ]


def test_controllers_carry_the_checkpoint_for_their_pods():
    od, spot = node("od", gpus=8), node("sp", pool="spot", gpus=8, spot=True)
    job = Pod("ns", "llm-0", "od", "Running", {WHOLE_GPU_RESOURCE: 8},
              owner=OwnerRef("PyTorchJob", "llm"), images=("app",))  # fmt: skip
    owner = Controller("PyTorchJob", "ns", "llm",
                       annotations={"gpuwatch.io/checkpoint": "true"})  # fmt: skip
    contexts = [gpu(od, i, pod=job, workload="PyTorchJob/ns/llm") for i in range(8)]
    contexts += [gpu(spot, i) for i in range(8)]
    use = hours(16, **{f"g{i}": ([0.9] * 4, [1] * 4) for i in range(8)})
    _, by = plan(contexts, use, [job], [owner])
    saving = by[("spot", "PyTorchJob/ns/llm")]
    # Interval 1800 s assumed: (32 - 9.6) - 0.05 x (900 + 300)/3600 x 9.6 = 22.24 x 8 x 720
    assert saving.monthly == Decimal("128102.40") and saving.confidence == MEDIUM
    assert saving.blocked == "PyTorchJob/ns/llm did not opt in to moves"


def test_a_node_banked_by_a_cash_lever_counts_against_the_floor():
    """Alone, the lever takes the first idle node by name (n0, an A10: 7,560 a month).
    In the plan, quantization banks n0 first (its vLLM server onto a T4): n0 is as good
    as gone, and with a floor of one node nothing else may go. Counting the A100 n1
    instead would net 23,040 where the lever alone saves 7,560."""
    n0, n1 = node("n0", pool="p0", gpus=1), node("n1", pool="p0", gpus=1)
    busy_t4 = node("n2", pool="p1", gpus=1)  # a T4 in the cluster: quantization's target
    notes = {"gpuwatch.io/reclaimable": "true", MODEL_PARAMS.key: "7B"}
    server = pod("llm-0", "n0", kind="Deployment", annotations=notes, image="vllm/vllm")
    trainer = pod("train-0", "n2")
    contexts = [gpu(n0, 0, A10, pod=server, workload="Deployment/ns/llm-0"), gpu(n1, 0, A100),
                gpu(busy_t4, 0, T4, pod=trainer)]  # fmt: skip
    use = HourlyUse(np.array([[0.0], [0.0], [1.0]]), np.full((3, 1), 0.2),
                    np.array([[1.0], [0.0], [1.0]]), 3600, np.array([3600]))  # fmt: skip
    pools = {"pools": {"p0": {"floor": 1}, "p1": {"floor": 0}}}
    result, _ = plan(contexts, use, [server, trainer], actions=pools)
    by_kind = {(s.kind, s.scope.get("pool")): s for s in result.savings}
    assert by_kind[("quantization", "p0")].net_monthly == Decimal("3240.00")
    removal = by_kind[("remove_nodes", "p0")]
    assert removal.monthly == Decimal("7560.00")  # alone: n0, first by name
    assert removal.net_monthly == 0  # after quantization: n0 is gone, the floor holds
    assert removal.net_monthly <= removal.monthly


def test_a_node_whose_workload_was_quantized_away_is_not_removed_for_its_price_again():
    """Found by the property above: an idle, reclaimable vLLM server alone on an A10
    node. Quantizing it onto a T4 banks the A10's price less the T4's; removing the A10
    node afterwards would bank the A10's price a second time (net above the cluster's
    whole bill)."""
    n0, n1 = node("n0", pool="p0", gpus=1), node("n1", pool="p1", gpus=1)
    notes = {"gpuwatch.io/reclaimable": "true", MODEL_PARAMS.key: "7B"}
    server = pod("llm-0", "n0", kind="Deployment", annotations=notes, image="vllm/vllm")
    contexts = [gpu(n0, 0, A10, pod=server, workload="Deployment/ns/llm-0"), gpu(n1, 0, T4)]
    use = HourlyUse(np.zeros((2, 1)), np.full((2, 1), 0.2), np.array([[1.0], [0.0]]), 3600,
                    np.array([3600]))  # fmt: skip
    pools = {"pools": {"p0": {"floor": 0}, "p1": {"floor": 0}}}
    result, _ = plan(contexts, use, [server], actions=pools)
    by_kind = {(s.kind, s.scope.get("pool")): s for s in result.savings}
    quantized = by_kind[("quantization", "p0")]
    assert quantized.net_monthly == Decimal("3240.00")  # (10.50 - 6.00) x 720
    a10_node = by_kind[("remove_nodes", "p0")]
    assert a10_node.net_monthly == 0 and a10_node.counted_before
    assert by_kind[("remove_nodes", "p1")].net_monthly == Decimal("4320.00")  # the idle T4
    (total,) = totals(result.savings)
    # Either the server moves onto that T4 (the A10 goes: 7,560) or onto a new one (3,240
    # plus the idle T4's 4,320): the same money, once, under the bill of 11,880.
    assert total.net_monthly == Decimal("7560.00") <= (Decimal("10.50") + Decimal("6.00")) * 720
