"""The scale-down planner's guards, one by one, and budget and floor over many cycles."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.config.settings import ActionsSettings, MaintenanceWindow
from gpuwatch.model.actions import ActionStatus
from gpuwatch.model.cluster import WHOLE_GPU_RESOURCE, ClusterState, Node, OwnerRef, Pod
from gpuwatch.model.findings import Finding, GpuHolder, Role, Severity
from gpuwatch.model.tenant import ACTION_KEY, ACTION_PHASE
from gpuwatch.model.tenant import DO_NOT_DISRUPT as _DND
from gpuwatch.model.tenant import SAFE_TO_EVICT as _STE
from gpuwatch.model.tenant import SCALE_DOWN_DISABLED as _SDD
from gpuwatch.planners.freshness import Freshness
from gpuwatch.planners.scale_down import ScaleDownInputs, in_window, plan_scale_down
from tests.builders import AT, device

POOL = "gpu-training"
DO_NOT_DISRUPT, SAFE_TO_EVICT, SCALE_DOWN_DISABLED = _DND.key, _STE.key, _SDD.key


def node(name, annotations=None, created=None, gpus=2):
    return Node(
        name,
        {"pool": POOL},
        capacity={WHOLE_GPU_RESOURCE: float(gpus)},
        annotations=annotations or {},
        created_at=created,
    )


def ctx(n, i, pod=None):
    holders = (GpuHolder("ns", pod, "Notebook/ns/x", "t"),) if pod else ()
    return GpuContext(
        n.name,
        device(i, node=n.name),
        n,
        POOL,
        "on-demand",
        "A100",
        holders,
        "exact" if pod else "none",
    )


ROLES = {"gpu-idle": Role.IDLE, "gpu-unallocated": Role.UNALLOCATED, "data-gap": Role.DATA_GAP}


def finding(rule, c):
    return Finding(
        rule,
        Severity.WARNING,
        c.device.uuid,
        c.node_name,
        POOL,
        0.0,
        None,
        1800,
        AT,
        "",
        role=ROLES[rule],
    )


def live(contexts, clock=AT, newest=AT):
    newest_s = {c.device.device_id: newest.timestamp() for c in contexts if c.device}
    return Freshness(AT, clock, 300, 120, newest_s)


def plan(
    nodes, pods=(), extra_findings=(), busy=(), dry_run=True, kill=False, fresh=None, **actions
):
    """Every GPU of every node unallocated (or held by ``pods`` per ``node/gpu`` name) and
    idle, unless its node is in ``busy``."""
    contexts, findings = [], list(extra_findings)
    holders = {
        (p.node_name, int(p.name.rsplit("-", 1)[1])): p.name
        for p in pods
        if p.node_name and WHOLE_GPU_RESOURCE in p.requests
    }
    for n in nodes:
        for i in range(int(n.capacity[WHOLE_GPU_RESOURCE])):
            c = ctx(n, i, holders.get((n.name, i)))
            contexts.append(c)
            if n.name not in busy:
                findings.append(finding("gpu-idle" if c.holders else "gpu-unallocated", c))
    settings_ = ActionsSettings.model_validate(
        {"pools": {POOL: actions.pop("policy", {})}, **actions}
    )
    return plan_scale_down(
        ScaleDownInputs(
            AT,
            contexts,
            ClusterState(AT, tuple(nodes), tuple(pods)),
            findings,
            settings_,
            dry_run,
            kill,
            fresh(contexts) if fresh else live(contexts),
        )
    )


STATEFULSET = OwnerRef("StatefulSet", "x")


def gpu_pod(name, node_name, annotations=None, owner=STATEFULSET, **kw):
    return Pod(
        "ns",
        name,
        node_name,
        "Running",
        {WHOLE_GPU_RESOURCE: 1},
        annotations=annotations or {},
        owner=owner,
        **kw,
    )


def statuses(actions):
    return {a.target: (a.status, a.reason) for a in actions}


def test_empty_node_is_planned_in_dry_run():
    (action,) = plan([node("a"), node("b"), node("c")], busy={"b", "c"})
    assert (action.status, action.target, action.dry_run) == (ActionStatus.PLANNED, "Node/a", True)
    assert action.key == "scale_down_node:a" and action.mechanism == "cordon-drain"


def test_busy_gpu_means_no_candidate():
    assert plan([node("a"), node("b")], busy={"a", "b"}) == []


def test_idle_pod_that_opted_in_is_evicted_others_block():
    nodes = [node("a"), node("b"), node("c")]
    pods = [
        gpu_pod("nb-0", "a", {"gpuwatch.io/reclaimable": "true"}),
        gpu_pod("srv-0", "b"),
    ]
    result = statuses(plan(nodes, pods, busy={"c"}))
    assert result["Node/a"][0] is ActionStatus.PLANNED
    assert result["Node/b"] == (
        ActionStatus.REFUSED,
        "pod ns/srv-0 holds GPUs and is not annotated gpuwatch.io/reclaimable",
    )


@pytest.mark.parametrize(
    ("pod_kw", "node_annotations", "reason"),
    [
        ({"annotations": {SAFE_TO_EVICT: "false"}}, {}, "safe-to-evict"),
        ({"annotations": {DO_NOT_DISRUPT: "true"}}, {}, "do-not-disrupt"),
        ({"owner": None}, {}, "bare pod"),
        ({"local_storage": True}, {}, "local storage"),
        ({}, {SCALE_DOWN_DISABLED: "true"}, "scale-down-disabled"),
        ({}, {DO_NOT_DISRUPT: "true"}, "do-not-disrupt"),
    ],
)
def test_opt_outs(pod_kw, node_annotations, reason):
    helper = Pod(
        "ns",
        "agent-0",
        "a",
        "Running",
        {"cpu": 1.0},
        owner=pod_kw.pop("owner", OwnerRef("Deployment", "agent")),
        **pod_kw,
    )
    nodes = [node("a", node_annotations), node("b"), node("c")]
    result = statuses(plan(nodes, [helper], busy={"b", "c"}))
    assert result["Node/a"][0] is ActionStatus.REFUSED and reason in result["Node/a"][1]


def test_daemonset_and_safe_local_storage_do_not_block():
    pods = [
        Pod("ns", "exporter", "a", "Running", owner=OwnerRef("DaemonSet", "dcgm")),
        Pod(
            "ns",
            "cache",
            "a",
            "Running",
            owner=OwnerRef("ReplicaSet", "c"),
            local_storage=True,
            annotations={SAFE_TO_EVICT: "true"},
        ),
    ]
    actions = plan([node("a"), node("b"), node("c")], pods, busy={"b", "c"})
    assert [(a.status, a.details["evict"]) for a in actions] == [
        (ActionStatus.PLANNED, ["ns/cache"])
    ]


def test_budget_floor_and_one_non_empty_node():
    nodes = [node(f"n{i}") for i in range(10)]
    result = plan(nodes, policy={"budget_percent": 20, "floor": 9})
    assert [a.status for a in result].count(ActionStatus.PLANNED) == 1  # floor 9 of 10
    result = plan(nodes, policy={"budget_percent": 20, "floor": 0})
    assert [a.status for a in result].count(ActionStatus.PLANNED) == 2  # 20 % of 10
    assert any("budget" in a.reason for a in result)
    opted = [
        gpu_pod(f"nb-{i}", f"n{k}", {"gpuwatch.io/reclaimable": "true"})
        for k in (0, 1)
        for i in (0,)
    ]
    result = statuses(
        plan([*nodes[:2], node("z")], opted, busy={"z"}, policy={"budget_percent": 100, "floor": 0})
    )
    assert sorted(s for s, _ in result.values()) == [ActionStatus.PLANNED, ActionStatus.REFUSED]
    assert "one non-empty node at a time" in next(
        r for s, r in result.values() if r.startswith("one")
    )


def test_cooldown_pending_pods_and_data_gaps():
    grew = [node("a"), node("b", created=AT - timedelta(minutes=10))]
    (action,) = plan(grew, busy={"b"})
    assert "cooldown" in action.reason
    waiting = Pod("ns", "w", None, "Pending", {WHOLE_GPU_RESOURCE: 8}, node_selector={"pool": POOL})
    (action,) = plan([node("a"), node("b")], [waiting], busy={"b"})
    assert "pending" in action.reason
    elsewhere = Pod(
        "ns", "w", None, "Pending", {WHOLE_GPU_RESOURCE: 8}, node_selector={"pool": "gpu-spot"}
    )
    (action,) = plan([node("a"), node("b")], [elsewhere], busy={"b"})
    assert action.status is ActionStatus.PLANNED
    gap = Finding(
        "data-gap", Severity.INFO, None, "a", POOL, 0.5, 0.9, 1800, AT, "", role=Role.DATA_GAP
    )
    (action,) = plan([node("a"), node("b")], extra_findings=[gap], busy={"b"})
    assert "data gap" in action.reason


def test_writes_need_the_kill_switch():
    (action,) = plan([node("a"), node("b")], busy={"b"}, dry_run=False, kill=False)
    assert action.status is ActionStatus.REFUSED and "kill switch" in action.reason
    (action,) = plan([node("a"), node("b")], busy={"b"}, dry_run=False, kill=True)
    assert action.status is ActionStatus.PLANNED and not action.dry_run


def test_only_allowlisted_pools():
    contexts = [ctx(node("a"), 0)]
    inputs = ScaleDownInputs(
        AT,
        contexts,
        ClusterState(AT, (node("a"),)),
        [finding("gpu-unallocated", contexts[0])],
        ActionsSettings(),
        True,
        False,
    )
    assert plan_scale_down(inputs) == []


@pytest.mark.parametrize(
    ("hour", "weekday", "inside"),
    [(21, 0, True), (7, 1, True), (7, 0, False), (12, 2, False), (21, 5, False)],
)
def test_maintenance_window_past_midnight(hour, weekday, inside):
    window = MaintenanceWindow(
        days=["mon", "tue"], start="20:00", end="08:00", timezone="Asia/Shanghai"
    )
    # 2026-11-23 is a Monday.
    local = datetime(2026, 11, 23 + weekday, hour, 30)
    at = (local - timedelta(hours=8)).replace(tzinfo=UTC)
    assert in_window(window, at) is inside


@settings(max_examples=60, deadline=None)
@given(
    cycles=st.lists(st.sets(st.integers(0, 19), max_size=20), min_size=1, max_size=8),
    floor=st.integers(0, 20),
    budget=st.sampled_from([5, 10, 25, 50, 100]),
)
def test_budget_and_floor_hold_over_random_cycles(cycles, floor, budget):
    alive = {f"n{i}" for i in range(20)}
    for busy in cycles:
        nodes = [node(name) for name in sorted(alive)]
        planned = [
            a.target.split("/")[1]
            for a in plan(
                nodes,
                busy={f"n{i}" for i in busy},
                policy={"floor": floor, "budget_percent": budget},
            )
            if a.status is ActionStatus.PLANNED
        ]
        assert len(planned) <= max(1, len(nodes) * budget // 100)
        alive -= set(planned)
        assert len(alive) >= min(floor, 20) or not planned
        assert len(alive) >= floor or len(alive) == len(nodes)


def test_rules_are_found_by_role_not_by_id():
    """Renamed rules (same roles) plan the same; the same ids without roles plan nothing."""
    renamed = {"gpu-idle": "notebook-asleep", "gpu-unallocated": "nobody-home"}
    planned = plan([node("a"), node("b")], busy={"b"})
    contexts = [ctx(node("a"), i, None) for i in range(8)]
    findings = [
        replace(finding("gpu-unallocated", c), rule=renamed["gpu-unallocated"]) for c in contexts
    ]
    again = plan_scale_down(
        ScaleDownInputs(
            AT,
            contexts + [ctx(node("b"), i, None) for i in range(8)],
            ClusterState(AT, (node("a"), node("b"))),
            findings,
            ActionsSettings.model_validate({"pools": {POOL: {}}}),
            dry_run=True,
            kill_switch_on=False,
        )
    )
    assert [a.target for a in again] == [a.target for a in planned] == ["Node/a"]
    roleless = [replace(f, role=None) for f in findings]
    nothing = plan_scale_down(
        ScaleDownInputs(
            AT,
            contexts,
            ClusterState(AT, (node("a"),)),
            roleless,
            ActionsSettings.model_validate({"pools": {POOL: {}}}),
            dry_run=True,
            kill_switch_on=False,
        )
    )
    assert nothing == []


def cordoned(name, phase=None, ours=True):
    """A node cordoned by gpuwatch in an earlier cycle (``phase`` recorded), or by
    someone else."""
    annotations = {ACTION_KEY.key: f"scale_down_node:{name}"} if ours else {}
    if phase:
        annotations[ACTION_PHASE.key] = phase
    return replace(node(name, annotations), unschedulable=True)


def test_nodes_on_their_way_out_count_against_the_budget():
    # 20 nodes, budget 10 % = 2, two already cordoned: nothing more this cycle.
    free = [node(f"n{i:02}") for i in range(18)]
    for leaving in ([cordoned("x0", ours=False), cordoned("x1", ours=False)],
                    [cordoned("x0", "done"), cordoned("x1", "done")]):  # fmt: skip
        result = plan(free + leaving, policy={"budget_percent": 10, "floor": 0})
        assert [a.status for a in result].count(ActionStatus.PLANNED) == 0
        assert all("2 already cordoned" in a.reason for a in result)
    # One of them cordoned: one more.
    result = plan([*free, node("x0"), cordoned("x1", ours=False)], policy={"budget_percent": 10})
    assert [a.status for a in result].count(ActionStatus.PLANNED) == 1


@pytest.mark.parametrize("phase", ["draining", "drained", "removing", None])
def test_a_node_in_flight_is_resumed_never_planned_anew(phase):
    (action,) = plan([cordoned("a", phase), node("b")], busy={"b"})
    assert action.status is ActionStatus.PLANNED and action.details["resume"] is True
    assert "resuming" in action.reason and "rollback" not in action.details


def test_a_node_done_is_left_alone_and_a_foreign_cordon_is_not_touched():
    assert plan([cordoned("a", "done"), node("b")], busy={"b"}) == []
    assert plan([cordoned("a", ours=False), node("b")], busy={"b"}) == []


def test_a_drain_blocked_since_it_started_is_rolled_back():
    blocker = Pod("ns", "p", "a", "Running", {"cpu": 1.0}, owner=None)
    (action,) = plan([cordoned("a", "draining"), node("b")], [blocker], busy={"b"})
    assert action.details["rollback"] is True and "bare pod" in action.reason
    # Once drained, what is left is the node's removal: no rollback.
    (action,) = plan([cordoned("a", "drained"), node("b")], [blocker], busy={"b"})
    assert "rollback" not in action.details


@pytest.mark.parametrize("value", ["yes", "1", ""])
def test_an_unreadable_protection_protects(value):
    nodes = [node("a", {DO_NOT_DISRUPT: value}), node("b"), node("c")]
    result = statuses(plan(nodes, busy={"b", "c"}))
    assert result["Node/a"][0] is ActionStatus.REFUSED


def test_writes_need_live_data():
    nodes = [node("a"), node("b")]
    ten_days = lambda c: live(c, clock=AT + timedelta(days=10))  # noqa: E731
    (action,) = plan(nodes, busy={"b"}, dry_run=False, kill=True, fresh=ten_days)
    assert action.status is ActionStatus.REFUSED and "10d" in action.reason
    stale = lambda c: live(c, newest=AT - timedelta(minutes=3))  # noqa: E731
    (action,) = plan(nodes, busy={"b"}, dry_run=False, kill=True, fresh=stale)
    assert "stale metrics" in action.reason
    fresh = lambda c: live(c, newest=AT - timedelta(seconds=119))  # noqa: E731
    (action,) = plan(nodes, busy={"b"}, dry_run=False, kill=True, fresh=fresh)
    assert action.status is ActionStatus.PLANNED
