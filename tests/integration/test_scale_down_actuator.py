"""Cordon-and-drain against the emulated API server, through the real client."""

from __future__ import annotations

import pytest

from gpuwatch.actuators.drain import ACTION_KEY_ANNOTATION, DELETE_MACHINE_ANNOTATION, DrainOptions
from gpuwatch.actuators.kubernetes import KubernetesActuator
from gpuwatch.model.actions import Action, ActionStatus
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


def test_crash_between_cordon_and_eviction_then_rerun_converges(cluster):
    emulator, actuator, _ = cluster
    eviction = emulator.path("v1", "Pod", "alice-0", "research", "eviction")
    emulator.fail_next(eviction, 500, times=10, method="POST")  # past every retry
    first = actuator.apply(planned("alice-0", "bob-0"))
    assert first.status is ActionStatus.FAILED
    assert _node(emulator)["spec"]["unschedulable"] is True  # left as the crash left it
    second = actuator.apply(planned("alice-0", "bob-0"))
    assert second.status is ActionStatus.DONE
    assert emulator.objects("v1", "Pod") == []
    cordons = emulator.requests_where(verb="patch", plural="nodes")
    assert len(cordons) == 2  # the rerun re-asserts the same cordon; nothing else twice


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


def test_kill_switch(kube_emulator):
    actuator = KubernetesActuator(kube_emulator.kube_api())
    assert actuator.kill_switch_on("gpuwatch/gpuwatch-actions/enabled") is False
    kube_emulator.add(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "gpuwatch-actions", "namespace": "gpuwatch"},
            "data": {"enabled": "true"},
        }
    )
    assert actuator.kill_switch_on("gpuwatch/gpuwatch-actions/enabled") is True


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
    assert writes == [("machines", None), ("machinedeployments", "scale")]


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
