"""The emulated API server answers the real client as kube-apiserver would."""

from __future__ import annotations

import json

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.integration.kube_emulator import KUBEFLOW_RESOURCES, KubeEmulator, wait_until

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


def test_writes_are_routed_but_not_implemented_yet(core):
    with pytest.raises(ApiException) as caught:
        core.delete_namespaced_pod("p0", "a")
    assert caught.value.status == 405
    assert "does not implement delete on pods" in caught.value.body


def test_rbac_denial_in_one_namespace(kube_emulator, core):
    kube_emulator.deny("list", "pods", namespace="b")
    assert len(core.list_namespaced_pod("a").items) == 3
    with pytest.raises(ApiException) as caught:
        core.list_namespaced_pod("b")
    assert caught.value.status == 403
    assert 'in the namespace "b"' in json.loads(caught.value.body)["message"]


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
