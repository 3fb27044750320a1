"""Checkpoint-and-migrate planning: who may move, where, and every refusal's reason."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.config.settings import ActionsSettings
from gpuwatch.model.actions import ActionStatus
from gpuwatch.model.cluster import ClusterState, Controller, Node, Taint
from gpuwatch.model.cost import Saving
from gpuwatch.model.findings import GpuHolder
from gpuwatch.planners.migration import (
    LAST_CHECKPOINT_ANNOTATION,
    MigrationInputs,
    plan_migrations,
)
from tests.builders import AT, device

A100 = "NVIDIA-A100-SXM4-80GB"
SPOT_TAINT = Taint("china.alibabacloud.com/spot", "true", "NoSchedule")


def gpu(i, node, pool, capacity, holder=None, model=A100):
    holders = (GpuHolder("llm", holder, "PyTorchJob/llm/pretrain", "llm"),) if holder else ()
    return GpuContext(node.name, device(i, node=node.name), node, pool, capacity, model, holders)


def scenario(spot_free=8, spot_model=A100, checkpoint_age_min=3.0, opted=True, monthly="50000"):
    od = Node("od-1", {"pool": "gpu-training"})
    spot = Node("spot-1", {"pool": "gpu-spot"}, taints=(SPOT_TAINT,))
    contexts = [gpu(i, od, "gpu-training", "on-demand", "pretrain-0") for i in range(8)]
    contexts += [
        gpu(i, spot, "gpu-spot", "spot", None if i < spot_free else "other", spot_model)
        for i in range(8)
    ]
    annotations = {"gpuwatch.io/migrate-to-spot": "true"} if opted else {}
    checkpoint = AT - timedelta(minutes=checkpoint_age_min)
    annotations[LAST_CHECKPOINT_ANNOTATION] = checkpoint.isoformat()
    cluster = ClusterState(
        AT, (od, spot), (), (Controller("PyTorchJob", "llm", "pretrain", annotations=annotations),)
    )
    saving = Saving(
        "spot",
        {"workload": "PyTorchJob/llm/pretrain"},
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


def plan(contexts, cluster, saving, dry_run=True, kill=False, metric=None, **migration):
    settings = ActionsSettings.model_validate({"migration": migration})
    times = {"PyTorchJob/llm/pretrain": metric} if metric else {}
    return plan_migrations(
        MigrationInputs(AT, [saving], contexts, cluster, settings, "pool", dry_run, kill, times)
    )


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
