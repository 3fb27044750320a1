"""Cordon-and-drain against the emulated API server, through the real client."""

from __future__ import annotations

import pytest

from gpuwatch.actuators.drain import ACTION_KEY_ANNOTATION, DELETE_MACHINE_ANNOTATION, DrainOptions
from gpuwatch.actuators.kubernetes import KubernetesActuator
from gpuwatch.model.actions import Action, ActionStatus
from gpuwatch.model.tenant import ACTION_PHASE, REPLICAS_BEFORE
from tests.builders import FakeClock
from tests.integration.kube_emulator.resources import CLUSTER_API_RESOURCES, KARPENTER_RESOURCES

pytestmark = pytest.mark.integration


def node(name: str = "gpu-1", unschedulable: bool = False, annotations=None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"pool": "gpu-training"},
            "annotations": annotations or {},
        },
        "spec": {"unschedulable": unschedulable},
        "status": {"capacity": {"nvidia.com/gpu": "8"}},
    }


def pod(name: str, node_name: str = "gpu-1") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "research",
            "labels": {"app": "nb"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "StatefulSet",
                    "name": name,
                    "uid": "u",
                    "controller": True,
                }
            ],
        },
        "spec": {"nodeName": node_name, "containers": [{"name": "main", "image": "jupyter"}]},
        "status": {"phase": "Running"},
    }


def planned(*evict: str, node_name: str = "gpu-1") -> Action:
    return Action(
        kind="scale_down_node",
        target=f"Node/{node_name}",
        status=ActionStatus.PLANNED,
        reason="6 of 8 GPUs unallocated",
        key=f"scale_down_node:{node_name}",
        dry_run=False,
        pool="gpu-training",
        mechanism="cordon-drain",
        details={"evict": [f"research/{p}" for p in evict]},
    )


@pytest.fixture
def cluster(kube_emulator):
    kube_emulator.add_all([node(), pod("alice-0"), pod("bob-0")])
    clock = FakeClock()
    actuator = KubernetesActuator(
        kube_emulator.kube_api(sleep=clock.sleep, monotonic=clock.monotonic),
        DrainOptions(eviction_deadline_s=60, backoff_initial_s=1, backoff_max_s=8),
    )
    return kube_emulator, actuator, clock


def _node(emulator) -> dict:
    return emulator.get("v1", "Node", "gpu-1")


def test_budget_refuses_then_allows(cluster):
    emulator, actuator, clock = cluster
    emulator.refuse_evictions(2, pod="alice-0")
    done = actuator.apply(planned("alice-0", "bob-0"))
    assert done.status is ActionStatus.DONE, done.reason
    # two 429s, backed off exponentially with jitter: each wait in [base/2, base]
    assert len(clock.sleeps) == 2
    assert 0.5 <= clock.sleeps[0] <= 1 and 1 <= clock.sleeps[1] <= 2
    assert _node(emulator)["spec"]["unschedulable"] is True
    assert _node(emulator)["metadata"]["annotations"][ACTION_KEY_ANNOTATION] == done.key
    assert emulator.objects("v1", "Pod") == []
    assert not emulator.deletes("pods")  # evicted, never deleted
    assert [e["reason"] for e in emulator.events_for("gpu-1", kind="Node")] == ["ScaleDown"]


def test_budget_that_never_allows_uncordons_at_the_deadline(cluster):
    emulator, actuator, clock = cluster
    emulator.refuse_evictions(1000, pod="bob-0")
    failed = actuator.apply(planned("alice-0", "bob-0"))
    assert failed.status is ActionStatus.FAILED and "uncordoned" in failed.reason
    assert clock.t <= 60
    assert _node(emulator)["spec"]["unschedulable"] is False
    assert ACTION_KEY_ANNOTATION not in (_node(emulator)["metadata"].get("annotations") or {})
    assert [p["metadata"]["name"] for p in emulator.objects("v1", "Pod")] == ["bob-0"]
    assert not emulator.deletes("pods")
    assert emulator.events_for("gpu-1", kind="Node")[-1]["reason"] == "ScaleDownFailed"


def test_a_failed_eviction_rolls_the_drain_back(cluster):
    """A 500 on the second eviction: the node is uncordoned and unmarked, and the outcome
    says which pod was already evicted."""
    emulator, actuator, _ = cluster
    eviction = emulator.path("v1", "Pod", "bob-0", "research", "eviction")
    emulator.fail_next(eviction, 500, times=10, method="POST")  # past every retry
    failed = actuator.apply(planned("alice-0", "bob-0"))
    assert failed.status is ActionStatus.FAILED
    assert "evicting research/bob-0 failed" in failed.reason and "uncordoned" in failed.reason
    assert failed.details["evicted"] == ["research/alice-0"]
    assert _node(emulator)["spec"]["unschedulable"] is False
    assert not {ACTION_KEY_ANNOTATION, ACTION_PHASE.key} & set(
        _node(emulator)["metadata"].get("annotations") or {}
    )
    # The next cycle plans it afresh (the planner sees a schedulable node) and converges.
    again = actuator.apply(planned("bob-0"))
    assert again.status is ActionStatus.DONE and emulator.objects("v1", "Pod") == []


