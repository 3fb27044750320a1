"""Kubernetes JSON -> domain types: nodes, pods (owners, lifetimes), owners, and errors that
name the object and the field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gpuwatch.analysis.ownership import OwnerIndex
from gpuwatch.kube.objects.decode import controller_from_kube, node_from_kube, pod_from_kube
from gpuwatch.model.cluster import WHOLE_GPU_RESOURCE, Controller, Node, OwnerRef, Pod, Taint
from gpuwatch.model.errors import SourceBadResponse, SourceError
from tests.unit.kube.raw import raw_pod

# --- nodes ----------------------------------------------------------------------------------


def test_a_node_with_labels_taints_and_capacity():
    node = node_from_kube(
        {
            "kind": "Node",
            "metadata": {
                "name": "gpu-1",
                "labels": {"pool": "gpu-training", "nvidia.com/gpu.product": "NVIDIA-A100"},
                "creationTimestamp": "2026-11-01T08:30:00Z",
            },
            "spec": {
                "taints": [
                    {"key": "nvidia.com/gpu", "effect": "NoSchedule"},
                    {"key": "china.alibabacloud.com/spot", "value": "true", "effect": "NoExecute"},
                ],
                "unschedulable": True,
            },
            "status": {
                "capacity": {"cpu": "96", "memory": "768Gi", "nvidia.com/gpu": "8", "pods": "110"},
                "allocatable": {"cpu": "95500m", "nvidia.com/gpu": "8"},
            },
        }
    )
    assert node == Node(
        name="gpu-1",
        labels={"pool": "gpu-training", "nvidia.com/gpu.product": "NVIDIA-A100"},
        taints=(
            Taint("nvidia.com/gpu", "", "NoSchedule"),
            Taint("china.alibabacloud.com/spot", "true", "NoExecute"),
        ),
        capacity={"cpu": 96.0, "memory": 768 * 2.0**30, WHOLE_GPU_RESOURCE: 8.0, "pods": 110.0},
        unschedulable=True,
        created_at=datetime(2026, 11, 1, 8, 30, tzinfo=UTC),
    )


def test_a_bare_node_without_pool_labels_or_status():
    node = node_from_kube({"metadata": {"name": "n"}})
    assert node == Node(name="n")


def test_a_time_sliced_node_counts_physical_gpus():
    node = node_from_kube(
        {
            "metadata": {"name": "ts", "labels": {"nvidia.com/gpu.replicas": "4"}},
            "status": {"capacity": {"nvidia.com/gpu.shared": "32"}},
        }
    )
    assert node.capacity == {WHOLE_GPU_RESOURCE: 8.0}


def test_mig_capacity_is_kept_per_profile():
    node = node_from_kube(
        {
            "metadata": {"name": "mig", "labels": {"nvidia.com/gpu.count": "8"}},
            "status": {"capacity": {"nvidia.com/mig-1g.10gb": "56"}},
        }
    )
    assert node.capacity == {"nvidia.com/mig-1g.10gb": 56.0}


# --- pods -----------------------------------------------------------------------------------


def test_a_running_pod():
    pod = pod_from_kube(raw_pod())
    assert pod == Pod(
        namespace="llm",
        name="train-worker-0",
        node_name="gpu-1",
        phase="Running",
        requests={"cpu": 8.0, WHOLE_GPU_RESOURCE: 8.0},
        labels={"training.kubeflow.org/job-name": "train"},
        annotations={"gpuwatch.io/checkpoint": "true"},
        owner=OwnerRef("PyTorchJob", "train"),
        uid="0f6a3c1e-1111-2222-3333-444455556666",
        started_at=datetime(2026, 11, 23, 1, 0, tzinfo=UTC),
    )


def test_only_a_controller_reference_makes_an_owner():
    raw = raw_pod()
    raw["metadata"]["ownerReferences"] = raw["metadata"]["ownerReferences"][:1]
    assert pod_from_kube(raw).owner is None


def test_a_pending_pod_has_no_node():
    raw = raw_pod(status={"phase": "Pending"})
    del raw["spec"]["nodeName"]
    del raw["status"]["startTime"]
    pod = pod_from_kube(raw)
    assert (pod.node_name, pod.phase, pod.started_at) == (None, "Pending", None)


def test_a_pod_without_status_or_namespace_is_pending_in_default():
    pod = pod_from_kube({"metadata": {"name": "p"}})
    assert (pod.namespace, pod.phase, pod.requests, pod.owner) == ("default", "Pending", {}, None)


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_a_finished_pod_ended_with_its_last_container(phase):
    statuses = [
        {
            "name": "a",
            "state": {"terminated": {"exitCode": 0, "finishedAt": "2026-11-24T01:10:00Z"}},
        },
        {
            "name": "b",
            "state": {"terminated": {"exitCode": 1, "finishedAt": "2026-11-24T01:42:05Z"}},
        },
        {"name": "c", "state": {"waiting": {"reason": "ContainerCreating"}}},
    ]
    pod = pod_from_kube(raw_pod(status={"phase": phase, "containerStatuses": statuses}))
    assert pod.finished_at == datetime(2026, 11, 24, 1, 42, 5, tzinfo=UTC)


def test_a_running_pod_has_not_finished_even_if_a_container_restarted():
    statuses = [
        {"name": "a", "state": {"terminated": {"finishedAt": "2026-11-24T01:10:00Z"}}},
    ]
    assert pod_from_kube(raw_pod(status={"containerStatuses": statuses})).finished_at is None


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p["metadata"].pop("name"), "pod without metadata.name"),
        (lambda p: p.update(metadata="x"), "pod: metadata: expected an object"),
        (
            lambda p: p["spec"]["containers"][0]["resources"]["requests"].update(cpu="eight"),
            r"pod llm/train-worker-0: spec\.containers\[0\]\.resources\.requests\['cpu'\]: "
            "malformed quantity 'eight'",
        ),
        (
            lambda p: p["spec"].update(containers={"name": "c"}),
            r"pod llm/train-worker-0: spec\.containers: expected a list",
        ),
        (
            lambda p: p["metadata"]["labels"].update(team=7),
            r"pod llm/train-worker-0: metadata\.labels\['team'\]: expected a string",
        ),
        (
            lambda p: p["status"].update(startTime="yesterday"),
            r"pod llm/train-worker-0: status\.startTime: malformed timestamp",
        ),
        (
            lambda p: p["metadata"]["ownerReferences"][1].pop("name"),
            r"pod llm/train-worker-0: ownerReferences\[1\]: a controller reference needs",
        ),
        (
            lambda p: p["spec"].update(overhead={"cpu": "1 core"}),
            r"spec\.overhead\['cpu'\]: malformed quantity",
        ),
    ],
)
def test_malformed_pods_raise_errors_naming_object_and_field(mutate, expected):
    raw = raw_pod()
    mutate(raw)
    with pytest.raises(SourceBadResponse, match=expected) as caught:
        pod_from_kube(raw)
    assert isinstance(caught.value, SourceError)


def test_a_malformed_node_names_its_field():
    raw = {"metadata": {"name": "n"}, "status": {"capacity": {"nvidia.com/gpu": "eight"}}}
    with pytest.raises(SourceBadResponse, match=r"node n: status\.capacity\['nvidia.com/gpu'\]"):
        node_from_kube(raw)
    raw = {"metadata": {"name": "n"}, "spec": {"taints": [{"effect": "NoSchedule"}]}}
    with pytest.raises(SourceBadResponse, match=r"node n: spec\.taints\[0\]: a taint needs a key"):
        node_from_kube(raw)


# --- owners ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "owner"),
    [
        ("ReplicaSet", OwnerRef("Deployment", "web")),
        ("Deployment", None),
        ("Job", OwnerRef("CronJob", "nightly")),
        ("CronJob", None),
        ("StatefulSet", OwnerRef("Notebook", "alice")),
        ("PyTorchJob", None),
        ("Notebook", None),
        ("RayCluster", OwnerRef("RayJob", "sweep")),
    ],
)
def test_any_owner_kind_becomes_a_controller(kind, owner):
    refs = [{"kind": owner.kind, "name": owner.name, "controller": True}] if owner else []
    raw = {
        "kind": kind,
        "metadata": {"name": "x", "namespace": "ns", "labels": {"a": "b"}, "ownerReferences": refs},
    }
    assert controller_from_kube(raw) == Controller(kind, "ns", "x", owner, {"a": "b"}, {})


def test_list_items_without_kind_take_the_kind_given():
    assert controller_from_kube({"metadata": {"name": "x"}}, "Job").kind == "Job"
    with pytest.raises(SourceBadResponse, match="without kind"):
        controller_from_kube({"metadata": {"name": "x"}})


def test_a_deployment_chain_resolves_to_the_deployment():
    objects = [
        {"kind": "Deployment", "metadata": {"name": "web", "namespace": "s"}},
        {
            "kind": "ReplicaSet",
            "metadata": {
                "name": "web-7d4b9",
                "namespace": "s",
                "ownerReferences": [{"kind": "Deployment", "name": "web", "controller": True}],
            },
        },
    ]
    pod = raw_pod()
    pod["metadata"].update(namespace="s")
    pod["metadata"]["ownerReferences"] = [
        {"kind": "ReplicaSet", "name": "web-7d4b9", "controller": True}
    ]
    index = OwnerIndex(controller_from_kube(o) for o in objects)
    assert index.workload_of(pod_from_kube(pod)) == "Deployment/s/web"
