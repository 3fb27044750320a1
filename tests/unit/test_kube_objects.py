"""Kubernetes JSON -> domain types: quantities, effective requests, GPUs, owners, lifetimes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gpuwatch.analysis.ownership import OwnerIndex
from gpuwatch.config.settings import SimulatorSettings
from gpuwatch.model.cluster import (
    CGPU_MEMORY_RESOURCE,
    WHOLE_GPU_RESOURCE,
    ClusterState,
    Controller,
    Node,
    OwnerRef,
    Pod,
    Taint,
    gpu_request_kind,
)
from gpuwatch.model.errors import SourceBadResponse, SourceError
from gpuwatch.sources.kube_objects import (
    container_requests,
    controller_from_kube,
    controller_to_kube,
    effective_requests,
    format_quantity,
    namespace_from_kube,
    node_from_kube,
    node_to_kube,
    parse_quantity,
    pod_from_kube,
    pod_to_kube,
    state_to_kube,
)
from gpuwatch.sources.simulator import SimulatedCluster
from gpuwatch.sources.simulator.layout import SHOWCASE_AT

# --- quantities ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8", 8.0),
        ("0", 0.0),
        ("500m", 0.5),
        ("1500m", 1.5),
        ("0.5", 0.5),
        (".5", 0.5),
        ("1.", 1.0),
        ("+2", 2.0),
        ("-1", -1.0),
        ("100n", 1e-7),
        ("250u", 0.00025),
        ("1k", 1e3),
        ("2M", 2e6),
        ("3G", 3e9),
        ("1T", 1e12),
        ("1P", 1e15),
        ("1E", 1e18),
        ("1Ki", 1024.0),
        ("512Mi", 512 * 2.0**20),
        ("768Gi", 768 * 2.0**30),
        ("1.5Gi", 1.5 * 2.0**30),
        ("2Ti", 2 * 2.0**40),
        ("1Pi", 2.0**50),
        ("1Ei", 2.0**60),
        ("1e3", 1000.0),
        ("1E3", 1000.0),
        ("12e-3", 0.012),
        ("1.5e+2", 150.0),
        (16, 16.0),
        (0.25, 0.25),
    ],
)
def test_quantities_parse_like_the_api_machinery(text, value):
    assert parse_quantity(text) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize(
    "text", ["", "abc", "1x", "1 Gi", "Gi", "1e", "1gi", "1KiB", "--1", ".", "1.2.3", "1mm", "0x10"]
)
def test_malformed_quantities_name_where_they_are(text):
    with pytest.raises(SourceBadResponse, match=r"pod a/b: spec\.containers\[0\].*malformed"):
        parse_quantity(text, "pod a/b: spec.containers[0].resources.requests['cpu']")


@pytest.mark.parametrize("value", [None, True, [1], {"a": 1}, float("nan")])
def test_quantities_of_the_wrong_type_are_refused(value):
    with pytest.raises(SourceBadResponse, match="where"):
        parse_quantity(value, "where")


@pytest.mark.parametrize(
    "value", [8.0, 0.5, 0.25, 96.0, 768 * 2.0**30, 16 * 2.0**20, 1.5, 1e-3, 1024.0, 0.1]
)
def test_formatted_quantities_parse_back_exactly(value):
    assert parse_quantity(format_quantity(value)) == value


def test_format_prefers_the_units_kubernetes_writes():
    assert format_quantity(768 * 2.0**30) == "768Gi"
    assert format_quantity(0.5) == "500m"
    assert format_quantity(8.0) == "8"


# --- effective requests ---------------------------------------------------------------------


def _container(requests: dict[str, str] | None = None, limits: dict[str, str] | None = None):
    resources: dict[str, Any] = {}
    if requests is not None:
        resources["requests"] = requests
    if limits is not None:
        resources["limits"] = limits
    return {"name": "c", "resources": resources}


def test_containers_sum_and_limits_stand_for_omitted_requests():
    spec = {
        "containers": [
            _container({"cpu": "2", "memory": "4Gi"}, {"nvidia.com/gpu": "2", "cpu": "4"}),
            _container({"cpu": "500m"}),
            _container(None, {"memory": "1Gi"}),
            {"name": "bare"},
        ]
    }
    assert effective_requests(spec) == {
        "cpu": 2.5,
        "memory": 5 * 2.0**30,
        WHOLE_GPU_RESOURCE: 2.0,
    }


def test_a_request_wins_over_its_limit():
    assert container_requests(_container({"cpu": "1"}, {"cpu": "8"}), "c") == {"cpu": 1.0}


def test_init_containers_count_at_their_peak_not_their_sum():
    spec = {
        "initContainers": [
            _container({"cpu": "4", "memory": "1Gi"}),
            _container({"cpu": "1", "memory": "8Gi"}),
        ],
        "containers": [_container({"cpu": "2", "memory": "2Gi"}, {"nvidia.com/gpu": "1"})],
    }
    # cpu: max(2, 4); memory: max(2Gi, 8Gi); the GPU only from the app container.
    assert effective_requests(spec) == {"cpu": 4.0, "memory": 8 * 2.0**30, WHOLE_GPU_RESOURCE: 1}


def test_sidecars_run_beside_the_app_and_the_later_init_containers():
    spec = {
        "initContainers": [
            _container({"cpu": "1"}),  # alone: 1
            {**_container({"cpu": "500m"}), "restartPolicy": "Always"},  # sidecar
            _container({"cpu": "3"}),  # beside the sidecar: 3.5
        ],
        "containers": [_container({"cpu": "2"})],  # beside the sidecar: 2.5
    }
    assert effective_requests(spec) == {"cpu": 3.5}
    spec["containers"] = [_container({"cpu": "4"})]
    assert effective_requests(spec) == {"cpu": 4.5}


def test_overhead_is_added_on_top():
    spec = {
        "containers": [_container({"cpu": "1", "memory": "1Gi"})],
        "initContainers": [_container({"cpu": "2"})],
        "overhead": {"cpu": "250m", "memory": "120Mi"},
    }
    assert effective_requests(spec) == {"cpu": 2.25, "memory": 2.0**30 + 120 * 2.0**20}


def test_pod_level_resources_replace_the_containers_sum():
    spec = {
        "resources": {"requests": {"cpu": "3"}},
        "containers": [_container({"cpu": "1"}, {"nvidia.com/gpu": "1"})],
    }
    assert effective_requests(spec) == {"cpu": 3.0, WHOLE_GPU_RESOURCE: 1.0}


def test_every_gpu_resource_kind_is_recognised():
    def kind(limits: dict[str, str]) -> str | None:
        return gpu_request_kind(effective_requests({"containers": [_container(None, limits)]}))

    assert kind({"nvidia.com/gpu": "1"}) == "whole"
    assert kind({"aliyun.com/gpu-mem": "8"}) == "cgpu"
    assert kind({"nvidia.com/mig-1g.10gb": "1"}) == "mig"
    assert kind({"nvidia.com/mig-3g.40gb": "2"}) == "mig"
    assert kind({"nvidia.com/gpu.shared": "1"}) == "whole"
    assert kind({"cpu": "1"}) is None


def test_renamed_time_slicing_resources_fold_into_the_gpu_they_rename():
    spec = {"containers": [_container(None, {"nvidia.com/gpu.shared": "2"})]}
    assert effective_requests(spec) == {WHOLE_GPU_RESOURCE: 2.0}
    # A cluster that renames differently says so; the default alias then stays as it is.
    custom = {"example.com/vgpu": WHOLE_GPU_RESOURCE}
    spec = {
        "containers": [_container(None, {"example.com/vgpu": "1", "nvidia.com/gpu.shared": "1"})]
    }
    assert effective_requests(spec, gpu_aliases=custom) == {
        WHOLE_GPU_RESOURCE: 1.0,
        "nvidia.com/gpu.shared": 1.0,
    }


def test_cgpu_memory_is_counted_in_gib_as_advertised():
    spec = {"containers": [_container(None, {CGPU_MEMORY_RESOURCE: "8"})]}
    assert effective_requests(spec) == {CGPU_MEMORY_RESOURCE: 8.0}


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


def _pod(**overrides: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "train-worker-0",
            "namespace": "llm",
            "uid": "0f6a3c1e-1111-2222-3333-444455556666",
            "labels": {"training.kubeflow.org/job-name": "train"},
            "annotations": {"gpuwatch.io/checkpoint": "true"},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "gc-parent", "uid": "x"},
                {
                    "apiVersion": "kubeflow.org/v1",
                    "kind": "PyTorchJob",
                    "name": "train",
                    "uid": "y",
                    "controller": True,
                    "blockOwnerDeletion": True,
                },
            ],
        },
        "spec": {
            "nodeName": "gpu-1",
            "containers": [_container({"cpu": "8"}, {"nvidia.com/gpu": "8"})],
        },
        "status": {"phase": "Running", "startTime": "2026-11-23T01:00:00Z"},
    }
    for key, value in overrides.items():
        pod[key] = {**pod[key], **value}
    return pod


def test_a_running_pod():
    pod = pod_from_kube(_pod())
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
    raw = _pod()
    raw["metadata"]["ownerReferences"] = raw["metadata"]["ownerReferences"][:1]
    assert pod_from_kube(raw).owner is None


def test_a_pending_pod_has_no_node():
    raw = _pod(status={"phase": "Pending"})
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
    pod = pod_from_kube(_pod(status={"phase": phase, "containerStatuses": statuses}))
    assert pod.finished_at == datetime(2026, 11, 24, 1, 42, 5, tzinfo=UTC)


def test_a_running_pod_has_not_finished_even_if_a_container_restarted():
    statuses = [
        {"name": "a", "state": {"terminated": {"finishedAt": "2026-11-24T01:10:00Z"}}},
    ]
    assert pod_from_kube(_pod(status={"containerStatuses": statuses})).finished_at is None


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
    raw = _pod()
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
    pod = _pod()
    pod["metadata"].update(namespace="s")
    pod["metadata"]["ownerReferences"] = [
        {"kind": "ReplicaSet", "name": "web-7d4b9", "controller": True}
    ]
    index = OwnerIndex(controller_from_kube(o) for o in objects)
    assert index.workload_of(pod_from_kube(pod)) == "Deployment/s/web"


# --- the inverse ----------------------------------------------------------------------------


def test_domain_objects_survive_the_round_trip():
    pod = Pod(
        "ns",
        "p",
        "n",
        "Failed",
        {"cpu": 0.5, "memory": 3 * 2.0**30, "nvidia.com/mig-1g.10gb": 2.0},
        {"a": "b"},
        {"c": "d"},
        OwnerRef("Job", "j"),
        "uid-1",
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 11, 2, 3, 4, 5, 600000, tzinfo=UTC),
    )
    assert pod_from_kube(pod_to_kube(pod)) == pod
    node = Node("n", {"pool": "x"}, (Taint("k", "", "NoSchedule"),), {"cpu": 8.0}, True, None)
    assert node_from_kube(node_to_kube(node)) == node
    controller = Controller("ReplicaSet", "ns", "r", OwnerRef("Deployment", "d"), {"a": "b"})
    assert controller_from_kube(controller_to_kube(controller)) == controller


def test_the_simulated_cluster_survives_the_round_trip():
    state = SimulatedCluster(SimulatorSettings(), end=SHOWCASE_AT).state()
    items = state_to_kube(state)
    back = ClusterState(
        observed_at=state.observed_at,
        nodes=tuple(node_from_kube(i) for i in items if i["kind"] == "Node"),
        pods=tuple(pod_from_kube(i) for i in items if i["kind"] == "Pod"),
        controllers=tuple(
            controller_from_kube(i) for i in items if i["kind"] not in ("Node", "Pod", "Namespace")
        ),
        namespaces=tuple(namespace_from_kube(i) for i in items if i["kind"] == "Namespace"),
    )
    assert back == state