def test_a_drain_killed_mid_way_is_resumed_from_its_phase(kube_emulator):
    """The process died after cordoning (phase draining recorded): the resume evicts
    what is left and finishes; a node marked done is never touched again."""
    marks = {ACTION_KEY_ANNOTATION: "scale_down_node:gpu-1", ACTION_PHASE.key: "draining"}
    kube_emulator.add_all([node(unschedulable=True, annotations=marks), pod("bob-0")])
    actuator = KubernetesActuator(kube_emulator.kube_api())
    resumed = Action(**{**planned("bob-0").__dict__, "details": {"evict": ["research/bob-0"],
                                                               "resume": True}})  # fmt: skip
    assert actuator.apply(resumed).status is ActionStatus.DONE
    assert _node(kube_emulator)["metadata"]["annotations"][ACTION_PHASE.key] == "done"
    before = len(kube_emulator.writes())
    again = actuator.apply(resumed)
    assert again.status is ActionStatus.DONE and "already done" in again.reason
    assert [r.plural for r in kube_emulator.writes()[before:]] == ["events"]


def test_node_cordoned_by_someone_else_is_left_alone(kube_emulator):
    kube_emulator.add_all([node(unschedulable=True), pod("alice-0")])
    actuator = KubernetesActuator(kube_emulator.kube_api())
    refused = actuator.apply(planned("alice-0"))
    assert refused.status is ActionStatus.REFUSED and "someone else" in refused.reason
    assert not kube_emulator.requests_where(subresource="eviction")


def test_missing_rbac_names_the_verbs(cluster):
    emulator, actuator, _ = cluster
    emulator.deny("create", "pods/eviction")
    failed = actuator.apply(planned("alice-0"))
    assert failed.status is ActionStatus.FAILED
    assert "403 Forbidden" in failed.reason and "verb create on pods/eviction" in failed.reason


def test_refusals_become_events_and_dry_runs_write_nothing(cluster):
    emulator, actuator, _ = cluster
    refused = Action(
        "scale_down_node",
        "Node/gpu-1",
        ActionStatus.REFUSED,
        "floor: gpu-training keeps at least 1 nodes",
        "k",
        dry_run=False,
    )
    actuator.apply(refused)
    (event,) = emulator.events_for("gpu-1", kind="Node")
    assert event["reason"] == "ScaleDownRefused" and "floor" in event["message"]
    dry = Action(
        "scale_down_node",
        "Node/gpu-1",
        ActionStatus.PLANNED,
        "",
        "k",
        dry_run=True,
        mechanism="cordon-drain",
    )
    before = len(emulator.writes())
    assert actuator.apply(dry) is dry and len(emulator.writes()) == before


def _switch(emulator, data) -> None:
    emulator.add(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "gpuwatch-actions", "namespace": "gpuwatch"},
            "data": data,
        }
    )


@pytest.mark.parametrize(
    ("data", "on", "noted"),
    [
        (None, False, False),  # no ConfigMap: off, as shipped
        ({"enabled": "true"}, True, False),
        ({"enabled": " TRUE\n"}, True, False),
        ({"enabled": "false"}, False, False),
        ({"other": "true"}, False, False),
        ({"enabled": "yes"}, False, True),
        ({"enabled": "1"}, False, True),
    ],
)
def test_kill_switch(kube_emulator, data, on, noted):
    actuator = KubernetesActuator(kube_emulator.kube_api())
    if data is not None:
        _switch(kube_emulator, data)
    switch = actuator.kill_switch("gpuwatch/gpuwatch-actions/enabled")
    assert switch.on is on and (switch.note is not None) is noted
    if noted:
        assert "not true or false: writes are off" in switch.note


def test_an_unreadable_kill_switch_is_off_and_says_why(kube_emulator):
    kube_emulator.deny("get", "configmaps")
    switch = KubernetesActuator(kube_emulator.kube_api()).kill_switch("gpuwatch/x/enabled")
    assert switch.on is False and "403" in (switch.note or "")


def capi_objects() -> list[dict]:
    machine = {
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "Machine",
        "metadata": {
            "name": "gpu-md-abc12",
            "namespace": "capi",
            "labels": {"cluster.x-k8s.io/deployment-name": "gpu-md"},
        },
        "spec": {"clusterName": "prod"},
        "status": {"nodeRef": {"kind": "Node", "name": "gpu-1"}},
    }
    deployment = {
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "MachineDeployment",
        "metadata": {"name": "gpu-md", "namespace": "capi"},
        "spec": {"clusterName": "prod", "replicas": 3},
    }
    return [machine, deployment]


