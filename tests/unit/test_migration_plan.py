"""Checkpoint-and-migrate planning: who may move, where, and every refusal's reason."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.config.settings import ActionsSettings
from gpuwatch.model.actions import ActionStatus
from gpuwatch.model.cluster import ClusterState, Controller, Node, OwnerRef, Pod, Taint
from gpuwatch.model.findings import GpuHolder
from gpuwatch.model.savings import Saving
from gpuwatch.model.tenant import LAST_CHECKPOINT, MIGRATION_KEY
from gpuwatch.planners.freshness import Freshness
from gpuwatch.planners.migration import MigrationInputs, plan_migrations
from tests.builders import AT, device

A100 = "NVIDIA-A100-SXM4-80GB"
SPOT_TAINT = Taint("china.alibabacloud.com/spot", "true", "NoSchedule")


def gpu(i, node, pool, capacity, holder=None, model=A100):
    holders = (GpuHolder("llm", holder, "PyTorchJob/llm/pretrain", "llm"),) if holder else ()
    return GpuContext(node.name, device(i, node=node.name), node, pool, capacity, model, holders)


def scenario(
    spot_free=8,
    spot_model=A100,
    checkpoint_age_min=3.0,
    opted=True,
    monthly="50000",
    job="pretrain",
    extra=None,
    pods=(),
):
    od = Node("od-1", {"pool": "gpu-training"})
    spot = Node("spot-1", {"pool": "gpu-spot"}, taints=(SPOT_TAINT,))
    contexts = [gpu(i, od, "gpu-training", "on-demand", f"{job}-0") for i in range(8)]
    contexts += [
        gpu(i, spot, "gpu-spot", "spot", None if i < spot_free else "other", spot_model)
        for i in range(8)
    ]
    annotations = {"gpuwatch.io/migrate-to-spot": "true"} if opted else {}
    checkpoint = AT - timedelta(minutes=checkpoint_age_min)
    annotations[LAST_CHECKPOINT.key] = checkpoint.isoformat()
    annotations.update(extra or {})
    cluster = ClusterState(
        AT,
        (od, spot),
        tuple(pods),
        (Controller("PyTorchJob", "llm", job, annotations=annotations),),
    )
    saving = Saving(
        "spot",
        {"workload": f"PyTorchJob/llm/{job}"},
        Decimal(monthly),
        "CNY",
        {"gpus": 8.0},
        "",
        (),
        "high",
        "",
        gpu_uuids=tuple(c.device.uuid for c in contexts[:8]),
    )
    return contexts, cluster, saving


def live(contexts, clock=AT, newest=AT):
    """Data read at ``clock``, every GPU last sampled at ``newest``."""
    newest_s = {c.device.device_id: newest.timestamp() for c in contexts if c.device}
    return Freshness(AT, clock, 300, 120, newest_s)


def plan(contexts, cluster, saving, dry_run=True, kill=False, metric=None, fresh=None, **migration):
    settings = ActionsSettings.model_validate({"migration": migration})
    savings = saving if isinstance(saving, list) else [saving]
    times = {s.scope["workload"]: metric for s in savings} if metric else {}
    return plan_migrations(
        MigrationInputs(
            AT, savings, contexts, cluster, settings, "pool", dry_run, kill, times,
            freshness=fresh if fresh is not None else live(contexts),
        )
    )  # fmt: skip


def test_opted_in_job_with_fresh_checkpoint_is_planned():
    (action,) = plan(*scenario())
    assert action.status is ActionStatus.PLANNED and action.target == "PyTorchJob/llm/pretrain"
    assert action.pool == "gpu-spot"
    assert action.details["node_selector"] == {"pool": "gpu-spot"}
    assert action.details["tolerations"] == [
        {"key": "china.alibabacloud.com/spot", "operator": "Exists", "effect": "NoSchedule"}
    ]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"checkpoint_age_min": 16}, "16m old (limit 15m)"),
        ({"monthly": "999.99"}, "below 1000"),
        ({"spot_free": 7}, "room for 7 of 8 GPUs"),
        ({"spot_model": "Tesla T4"}, "no spot pool"),
    ],
)
def test_refusals(kwargs, reason):
    (action,) = plan(*scenario(**kwargs))
    assert action.status is ActionStatus.REFUSED and reason in action.reason


def test_jobs_that_did_not_opt_in_are_left_alone():
    assert plan(*scenario(opted=False)) == []


def test_writes_need_the_kill_switch():
    (action,) = plan(*scenario(), dry_run=False, kill=False)
    assert "kill switch" in action.reason
    (action,) = plan(*scenario(), dry_run=False, kill=True)
    assert action.status is ActionStatus.PLANNED and not action.dry_run


def test_the_jobs_metric_wins_over_its_annotation():
    # The annotation says 3 minutes, the job's own metric says 20: the metric is the truth.
    (action,) = plan(*scenario(), metric=AT - timedelta(minutes=20))
    assert action.status is ActionStatus.REFUSED and "20m old" in action.reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1e300", "unreadable checkpoint time"),
        ("banana", "unreadable checkpoint time"),
        ("nan", "unreadable checkpoint time"),
        ((AT + timedelta(hours=1)).isoformat(), "in the future"),
    ],
)
def test_a_tenants_checkpoint_time_never_breaks_the_plan(value, reason):
    (action,) = plan(*scenario(extra={LAST_CHECKPOINT.key: value}))
    assert action.status is ActionStatus.REFUSED and reason in action.reason


def test_an_opt_in_that_is_not_true_is_no_opt_in():
    assert plan(*scenario(opted=False, extra={"gpuwatch.io/migrate-to-spot": "yes"})) == []


def _pod(name, **annotations):
    owner = OwnerRef("PyTorchJob", "pretrain")
    return Pod("llm", name, "od-1", "Running", {}, annotations=annotations, owner=owner)


@pytest.mark.parametrize(
    "annotations",
    [
        {"karpenter.sh/do-not-disrupt": "true"},
        {"karpenter.sh/do-not-disrupt": "yes"},  # unreadable: protects
        {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
    ],
)
def test_pods_protected_from_eviction_keep_the_job_where_it_is(annotations):
    (action,) = plan(*scenario(pods=[_pod("pretrain-0", **annotations)]))
    assert action.status is ActionStatus.REFUSED
    assert "pod llm/pretrain-0" in action.reason


def test_moves_have_a_budget_and_moves_in_progress_count():
    contexts, cluster, saving = scenario()
    (action,) = plan(contexts, cluster, saving, max_per_cycle=0)
    assert "budget: at most 0 jobs" in action.reason
    moving = Controller("PyTorchJob", "llm", "other", annotations={MIGRATION_KEY.key: "k"})
    busy = ClusterState(AT, cluster.nodes, cluster.pods, (*cluster.controllers, moving))
    (action,) = plan(contexts, busy, saving)
    assert "1 in progress or planned" in action.reason


def test_a_job_being_moved_is_left_to_the_follow_up():
    assert plan(*scenario(extra={MIGRATION_KEY.key: "migrate_to_spot:PyTorchJob/llm/x"})) == []


def test_spot_room_planned_for_one_job_is_not_offered_to_the_next():
    a_ctx, a_cluster, a = scenario(spot_free=8, job="a")
    b_ctx, b_cluster, b = scenario(spot_free=8, job="b")
    # Both jobs want 8 GPUs of the one spot pool, which has 8 free.
    contexts = a_ctx[:8] + b_ctx[:8] + a_ctx[8:]
    cluster = ClusterState(
        AT, a_cluster.nodes, (), (*a_cluster.controllers, *b_cluster.controllers)
    )
    first, second = plan(contexts, cluster, [a, b], max_per_cycle=2)
    assert first.status is ActionStatus.PLANNED
    assert second.status is ActionStatus.REFUSED and "room for 0 of 8" in second.reason


def test_writes_need_live_data():
    contexts, cluster, saving = scenario()
    old = live(contexts, clock=AT + timedelta(days=10))
    (action,) = plan(contexts, cluster, saving, dry_run=False, kill=True, fresh=old)
    assert action.status is ActionStatus.REFUSED and "stale data" in action.reason
    stale = live(contexts, newest=AT - timedelta(minutes=10))
    (action,) = plan(contexts, cluster, saving, dry_run=False, kill=True, fresh=stale)
    assert "stale metrics" in action.reason and "10m old" in action.reason
    # A dry run shows the plan as it would be on live data.
    (action,) = plan(contexts, cluster, saving, dry_run=True, fresh=old)
    assert action.status is ActionStatus.PLANNED
