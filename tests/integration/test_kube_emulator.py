"""The emulated API server answers the real client as kube-apiserver would."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.integration.kube_emulator import (
    CLUSTER_API_RESOURCES,
    KARPENTER_RESOURCES,
    KUBEFLOW_RESOURCES,
    TOO_MANY_REQUESTS_MESSAGE,
    KubeEmulator,
    wait_until,
)
from tests.integration.kube_emulator.patching import (
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)

pytestmark = pytest.mark.integration


def _pod(name: str, namespace: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


@pytest.fixture
def core(kube_emulator):
    kube_emulator.add_all(_pod(f"p{i}", ns) for ns in ("a", "b") for i in range(3))
    return k8s.CoreV1Api(k8s.ApiClient(k8s.Configuration(host=kube_emulator.url)))


def test_typed_lists_get_and_namespaces(core):
    pods = core.list_pod_for_all_namespaces()
    assert [(p.metadata.namespace, p.metadata.name) for p in pods.items] == [
        (ns, f"p{i}") for ns in ("a", "b") for i in range(3)
    ]
    assert int(pods.metadata.resource_version) >= max(
        int(p.metadata.resource_version) for p in pods.items
    )
    assert [p.metadata.name for p in core.list_namespaced_pod("b").items] == ["p0", "p1", "p2"]
    assert core.read_namespaced_pod("p1", "a").metadata.uid
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_pod("nope", "a")
    status = json.loads(caught.value.body)
    assert (caught.value.status, status["kind"], status["reason"]) == (404, "Status", "NotFound")
    assert status["message"] == 'pods "nope" not found'


def test_pagination_fields(core):
    first = core.list_pod_for_all_namespaces(limit=4)
    assert len(first.items) == 4
    assert first.metadata.remaining_item_count == 2 and first.metadata._continue
    rest = core.list_pod_for_all_namespaces(limit=4, _continue=first.metadata._continue)
    assert len(rest.items) == 2 and not rest.metadata._continue
    assert rest.metadata.resource_version == first.metadata.resource_version
    with pytest.raises(ApiException) as caught:
        core.list_pod_for_all_namespaces(limit=4, _continue="garbage")
    assert caught.value.status == 400


def test_list_items_omit_kind_for_builtins_but_not_for_custom_resources(kube_emulator):
    kube_emulator.install(KUBEFLOW_RESOURCES[0])
    kube_emulator.add_all([_pod("p", "a")])
    kube_emulator.add(
        {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "j"}}
    )
    api = k8s.ApiClient(k8s.Configuration(host=kube_emulator.url))
    raw = json.loads(k8s.CoreV1Api(api).list_pod_for_all_namespaces(_preload_content=False).data)
    assert raw["kind"] == "PodList" and "kind" not in raw["items"][0]
    jobs = k8s.CustomObjectsApi(api).list_cluster_custom_object("kubeflow.org", "v1", "pytorchjobs")
    assert jobs["kind"] == "PyTorchJobList" and jobs["items"][0]["kind"] == "PyTorchJob"


def test_watch_is_routed_but_not_implemented(core):
    with pytest.raises(ApiException) as caught:
        core.list_namespaced_pod("a", watch=True, _preload_content=False)
    assert caught.value.status == 405
    assert "does not implement watch on pods" in caught.value.body


def test_rbac_denial_in_one_namespace(kube_emulator, core):
    kube_emulator.deny("list", "pods", namespace="b")
    assert len(core.list_namespaced_pod("a").items) == 3
    with pytest.raises(ApiException) as caught:
        core.list_namespaced_pod("b")
    assert caught.value.status == 403
    assert 'in the namespace "b"' in json.loads(caught.value.body)["message"]


def test_grant_only_allows_exactly_a_role_and_a_cluster_role(kube_emulator, core):
    # A Role in namespace a (list pods) and a ClusterRole (list nodes): nothing else.
    kube_emulator.grant_only([("", "pods", "list", "a"), ("", "nodes", "list", None)])
    assert len(core.list_namespaced_pod("a").items) == 3
    core.list_node()
    for refused in (
        lambda: core.list_namespaced_pod("b"),  # the Role is in a only
        core.list_pod_for_all_namespaces,  # and is no ClusterRole
        core.list_namespace,  # never granted
    ):
        with pytest.raises(ApiException) as caught:
            refused()
        assert caught.value.status == 403


def test_faults_hit_only_their_path_and_only_n_times(kube_emulator, core):
    kube_emulator.fail_next("/api/v1/namespaces/a/pods", 503, times=1)
    assert len(core.list_namespaced_pod("b").items) == 3
    with pytest.raises(ApiException) as caught:
        core.list_namespaced_pod("a")
    assert caught.value.status == 503
    assert len(core.list_namespaced_pod("a").items) == 3


def test_the_request_budget_stops_the_server():
    emulator = KubeEmulator(max_requests=2)
    with emulator:
        core = k8s.CoreV1Api(k8s.ApiClient(k8s.Configuration(host=emulator.url)))
        core.list_node()
        core.list_node()
        with pytest.raises(ApiException) as caught:
            core.list_node()
        assert caught.value.status == 503
        assert emulator.exhausted


def test_the_deadline_stops_the_server():
    with KubeEmulator(deadline_s=0.05) as emulator:
        assert wait_until(lambda: emulator.exhausted, timeout_s=2.0)


# --- helpers for the write side -------------------------------------------------------------


def _status(caught: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    """The Status body of an error, checked to be one."""
    body = json.loads(caught.value.body)
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert body["code"] == caught.value.status
    return body


def _running_pod(name: str, namespace: str = "ml", **labels: str) -> dict[str, Any]:
    pod = _pod(name, namespace)
    pod["metadata"]["labels"] = labels or {"app": "train"}
    pod["spec"]["nodeName"] = "gpu-1"
    pod["status"] = {"phase": "Running"}
    return pod


def _pdb(name: str, namespace: str = "ml", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"app": "train"}}, **spec},
    }


def _node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"pool": "gpu-training"}},
        "spec": {},
        "status": {"capacity": {"nvidia.com/gpu": "8"}},
    }


def _job(name: str, namespace: str = "ml", suspend: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "suspend": suspend,
            "template": {
                "metadata": {"labels": {"app": "train"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "trainer", "image": "trainer:1"}],
                },
            },
        },
    }


def _deployment(name: str, namespace: str = "ml") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "server", "image": "server:1"}]},
            },
        },
    }


def _pytorchjob(name: str, namespace: str = "ml") -> dict[str, Any]:
    worker = {
        "replicas": 2,
        "template": {"spec": {"containers": [{"name": "pytorch", "image": "train:1"}]}},
    }
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"pytorchReplicaSpecs": {"Worker": worker}},
    }


@pytest.fixture
def api(kube_emulator: KubeEmulator) -> k8s.ApiClient:
    return kube_emulator.api_client()


# --- get --------------------------------------------------------------------------------


def test_get_single_objects_of_every_group(kube_emulator, api):
    kube_emulator.install(*KUBEFLOW_RESOURCES, *KARPENTER_RESOURCES)
    kube_emulator.add_all(
        [
            _node("gpu-1"),
            _running_pod("w0"),
            _pdb("train"),
            _pytorchjob("llm"),
            {"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim", "metadata": {"name": "nc-1"}},
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": "gpuwatch", "namespace": "gpuwatch"},
                "spec": {"holderIdentity": "a"},
            },
            _deployment("d", "default"),
            _job("j") | {"metadata": {"name": "j", "namespace": "ml"}},
        ]
    )
    custom = k8s.CustomObjectsApi(api)
    assert k8s.CoreV1Api(api).read_node("gpu-1").metadata.labels == {"pool": "gpu-training"}
    assert k8s.CoreV1Api(api).read_namespaced_pod("w0", "ml").status.phase == "Running"
    assert k8s.AppsV1Api(api).read_namespaced_deployment("d", "default").metadata.name == "d"
    assert k8s.BatchV1Api(api).read_namespaced_job("j", "ml").spec.suspend is False
    pdb = k8s.PolicyV1Api(api).read_namespaced_pod_disruption_budget("train", "ml")
    assert pdb.status.current_healthy == 1  # computed by the emulated disruption controller
    lease = k8s.CoordinationV1Api(api).read_namespaced_lease("gpuwatch", "gpuwatch")
    assert lease.spec.holder_identity == "a"
    job = custom.get_namespaced_custom_object("kubeflow.org", "v1", "ml", "pytorchjobs", "llm")
    assert (job["kind"], job["metadata"]["namespace"]) == ("PyTorchJob", "ml")
    claim = custom.get_cluster_custom_object("karpenter.sh", "v1", "nodeclaims", "nc-1")
    assert "namespace" not in claim["metadata"]

    with pytest.raises(ApiException) as caught:
        k8s.CoordinationV1Api(api).read_namespaced_lease("other", "gpuwatch")
    status = _status(caught)
    assert (caught.value.status, status["reason"]) == (404, "NotFound")
    assert status["message"] == 'leases.coordination.k8s.io "other" not found'
    assert status["details"] == {"name": "other", "group": "coordination.k8s.io", "kind": "leases"}
    with pytest.raises(ApiException) as caught:
        custom.get_cluster_custom_object("karpenter.sh", "v1", "nodeclaims", "nc-2")
    assert _status(caught)["message"] == 'nodeclaims.karpenter.sh "nc-2" not found'
    with pytest.raises(ApiException) as caught:  # Cluster API is not installed
        custom.get_namespaced_custom_object("cluster.x-k8s.io", "v1beta1", "ml", "machines", "m")
    assert _status(caught)["message"] == "the server could not find the requested resource"


# --- patch --------------------------------------------------------------------------------


def test_cordon_and_uncordon_by_strategic_merge_patch(kube_emulator, api):
    core = k8s.CoreV1Api(api)
    before = kube_emulator.add(_node("gpu-1"))
    cordoned = core.patch_node("gpu-1", {"spec": {"unschedulable": True}})
    assert cordoned.spec.unschedulable is True
    assert int(cordoned.metadata.resource_version) > int(before["metadata"]["resourceVersion"])
    (patch,) = kube_emulator.requests_where(verb="patch")
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert (patch.body, patch.name, patch.status) == (
        {"spec": {"unschedulable": True}},
        "gpu-1",
        200,
    )

    core.patch_node(
        "gpu-1",
        {"metadata": {"labels": {"gpuwatch.io/idle": "true"}, "annotations": {"a": "1"}}},
    )
    core.patch_node(
        "gpu-1", {"spec": {"unschedulable": None}, "metadata": {"labels": {"pool": None}}}
    )
    node = kube_emulator.get("v1", "Node", "gpu-1")
    assert node is not None
    assert "unschedulable" not in node["spec"]
    assert node["metadata"]["labels"] == {"gpuwatch.io/idle": "true"}
    assert node["metadata"]["annotations"] == {"a": "1"}
    assert node["status"] == before["status"]
    # Metadata-only and spec patches alike took the next resourceVersions.
    first, last = before["metadata"]["resourceVersion"], node["metadata"]["resourceVersion"]
    assert int(last) >= int(first) + 3


def test_strategic_merge_patch_merges_lists_by_their_merge_key(kube_emulator, api):
    deployment = _deployment("asr")
    deployment["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    deployment["metadata"]["finalizers"] = ["a"]
    kube_emulator.add(deployment)
    patch = {
        "metadata": {"finalizers": ["b"]},
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "server", "env": [{"name": "B", "value": "2"}]}],
                    "tolerations": [{"key": "spot", "operator": "Exists"}],
                    "nodeSelector": {"pool": "gpu-spot"},
                }
            }
        },
    }
    patched = k8s.AppsV1Api(api).patch_namespaced_deployment("asr", "ml", patch)
    pod_spec = patched.spec.template.spec
    assert [(c.name, c.image) for c in pod_spec.containers] == [("server", "server:1")]
    assert [(e.name, e.value) for e in pod_spec.containers[0].env] == [("A", "1"), ("B", "2")]
    assert patched.metadata.finalizers == ["a", "b"]  # merged as a set
    assert pod_spec.node_selector == {"pool": "gpu-spot"}
    assert pod_spec.tolerations[0].key == "spot"
    assert patched.metadata.generation == 2


def test_merge_patch_moves_a_pytorchjob_to_spot(kube_emulator, api):
    kube_emulator.install(*KUBEFLOW_RESOURCES)
    job = _pytorchjob("llm")
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["tolerations"] = [
        {"key": "old", "operator": "Exists"}
    ]
    kube_emulator.add(job)
    custom = k8s.CustomObjectsApi(api)
    worker_spec = {
        "nodeSelector": {"pool": "gpu-spot"},
        "tolerations": [
            {"key": "china.alibabacloud.com/spot", "operator": "Exists", "effect": "NoSchedule"}
        ],
    }
    patched = custom.patch_namespaced_custom_object(
        "kubeflow.org",
        "v1",
        "ml",
        "pytorchjobs",
        "llm",
        {"spec": {"pytorchReplicaSpecs": {"Worker": {"template": {"spec": worker_spec}}}}},
    )
    spec = patched["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    assert spec["nodeSelector"] == {"pool": "gpu-spot"}
    assert spec["tolerations"] == worker_spec["tolerations"]  # a merge patch replaces lists
    assert spec["containers"] == [{"name": "pytorch", "image": "train:1"}]
    assert patched["metadata"]["generation"] == 2
    (request,) = kube_emulator.requests_where(verb="patch")
    assert request.content_type == "application/merge-patch+json"

    # Custom resources have no strategic merge patch: the real server answers 415.
    with pytest.raises(ApiException) as caught:
        custom.patch_namespaced_custom_object(
            "kubeflow.org",
            "v1",
            "ml",
            "pytorchjobs",
            "llm",
            {"spec": {}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert (caught.value.status, _status(caught)["reason"]) == (415, "UnsupportedMediaType")


def test_json_patch_operations(kube_emulator, api):
    kube_emulator.install(*KUBEFLOW_RESOURCES)
    kube_emulator.add(_pytorchjob("llm"))
    custom = k8s.CustomObjectsApi(api)
    worker = "/spec/pytorchReplicaSpecs/Worker"
    ops = [
        {
            "op": "add",
            "path": f"{worker}/template/spec/nodeSelector",
            "value": {"pool": "gpu-spot"},
        },
        {"op": "replace", "path": f"{worker}/replicas", "value": 4},
        {"op": "add", "path": "/metadata/annotations", "value": {"gpuwatch.io/migrated": "1"}},
        {"op": "test", "path": f"{worker}/replicas", "value": 4},
    ]
    patched = custom.patch_namespaced_custom_object(
        "kubeflow.org",
        "v1",
        "ml",
        "pytorchjobs",
        "llm",
        ops,
        _content_type="application/json-patch+json",
    )
    assert patched["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 4
    assert patched["metadata"]["annotations"] == {"gpuwatch.io/migrated": "1"}
    remove = [{"op": "remove", "path": "/metadata/annotations/gpuwatch.io~1migrated"}]
    patched = custom.patch_namespaced_custom_object(
        "kubeflow.org",
        "v1",
        "ml",
        "pytorchjobs",
        "llm",
        remove,
        _content_type="application/json-patch+json",
    )
    assert patched["metadata"]["annotations"] == {}

    # A list body to a built-in kind goes out as a JSON patch by itself.
    kube_emulator.add(_node("gpu-1"))
    node = k8s.CoreV1Api(api).patch_node(
        "gpu-1", [{"op": "add", "path": "/spec/unschedulable", "value": True}]
    )
    assert node.spec.unschedulable is True
    with pytest.raises(ApiException) as caught:
        k8s.CoreV1Api(api).patch_node("gpu-1", [{"op": "remove", "path": "/spec/taints"}])
    status = _status(caught)
    assert (caught.value.status, status["reason"]) == (422, "Invalid")
    assert "remove operation does not apply" in status["message"]


def test_a_stale_resource_version_conflicts(kube_emulator, api):
    core = k8s.CoreV1Api(api)
    kube_emulator.add(_node("gpu-1"))
    read = core.read_node("gpu-1")
    core.patch_node("gpu-1", {"metadata": {"labels": {"x": "1"}}})  # someone else writes
    read.spec.unschedulable = True
    with pytest.raises(ApiException) as caught:
        core.replace_node("gpu-1", read)
    status = _status(caught)
    assert (caught.value.status, status["reason"]) == (409, "Conflict")
    assert status["message"] == (
        'Operation cannot be fulfilled on nodes "gpu-1": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    with pytest.raises(ApiException) as caught:  # a patch that carries the stale version
        core.patch_node(
            "gpu-1",
            {
                "metadata": {"resourceVersion": read.metadata.resource_version},
                "spec": {"unschedulable": True},
            },
        )
    assert caught.value.status == 409
    fresh = core.read_node("gpu-1")
    fresh.spec.unschedulable = True
    replaced = core.replace_node("gpu-1", fresh)
    assert replaced.spec.unschedulable is True
    assert int(replaced.metadata.resource_version) > int(fresh.metadata.resource_version)
    # Built-in kinds accept an update without a resourceVersion (unconditional).
    fresh.metadata.resource_version = None
    fresh.spec.unschedulable = False
    assert core.replace_node("gpu-1", fresh).spec.unschedulable is False


def test_status_is_written_only_through_its_subresource(kube_emulator, api):
    core = k8s.CoreV1Api(api)
    kube_emulator.add(_running_pod("w0"))
    patched = core.patch_namespaced_pod("w0", "ml", {"status": {"phase": "Failed"}})
    assert patched.status.phase == "Running"
    patched = core.patch_namespaced_pod_status("w0", "ml", {"status": {"phase": "Succeeded"}})
    assert patched.status.phase == "Succeeded"
    assert patched.metadata.generation is None  # status writes are not spec changes


def test_dry_run_changes_nothing(kube_emulator, api):
    kube_emulator.add(_node("gpu-1"))
    before = kube_emulator.get("v1", "Node", "gpu-1")
    answer = k8s.CoreV1Api(api).patch_node(
        "gpu-1", {"spec": {"unschedulable": True}}, dry_run="All"
    )
    assert answer.spec.unschedulable is True
    assert kube_emulator.get("v1", "Node", "gpu-1") == before


# --- create and delete ------------------------------------------------------------------------


def test_create_answers_201_then_409_already_exists(kube_emulator, api):
    batch = k8s.BatchV1Api(api)
    created = batch.create_namespaced_job("ml", _job("j", suspend=True))
    assert created.metadata.namespace == "ml" and created.metadata.uid
    assert created.metadata.generation == 1
    assert kube_emulator.requests_where(verb="create")[0].status == 201
    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job("ml", _job("j"))
    status = _status(caught)
    assert (caught.value.status, status["reason"]) == (409, "AlreadyExists")
    assert status["message"] == 'jobs.batch "j" already exists'

    generated = _job("") | {"metadata": {"generateName": "j-"}}
    name = batch.create_namespaced_job("ml", generated).metadata.name
    assert name.startswith("j-") and len(name) == 7

    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job("ml", _job("Not_A_Name"))
    assert (caught.value.status, _status(caught)["details"]["causes"][0]["field"]) == (
        422,
        "metadata.name",
    )
    copied = kube_emulator.get("batch/v1", "Job", "j", "ml")
    assert copied is not None
    copied["metadata"]["name"] = "j2"  # re-created from a read object: version still set
    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job("ml", copied)
    assert (
        _status(caught)["message"] == "resourceVersion should not be set on objects to be created"
    )


def test_pod_deletes_can_be_refused_and_are_all_recorded(kube_emulator, api):
    core = k8s.CoreV1Api(api)
    kube_emulator.add_all([_running_pod("w0"), _running_pod("w1")])
    deleted = core.delete_namespaced_pod("w0", "ml")
    assert deleted.metadata.name == "w0"  # the pod registry answers with the pod
    assert kube_emulator.get("v1", "Pod", "w0", "ml") is None

    kube_emulator.deny("delete", "pods")
    with pytest.raises(ApiException) as caught:
        core.delete_namespaced_pod("w1", "ml")
    assert caught.value.status == 403
    assert [(r.name, r.status) for r in kube_emulator.deletes("pods")] == [("w0", 200), ("w1", 403)]
    assert kube_emulator.get("v1", "Pod", "w1", "ml") is not None


def test_delete_preconditions_conflict(kube_emulator, api):
    kube_emulator.add(_running_pod("w0"))
    options = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid="not-its-uid"))
    with pytest.raises(ApiException) as caught:
        k8s.CoreV1Api(api).delete_namespaced_pod("w0", "ml", body=options)
    assert caught.value.status == 409
    assert "Precondition failed: UID in precondition: not-its-uid" in _status(caught)["message"]


def test_finalizers_hold_a_deleted_object_until_removed(kube_emulator, api):
    kube_emulator.install(*KARPENTER_RESOURCES)
    kube_emulator.add(
        {
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodeClaim",
            "metadata": {"name": "nc-1", "finalizers": ["karpenter.sh/termination"]},
        }
    )
    custom = k8s.CustomObjectsApi(api)
    held = custom.delete_cluster_custom_object("karpenter.sh", "v1", "nodeclaims", "nc-1")
    assert held["metadata"]["deletionTimestamp"]
    assert custom.get_cluster_custom_object("karpenter.sh", "v1", "nodeclaims", "nc-1")
    custom.patch_cluster_custom_object(
        "karpenter.sh", "v1", "nodeclaims", "nc-1", {"metadata": {"finalizers": None}}
    )
    assert kube_emulator.get("karpenter.sh/v1", "NodeClaim", "nc-1") is None


def test_deleting_a_job_orphans_its_pods_unless_told_otherwise(kube_emulator, api):
    batch = k8s.BatchV1Api(api)
    for name in ("a", "b"):
        job = batch.create_namespaced_job("ml", _job(name, suspend=True))
        pod = _running_pod(f"{name}-0")
        pod["metadata"]["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": name,
                "uid": job.metadata.uid,
                "controller": True,
            }
        ]
        kube_emulator.add(pod)
    deleted, code, headers = batch.delete_namespaced_job_with_http_info("a", "ml")
    assert (code, deleted["status"], deleted["details"]["name"]) == (200, "Success", "a")
    assert "child pods are preserved by default" in headers["Warning"]
    orphan = kube_emulator.get("v1", "Pod", "a-0", "ml")
    assert orphan is not None and orphan["metadata"]["ownerReferences"] == []
    batch.delete_namespaced_job("b", "ml", propagation_policy="Background")
    assert kube_emulator.get("v1", "Pod", "b-0", "ml") is None
    assert not kube_emulator.deletes("pods")  # the garbage collector is not the client


# --- the Job controller and the pod template --------------------------------------------------


def test_a_jobs_template_changes_only_while_suspended(kube_emulator, api):
    batch = k8s.BatchV1Api(api)
    job = batch.create_namespaced_job("ml", _job("train"))
    pod = _running_pod("train-0")
    pod["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": "train",
            "uid": job.metadata.uid,
            "controller": True,
        }
    ]
    kube_emulator.add(pod)
    assert batch.read_namespaced_job("train", "ml").status.start_time is not None
    to_spot = {"spec": {"template": {"spec": {"nodeSelector": {"pool": "gpu-spot"}}}}}
    with pytest.raises(ApiException) as caught:
        batch.patch_namespaced_job("train", "ml", to_spot)
    status = _status(caught)
    assert (caught.value.status, status["reason"]) == (422, "Invalid")
    assert status["message"].startswith('Job.batch "train" is invalid: spec.template: ')

    batch.patch_namespaced_job("train", "ml", {"spec": {"suspend": True}})
    suspended = batch.read_namespaced_job("train", "ml")
    assert suspended.status.start_time is None  # the Job controller's doing
    assert kube_emulator.get("v1", "Pod", "train-0", "ml") is None  # and so is this
    moved = batch.patch_namespaced_job("train", "ml", to_spot)
    assert moved.spec.template.spec.node_selector == {"pool": "gpu-spot"}
    image = {"spec": {"template": {"spec": {"containers": [{"name": "trainer", "image": "t:2"}]}}}}
    with pytest.raises(ApiException) as caught:
        batch.patch_namespaced_job("train", "ml", image)  # not a scheduling directive
    assert caught.value.status == 422
    batch.patch_namespaced_job("train", "ml", {"spec": {"suspend": False}})
    assert batch.read_namespaced_job("train", "ml").status.start_time is not None


def test_a_pods_spec_is_immutable_but_for_images_and_new_tolerations(kube_emulator, api):
    core = k8s.CoreV1Api(api)
    kube_emulator.add(_running_pod("w0"))
    core.patch_namespaced_pod(
        "w0", "ml", {"spec": {"tolerations": [{"key": "k", "operator": "Exists"}]}}
    )
    with pytest.raises(ApiException) as caught:
        core.patch_namespaced_pod("w0", "ml", {"spec": {"nodeSelector": {"pool": "gpu-spot"}}})
    assert caught.value.status == 422
    assert "pod updates may not change fields" in _status(caught)["message"]


# --- eviction -------------------------------------------------------------------------------


def _evict(api: k8s.ApiClient, name: str, namespace: str = "ml") -> dict[str, Any]:
    """Evict as gpuwatch will; the answer is a Status, which the client would read into a
    V1Eviction and lose, so it is read raw."""
    body = k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name=name, namespace=namespace))
    answer = k8s.CoreV1Api(api).create_namespaced_pod_eviction(
        name, namespace, body, _preload_content=False
    )
    return json.loads(answer.data)


def test_eviction_honours_a_pod_disruption_budget(kube_emulator, api):
    kube_emulator.add_all([_running_pod("w0"), _running_pod("w1"), _pdb("train", minAvailable=1)])
    policy = k8s.PolicyV1Api(api)
    assert (
        policy.read_namespaced_pod_disruption_budget("train", "ml").status.disruptions_allowed == 1
    )
    answer = _evict(api, "w0")
    assert (answer["status"], answer["code"]) == ("Success", 201)
    assert kube_emulator.get("v1", "Pod", "w0", "ml") is None
    status = policy.read_namespaced_pod_disruption_budget("train", "ml").status
    assert (status.disruptions_allowed, status.current_healthy, status.desired_healthy) == (0, 1, 1)

    with pytest.raises(ApiException) as caught:
        _evict(api, "w1")
    body = _status(caught)
    assert (caught.value.status, body["reason"]) == (429, "TooManyRequests")
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["details"]["causes"] == [
        {
            "reason": "DisruptionBudget",
            "message": "The disruption budget train needs 1 healthy pods and has 1 currently",
        }
    ]
    assert "Retry-After" not in caught.value.headers
    assert kube_emulator.get("v1", "Pod", "w1", "ml") is not None
    assert [r.status for r in kube_emulator.requests_where(subresource="eviction")] == [201, 429]
    assert not kube_emulator.deletes("pods")


def test_max_unavailable_percentages_count_the_controllers_replicas(kube_emulator, api):
    owner = kube_emulator.add(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "rs", "namespace": "ml"},
            "spec": {"replicas": 4},
        }
    )
    ref = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "rs",
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }
    for i in range(4):
        pod = _running_pod(f"w{i}")
        pod["metadata"]["ownerReferences"] = [ref]
        kube_emulator.add(pod)
    kube_emulator.add(_pdb("train", maxUnavailable="25%"))  # ceil(25% of 4) = 1
    _evict(api, "w0")
    # The ReplicaSet still wants 4: the budget stays at 3 healthy, no further disruption.
    with pytest.raises(ApiException) as caught:
        _evict(api, "w1")
    assert caught.value.status == 429


def test_scripted_429s_then_the_eviction_is_allowed(kube_emulator, api):
    kube_emulator.add_all([_running_pod("w0"), _running_pod("w1"), _pdb("train", minAvailable=1)])
    kube_emulator.refuse_evictions(2, pod="w0")
    for _ in range(2):
        with pytest.raises(ApiException) as caught:
            _evict(api, "w0")
        assert _status(caught)["message"] == TOO_MANY_REQUESTS_MESSAGE
    assert _evict(api, "w0")["status"] == "Success"


def test_eviction_edge_cases(kube_emulator, api):
    pending = _running_pod("pending") | {"status": {"phase": "Pending"}}
    kube_emulator.add_all([_running_pod("w0"), pending, _pdb("train", minAvailable=5)])
    with pytest.raises(ApiException) as caught:
        _evict(api, "missing")
    assert (caught.value.status, _status(caught)["message"]) == (404, 'pods "missing" not found')
    assert _evict(api, "pending")["status"] == "Success"  # a budget never holds a Pending pod
    kube_emulator.add(_pdb("second"))
    with pytest.raises(ApiException) as caught:
        _evict(api, "w0")
    assert caught.value.status == 500
    assert "more than one PodDisruptionBudget" in _status(caught)["message"]
    kube_emulator.deny("create", "pods/eviction", namespace="ml")
    with pytest.raises(ApiException) as caught:
        _evict(api, "w0")
    assert caught.value.status == 403
    assert 'cannot create resource "pods/eviction"' in _status(caught)["message"]


def test_graceful_pod_deletion_keeps_an_evicted_pod_until_the_kubelet_is_done():
    with KubeEmulator(graceful_pod_deletion=True, deadline_s=30) as emulator:
        emulator.add_all([_running_pod("w0"), _running_pod("w1"), _pdb("train", minAvailable=1)])
        api = emulator.api_client()
        _evict(api, "w0")
        terminating = emulator.get("v1", "Pod", "w0", "ml")
        assert terminating is not None and terminating["metadata"]["deletionTimestamp"]
        assert terminating["metadata"]["deletionGracePeriodSeconds"] == 30
        with pytest.raises(ApiException):
            _evict(api, "w1")  # w0 no longer counts as healthy
        assert emulator.finish_terminations() == 1
        assert emulator.get("v1", "Pod", "w0", "ml") is None


# --- scale ----------------------------------------------------------------------------------


def test_deployment_scale_subresource(kube_emulator, api):
    apps = k8s.AppsV1Api(api)
    kube_emulator.add(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "asr", "namespace": "serving"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "asr"}}},
            "status": {"replicas": 3},
        }
    )
    scale = apps.read_namespaced_deployment_scale("asr", "serving")
    assert (scale.spec.replicas, scale.status.replicas, scale.status.selector) == (3, 3, "app=asr")
    assert (
        apps.patch_namespaced_deployment_scale(
            "asr", "serving", {"spec": {"replicas": 2}}
        ).spec.replicas
        == 2
    )
    scale.spec.replicas = 1  # read before the patch: stale
    with pytest.raises(ApiException) as caught:
        apps.replace_namespaced_deployment_scale("asr", "serving", scale)
    assert caught.value.status == 409
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment_scale("asr", "serving", {"spec": {"replicas": -1}})
    status = _status(caught)
    assert (caught.value.status, status["message"]) == (
        422,
        'Scale.autoscaling "asr" is invalid: spec.replicas: Invalid value: -1: '
        "must be greater than or equal to 0",
    )
    deployment = kube_emulator.get("apps/v1", "Deployment", "asr", "serving")
    assert deployment is not None
    assert (deployment["spec"]["replicas"], deployment["metadata"]["generation"]) == (2, 2)


def _machine(name: str, namespace: str = "capi") -> dict[str, Any]:
    return {
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "Machine",
        "metadata": {"name": name, "namespace": namespace, "labels": {"md": "gpu"}},
        "spec": {"clusterName": "c"},
    }


def test_cluster_api_scale_down_and_its_rollback(kube_emulator, api):
    kube_emulator.install(*CLUSTER_API_RESOURCES)
    kube_emulator.add_all(
        [
            _machine("m0"),
            _machine("m1"),
            {
                "apiVersion": "cluster.x-k8s.io/v1beta1",
                "kind": "MachineDeployment",
                "metadata": {"name": "gpu", "namespace": "capi"},
                "spec": {"replicas": 2},
                "status": {"replicas": 2, "selector": "md=gpu"},
            },
        ]
    )
    custom = k8s.CustomObjectsApi(api)
    group = ("cluster.x-k8s.io", "v1beta1", "capi")
    machines = custom.list_namespaced_custom_object(*group, "machines", label_selector="md=gpu")
    assert [m["metadata"]["name"] for m in machines["items"]] == ["m0", "m1"]
    mark = {"metadata": {"annotations": {"cluster.x-k8s.io/delete-machine": "yes"}}}
    custom.patch_namespaced_custom_object(*group, "machines", "m1", mark)

    kube_emulator.fail_scale(
        "cluster.x-k8s.io/v1beta1", "MachineDeployment", "gpu", "capi", status=500
    )
    with pytest.raises(ApiException) as caught:
        custom.patch_namespaced_custom_object_scale(
            *group, "machinedeployments", "gpu", {"spec": {"replicas": 1}}
        )
    assert (caught.value.status, _status(caught)["reason"]) == (500, "InternalError")
    unmark = {"metadata": {"annotations": {"cluster.x-k8s.io/delete-machine": None}}}
    custom.patch_namespaced_custom_object(*group, "machines", "m1", unmark)
    m1 = custom.get_namespaced_custom_object(*group, "machines", "m1")
    assert m1["metadata"]["annotations"] == {}
    md = custom.get_namespaced_custom_object_scale(*group, "machinedeployments", "gpu")
    assert (md["spec"]["replicas"], md["status"]["selector"]) == (2, "md=gpu")

    # Without the fault the same call lowers spec.replicas; a PUT of the Scale works too.
    scale = custom.patch_namespaced_custom_object_scale(
        *group, "machinedeployments", "gpu", {"spec": {"replicas": 1}}
    )
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 1
    scale["spec"]["replicas"] = 0
    custom.replace_namespaced_custom_object_scale(*group, "machinedeployments", "gpu", scale)
    deployment = kube_emulator.get("cluster.x-k8s.io/v1beta1", "MachineDeployment", "gpu", "capi")
    assert deployment is not None and deployment["spec"]["replicas"] == 0
    kube_emulator.fail_scale(
        "cluster.x-k8s.io/v1beta1", "MachineDeployment", "gpu", "capi", status=422
    )
    with pytest.raises(ApiException) as caught:
        custom.replace_namespaced_custom_object_scale(*group, "machinedeployments", "gpu", scale)
    assert (caught.value.status, _status(caught)["reason"]) == (422, "Invalid")
    m0 = custom.get_namespaced_custom_object(*group, "machines", "m0")
    del m0["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as caught:  # custom resources refuse blind updates
        custom.replace_namespaced_custom_object(*group, "machines", "m0", m0)
    assert caught.value.status == 422
    with pytest.raises(ApiException) as caught:  # Machines declare no scale subresource
        custom.get_namespaced_custom_object_scale(*group, "machines", "m0")
    assert caught.value.status == 404


def test_karpenter_nodeclaims_list_get_delete(kube_emulator, api):
    kube_emulator.install(*KARPENTER_RESOURCES)
    kube_emulator.add_all(
        {
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodeClaim",
            "metadata": {"name": f"nc-{i}", "labels": {"karpenter.sh/nodepool": "gpu"}},
            "status": {"nodeName": f"gpu-{i}"},
        }
        for i in range(3)
    )
    custom = k8s.CustomObjectsApi(api)
    claims = custom.list_cluster_custom_object("karpenter.sh", "v1", "nodeclaims")
    assert [c["status"]["nodeName"] for c in claims["items"]] == ["gpu-0", "gpu-1", "gpu-2"]
    deleted = custom.delete_cluster_custom_object("karpenter.sh", "v1", "nodeclaims", "nc-1")
    assert (deleted["status"], deleted["details"]["kind"]) == ("Success", "nodeclaims")
    with pytest.raises(ApiException) as caught:
        custom.get_cluster_custom_object("karpenter.sh", "v1", "nodeclaims", "nc-1")
    assert caught.value.status == 404


# --- leases and events ----------------------------------------------------------------------


def _lease(holder: str) -> k8s.V1Lease:
    return k8s.V1Lease(
        metadata=k8s.V1ObjectMeta(name="gpuwatch-leader"),
        spec=k8s.V1LeaseSpec(holder_identity=holder, lease_duration_seconds=15),
    )


def test_two_instances_contend_for_one_lease(kube_emulator, api):
    leases = k8s.CoordinationV1Api(api)
    leases.create_namespaced_lease("gpuwatch", _lease("a"))
    with pytest.raises(ApiException) as caught:
        leases.create_namespaced_lease("gpuwatch", _lease("b"))
    assert _status(caught)["reason"] == "AlreadyExists"

    seen_by_a = leases.read_namespaced_lease("gpuwatch-leader", "gpuwatch")
    seen_by_b = leases.read_namespaced_lease("gpuwatch-leader", "gpuwatch")
    seen_by_a.spec.lease_transitions = 1
    leases.replace_namespaced_lease("gpuwatch-leader", "gpuwatch", seen_by_a)
    seen_by_b.spec.holder_identity = "b"
    with pytest.raises(ApiException) as caught:
        leases.replace_namespaced_lease("gpuwatch-leader", "gpuwatch", seen_by_b)
    assert _status(caught)["reason"] == "Conflict"
    blind = _lease("b")  # no resourceVersion: the Lease registry refuses it
    with pytest.raises(ApiException) as caught:
        leases.replace_namespaced_lease("gpuwatch-leader", "gpuwatch", blind)
    status = _status(caught)
    assert (caught.value.status, status["details"]["causes"][0]["field"]) == (
        422,
        "metadata.resourceVersion",
    )
    current = leases.read_namespaced_lease("gpuwatch-leader", "gpuwatch")
    assert current.spec.holder_identity == "a"
    current.metadata.namespace = None  # the URL says where it is
    current.spec.holder_identity = "b"
    taken = leases.replace_namespaced_lease("gpuwatch-leader", "gpuwatch", current)
    assert (taken.metadata.namespace, taken.spec.holder_identity) == ("gpuwatch", "b")
    assert len(kube_emulator.objects("coordination.k8s.io/v1", "Lease")) == 1


def test_concurrent_lease_updates_have_exactly_one_winner(kube_emulator):
    k8s.CoordinationV1Api(kube_emulator.api_client()).create_namespaced_lease(
        "gpuwatch", _lease("none")
    )
    clients = [k8s.CoordinationV1Api(kube_emulator.api_client()) for _ in range(8)]
    reads = [c.read_namespaced_lease("gpuwatch-leader", "gpuwatch") for c in clients]
    results: list[int] = []
    barrier = threading.Barrier(len(clients))

    def contend(i: int) -> None:
        reads[i].spec.holder_identity = f"instance-{i}"
        barrier.wait()
        try:
            clients[i].replace_namespaced_lease("gpuwatch-leader", "gpuwatch", reads[i])
            results.append(200)
        except ApiException as error:
            results.append(error.status)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(results) == [200] + [409] * (len(clients) - 1)


def test_events_are_recorded_for_their_object(kube_emulator, api):
    core = k8s.CoreV1Api(api)
    kube_emulator.add(_node("gpu-1"))
    for reason, message in (("Cordoned", "idle for 2h"), ("ScaleDownRefused", "PDB train")):
        core.create_namespaced_event(
            "default",
            k8s.CoreV1Event(
                metadata=k8s.V1ObjectMeta(generate_name="gpu-1."),
                involved_object=k8s.V1ObjectReference(kind="Node", name="gpu-1"),
                reason=reason,
                message=message,
                type="Normal",
                source=k8s.V1EventSource(component="gpuwatch"),
            ),
        )
    events = kube_emulator.events_for("gpu-1", kind="Node")
    assert [(e["reason"], e["message"]) for e in events] == [
        ("Cordoned", "idle for 2h"),
        ("ScaleDownRefused", "PDB train"),
    ]
    listed = core.list_namespaced_event(
        "default", field_selector="involvedObject.name=gpu-1,source=gpuwatch"
    )
    assert len(listed.items) == 2


# --- selectors ------------------------------------------------------------------------------


def test_label_and_field_selectors(kube_emulator, core):
    kube_emulator.add_all([_running_pod("w0", "a", app="x"), _running_pod("w1", "a", app="y")])
    pods = core.list_pod_for_all_namespaces(label_selector="app in (x, y)", limit=1)
    assert len(pods.items) == 1 and pods.metadata.remaining_item_count is None
    assert pods.metadata._continue
    on_node = core.list_pod_for_all_namespaces(
        field_selector="spec.nodeName=gpu-1,status.phase=Running"
    )
    assert sorted(p.metadata.name for p in on_node.items) == ["w0", "w1"]
    assert [
        p.metadata.name for p in core.list_namespaced_pod("a", label_selector="app!=x,app").items
    ] == ["w1"]
    with pytest.raises(ApiException) as caught:
        core.list_pod_for_all_namespaces(field_selector="spec.priority=1")
    assert caught.value.status == 400


# --- faults, records and state --------------------------------------------------------------


def test_faults_by_method_and_glob_and_after_the_effect(kube_emulator, api):
    core = k8s.CoreV1Api(api)
    kube_emulator.add_all([_node("gpu-1"), _running_pod("w0"), _running_pod("w1")])
    kube_emulator.fail_next("/api/v1/nodes/*", 503, method="PATCH", retry_after_s=7)
    assert core.read_node("gpu-1")  # GETs pass
    with pytest.raises(ApiException) as caught:
        core.patch_node("gpu-1", {"spec": {"unschedulable": True}})
    assert (caught.value.status, caught.value.headers["Retry-After"]) == (503, "7")
    node = kube_emulator.get("v1", "Node", "gpu-1")
    assert node is not None and "unschedulable" not in node["spec"]

    kube_emulator.fail_next("/api/v1/namespaces/*/pods/*/eviction", 504, after_effect=True)
    with pytest.raises(ApiException) as caught:
        _evict(api, "w0")
    assert caught.value.status == 504
    assert kube_emulator.get("v1", "Pod", "w0", "ml") is None  # it happened all the same


def test_state_can_be_read_and_changed_directly(kube_emulator, api):
    added = kube_emulator.add(_running_pod("w0"))
    changed = kube_emulator.mutate(
        "v1", "Pod", "w0", "ml", change=lambda pod: pod["status"].update(phase="Succeeded")
    )
    assert int(changed["metadata"]["resourceVersion"]) > int(added["metadata"]["resourceVersion"])
    assert k8s.CoreV1Api(api).read_namespaced_pod("w0", "ml").status.phase == "Succeeded"
    assert [p["metadata"]["name"] for p in kube_emulator.objects("v1", "Pod", "ml")] == ["w0"]
    assert (
        kube_emulator.path("v1", "Pod", "w0", "ml", "eviction")
        == "/api/v1/namespaces/ml/pods/w0/eviction"
    )
    assert kube_emulator.path("apps/v1", "Deployment") == "/apis/apps/v1/deployments"
    assert kube_emulator.remove("v1", "Pod", "w0", "ml")
    assert kube_emulator.objects("v1", "Pod") == []
    assert kube_emulator.url.startswith("http://127.0.0.1:")
    assert not kube_emulator.writes()  # none of this went through the API


# --- the patch formats, directly ----------------------------------------------------------------


def test_strategic_merge_patch_directives():
    target = {
        "containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}],
        "finalizers": ["x", "y"],
        "nodeSelector": {"k": "v"},
    }
    patch = {
        "containers": [{"name": "b", "$patch": "delete"}, {"name": "c", "image": "2"}],
        "$deleteFromPrimitiveList/finalizers": ["x"],
        "nodeSelector": {"$patch": "replace", "pool": "spot"},
        "$setElementOrder/containers": [{"name": "a"}, {"name": "c"}],
    }
    assert strategic_merge_patch(target, patch) == {
        "containers": [{"name": "a", "image": "1"}, {"name": "c", "image": "2"}],
        "finalizers": ["y"],
        "nodeSelector": {"pool": "spot"},
    }
    assert target["finalizers"] == ["x", "y"]  # the target is left alone


def test_merge_patch_and_json_patch_follow_their_rfcs():
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None}, "l": [2]}) == {
        "a": {"c": 2},
        "l": [2],
    }
    doc = {"a": [1, 2], "b": {"c": 1}}
    ops = [
        {"op": "add", "path": "/a/-", "value": 3},
        {"op": "add", "path": "/a/0", "value": 0},
        {"op": "move", "from": "/b/c", "path": "/d"},
        {"op": "copy", "from": "/d", "path": "/e"},
    ]
    assert json_patch(doc, ops) == {"a": [0, 1, 2, 3], "b": {}, "d": 1, "e": 1}
    with pytest.raises(PatchError) as caught:
        json_patch(doc, [{"op": "test", "path": "/b/c", "value": 2}])
    assert caught.value.status == 422
    with pytest.raises(PatchError) as caught:
        json_patch(doc, {"op": "add"})
    assert caught.value.status == 400