def capi_action() -> Action:
    base = planned("alice-0")
    return Action(
        **{
            **base.__dict__,
            "mechanism": "cluster-api",
            "details": {**base.details, "machine_deployment": "capi/gpu-md"},
        }
    )


def test_cluster_api_marks_the_machine_before_scaling(cluster):
    emulator, actuator, _ = cluster
    emulator.install(*CLUSTER_API_RESOURCES)
    emulator.add_all(capi_objects())
    done = actuator.apply(capi_action())
    assert done.status is ActionStatus.DONE, done.reason
    machine = emulator.get("cluster.x-k8s.io/v1beta1", "Machine", "gpu-md-abc12", "capi")
    assert machine["metadata"]["annotations"][DELETE_MACHINE_ANNOTATION] == "yes"
    md = emulator.get("cluster.x-k8s.io/v1beta1", "MachineDeployment", "gpu-md", "capi")
    assert md["spec"]["replicas"] == 2
    writes = [(r.plural, r.subresource) for r in emulator.writes() if r.group == "cluster.x-k8s.io"]
    # Marked (with the count before) first, then lowered, then the lowering recorded.
    assert writes == [("machines", None), ("machinedeployments", "scale"), ("machines", None)]
    assert machine["metadata"]["annotations"][REPLICAS_BEFORE.key] == "3"


def test_cluster_api_lowers_the_machine_deployment_once_however_often_it_is_applied(cluster):
    emulator, actuator, _ = cluster
    emulator.install(*CLUSTER_API_RESOURCES)
    emulator.add_all(capi_objects())
    assert actuator.apply(capi_action()).status is ActionStatus.DONE
    again = actuator.apply(capi_action())
    assert again.status is ActionStatus.DONE and "already done" in again.reason
    md = emulator.get("cluster.x-k8s.io/v1beta1", "MachineDeployment", "gpu-md", "capi")
    assert md["spec"]["replicas"] == 2
    assert len(emulator.requests_where(verb="patch", subresource="scale")) == 1


def test_cluster_api_resumed_after_lowering_does_not_lower_again(cluster):
    """Killed between the scale call and recording it: the count before, recorded on the
    Machine first, shows the lowering happened."""
    emulator, actuator, _ = cluster
    emulator.install(*CLUSTER_API_RESOURCES)
    machine, deployment = capi_objects()
    machine["metadata"]["annotations"] = {
        DELETE_MACHINE_ANNOTATION: "yes",
        ACTION_KEY_ANNOTATION: "scale_down_node:gpu-1",
        ACTION_PHASE.key: "marked",
        REPLICAS_BEFORE.key: "3",
    }
    deployment["spec"]["replicas"] = 2
    emulator.add_all([machine, deployment])
    marks = {ACTION_KEY_ANNOTATION: "scale_down_node:gpu-1", ACTION_PHASE.key: "removing"}

    def drained(obj: dict) -> None:
        obj["metadata"]["annotations"] = marks
        obj["spec"]["unschedulable"] = True

    emulator.mutate("v1", "Node", "gpu-1", change=drained)
    done = actuator.apply(capi_action())
    assert done.status is ActionStatus.DONE, done.reason
    md = emulator.get("cluster.x-k8s.io/v1beta1", "MachineDeployment", "gpu-md", "capi")
    assert md["spec"]["replicas"] == 2
    assert not emulator.requests_where(verb="patch", subresource="scale")


def test_cluster_api_undoes_the_mark_when_scaling_fails(cluster):
    emulator, actuator, _ = cluster
    emulator.install(*CLUSTER_API_RESOURCES)
    emulator.add_all(capi_objects())
    emulator.fail_scale(  # past every retry
        "cluster.x-k8s.io/v1beta1", "MachineDeployment", "gpu-md", "capi", times=10
    )
    failed = actuator.apply(capi_action())
    assert failed.status is ActionStatus.FAILED and "unmarked" in failed.reason
    machine = emulator.get("cluster.x-k8s.io/v1beta1", "Machine", "gpu-md-abc12", "capi")
    assert DELETE_MACHINE_ANNOTATION not in (machine["metadata"].get("annotations") or {})
    md = emulator.get("cluster.x-k8s.io/v1beta1", "MachineDeployment", "gpu-md", "capi")
    assert md["spec"]["replicas"] == 3
    assert _node(emulator)["spec"]["unschedulable"] is False


def test_karpenter_deletes_the_node_claim(cluster):
    emulator, actuator, _ = cluster
    emulator.install(*KARPENTER_RESOURCES)
    emulator.add(
        {
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodeClaim",
            "metadata": {"name": "gpu-claim-x"},
            "spec": {},
            "status": {"nodeName": "gpu-1"},
        }
    )
    base = planned("alice-0")
    done = actuator.apply(Action(**{**base.__dict__, "mechanism": "karpenter"}))
    assert done.status is ActionStatus.DONE, done.reason
    assert emulator.objects("karpenter.sh/v1", "NodeClaim") == []
    assert not emulator.deletes("pods")
