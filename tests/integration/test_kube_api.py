"""The one Kubernetes layer (``gpuwatch.kube``) against the emulated API server, through
the real client: one request path for every adapter, one wording of every answer."""

from __future__ import annotations

import pytest

from gpuwatch.actuators.kubernetes import KubernetesActuator
from gpuwatch.kube.api import KubeApi, RetryPolicy, patient
from gpuwatch.kube.client import api_for
from gpuwatch.kube.errors import (
    KubeBadResponse,
    KubeConflict,
    KubeForbidden,
    KubeGone,
    KubeInvalid,
    KubeNotFound,
    KubeUnavailable,
    Permission,
    as_source_error,
)
from gpuwatch.kube.lease import Lease
from gpuwatch.kube.listing import list_objects
from gpuwatch.kube.resources import CONFIGMAPS, NODES, PODS, PYTORCHJOBS
from gpuwatch.model.errors import (
    SourceAuthRefused,
    SourceBadQuery,
    SourceBadResponse,
    SourceUnreachable,
)
from tests.builders import FakeClock
from tests.integration.kube_emulator import KUBEFLOW_RESOURCES, Answer, KubeEmulator, free_port

pytestmark = pytest.mark.integration


def _api(emulator: KubeEmulator, clock: FakeClock, **policy: float) -> KubeApi:
    return emulator.kube_api(RetryPolicy(**policy), sleep=clock.sleep, monotonic=clock.monotonic)


def _config_map(name: str = "c", namespace: str = "gpuwatch") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"k": "v"},
    }


def test_requests_are_raw_json_in_and_out(kube_emulator):
    api = kube_emulator.kube_api()
    created = api.create(CONFIGMAPS, _config_map(), "gpuwatch")
    assert created["metadata"]["name"] == "c" and created["data"] == {"k": "v"}
    patched = api.patch(CONFIGMAPS, "c", {"data": {"k": None, "x": "y"}}, "gpuwatch")
    assert patched["data"] == {"x": "y"}  # a merge patch: None deletes the key
    assert api.get(CONFIGMAPS, "c", "gpuwatch")["data"] == {"x": "y"}
    api.delete(CONFIGMAPS, "c", "gpuwatch")
    with pytest.raises(KubeNotFound, match=r"get configmap gpuwatch/c: 404"):
        api.get(CONFIGMAPS, "c", "gpuwatch")


def test_custom_resources_get_a_json_merge_patch_built_ins_a_strategic_one(kube_emulator):
    kube_emulator.install(*KUBEFLOW_RESOURCES)
    job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "j", "namespace": "llm"},
        "spec": {"pytorchReplicaSpecs": {}},
    }
    api = kube_emulator.kube_api()
    api.create(PYTORCHJOBS, job, "llm")
    api.patch(PYTORCHJOBS, "j", {"metadata": {"annotations": {"a": "b"}}}, "llm")
    api.create(CONFIGMAPS, _config_map(), "gpuwatch")
    api.patch(CONFIGMAPS, "c", {"data": {"x": "y"}}, "gpuwatch")
    custom, built_in = [r for r in kube_emulator.writes() if r.verb == "patch"]
    assert custom.content_type == "application/merge-patch+json"
    assert built_in.content_type == "application/strategic-merge-patch+json"


def test_a_403_names_the_permission_and_where_to_grant_it(kube_emulator):
    kube_emulator.deny("get", "configmaps", namespace="gpuwatch")
    kube_emulator.deny("list", "nodes")
    api = kube_emulator.kube_api()
    with pytest.raises(KubeForbidden) as namespaced:
        api.get(CONFIGMAPS, "c", "gpuwatch")
    assert namespaced.value.permission == Permission("get", "", "configmaps", "gpuwatch")
    assert "a Role in namespace gpuwatch" in str(namespaced.value)
    assert 'apiGroups [""], resources [configmaps], verbs [get]' in str(namespaced.value)
    with pytest.raises(KubeForbidden) as cluster_wide:
        api.list_page(NODES)
    assert cluster_wide.value.permission.rule() == {
        "apiGroups": [""],
        "resources": ["nodes"],
        "verbs": ["list"],
    }
    assert "a ClusterRole" in str(cluster_wide.value)
    assert isinstance(as_source_error(cluster_wide.value), SourceAuthRefused)


def test_a_create_is_named_by_the_object_it_makes(kube_emulator):
    kube_emulator.deny("create", "configmaps", namespace="gpuwatch")
    with pytest.raises(KubeForbidden, match=r"^create configmap gpuwatch/c: 403"):
        kube_emulator.kube_api().create(CONFIGMAPS, _config_map(), "gpuwatch")


def test_a_subresource_names_its_permission(kube_emulator):
    kube_emulator.deny("create", "pods/eviction")
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"}}
    with pytest.raises(KubeForbidden) as caught:
        kube_emulator.kube_api().create(PODS, body, "ns", name="p", subresource="eviction")
    assert str(caught.value).startswith("create pod ns/p eviction: 403")
    assert caught.value.permission.resource == "pods/eviction"


@pytest.mark.parametrize(
    ("status", "error", "source_error"),
    [
        (409, KubeConflict, SourceBadQuery),
        (410, KubeGone, SourceBadQuery),
        (422, KubeInvalid, SourceBadQuery),
        (400, KubeInvalid, SourceBadQuery),
    ],
)
def test_other_refusals_are_not_retried(kube_emulator, status, error, source_error):
    kube_emulator.add(_config_map())
    path = kube_emulator.path("v1", "ConfigMap", "c", "gpuwatch")
    kube_emulator.fail_next(path, status, times=5)
    clock = FakeClock()
    with pytest.raises(error) as caught:
        _api(kube_emulator, clock).get(CONFIGMAPS, "c", "gpuwatch")
    assert caught.value.status == status and not caught.value.retried
    assert clock.sleeps == [] and len(kube_emulator.requests_to(path)) == 1
    assert isinstance(as_source_error(caught.value), source_error)


def test_429_and_5xx_are_retried_with_jittered_capped_backoff(kube_emulator):
    kube_emulator.add(_config_map())
    path = kube_emulator.path("v1", "ConfigMap", "c", "gpuwatch")
    kube_emulator.fail_next(path, 503, times=3)
    kube_emulator.fail_next(path, 429, times=1, retry_after_s=2)
    clock = FakeClock()
    api = _api(kube_emulator, clock, backoff_initial_s=1.0, backoff_max_s=3.0)
    assert api.get(CONFIGMAPS, "c", "gpuwatch")["data"] == {"k": "v"}
    # 503 x3: 1, 2, 3 (capped), each jittered into [base/2, base]; then Retry-After 2.
    bases = [1.0, 2.0, 3.0]
    assert all(b / 2 <= s <= b for s, b in zip(clock.sleeps[:3], bases, strict=True))
    assert clock.sleeps[3] == 2.0
    assert api.counters.retries == 4


def test_retries_end_and_say_how_many_attempts_were_made(kube_emulator):
    path = kube_emulator.path("v1", "ConfigMap", "c", "gpuwatch")
    kube_emulator.fail_next(path, 500, times=10)
    with pytest.raises(KubeUnavailable, match=r"kept failing \(3 attempts\): 500") as caught:
        _api(kube_emulator, FakeClock(), retries=2).get(CONFIGMAPS, "c", "gpuwatch")
    assert caught.value.retried
    assert isinstance(as_source_error(caught.value), SourceUnreachable)


def test_a_deadline_bounds_the_retries(kube_emulator):
    path = kube_emulator.path("v1", "ConfigMap", "c", "gpuwatch")
    kube_emulator.fail_next(path, 429, times=100, retry_after_s=10)
    clock = FakeClock()
    with pytest.raises(KubeUnavailable):
        kube_emulator.kube_api(
            RetryPolicy(retries=50, backoff_max_s=60), sleep=clock.sleep, monotonic=clock.monotonic
        ).request("get", CONFIGMAPS, namespace="gpuwatch", name="c", deadline=35.0)
    assert clock.sleeps == [10.0, 10.0, 10.0]  # a fourth wait would end past the deadline
    assert clock.t <= 35.0


def test_a_patient_request_waits_out_429_until_its_deadline_but_not_5xx(kube_emulator):
    kube_emulator.add(_config_map())
    path = kube_emulator.path("v1", "ConfigMap", "c", "gpuwatch")
    policy = patient(RetryPolicy(retries=1), initial_s=1.0, max_s=4.0)
    kube_emulator.fail_next(path, 429, times=6)
    clock = FakeClock()
    api = kube_emulator.kube_api(policy, sleep=clock.sleep, monotonic=clock.monotonic)
    api.request("get", CONFIGMAPS, namespace="gpuwatch", name="c", deadline=100.0)
    assert len(clock.sleeps) == 6  # six 429s waited out, though retries is 1
    kube_emulator.fail_next(path, 500, times=6)
    with pytest.raises(KubeUnavailable, match=r"\(2 attempts\): 500"):
        api.request("get", CONFIGMAPS, namespace="gpuwatch", name="c", deadline=1000.0)


def test_an_unreachable_server_is_unavailable_after_the_retries():
    clock = FakeClock()
    host = f"http://127.0.0.1:{free_port()}"
    api = api_for(host, RetryPolicy(retries=2), sleep=clock.sleep, monotonic=clock.monotonic)
    with pytest.raises(KubeUnavailable) as caught:
        api.list_page(NODES)
    assert str(caught.value).startswith(
        f"list nodes at cluster scope: cannot reach the Kubernetes API at {host}"
    )
    assert len(clock.sleeps) == 2


def test_a_server_that_dies_mid_list_is_unavailable(kube_emulator):
    kube_emulator.add_all(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"p{i}", "namespace": "ns"},
            "spec": {"containers": [{"name": "c"}]},
        }
        for i in range(8)
    )
    pages = _api(kube_emulator, FakeClock(), retries=1).list_items(PODS, limit=3)
    next(pages)
    kube_emulator.stop()
    with pytest.raises(KubeUnavailable, match="cannot reach the Kubernetes API"):
        list(pages)


def test_garbage_is_a_bad_response(kube_emulator):
    kube_emulator.after_request = lambda request, answer: Answer(200, b"<html>login</html>")
    with pytest.raises(KubeBadResponse, match="the answer is not JSON") as caught:
        kube_emulator.kube_api().list_page(NODES)
    assert isinstance(as_source_error(caught.value), SourceBadResponse)


def test_a_crd_that_is_not_installed_lists_as_empty(kube_emulator):
    assert list_objects(kube_emulator.kube_api(), PYTORCHJOBS, dict) == []


def test_no_client_exception_escapes_the_lease_or_the_actuator(kube_emulator):
    """A Lease the API server will not show (403) is a refusal with its reason, never a
    traceback out of the cycle."""
    kube_emulator.deny("get", "leases", group="coordination.k8s.io", namespace="gpuwatch")
    api = kube_emulator.kube_api()
    lease = Lease(api, "gpuwatch", "gpuwatch-actions", "me", 60)
    with pytest.raises(KubeForbidden, match="leases"):
        lease.acquire()
    lease.release()  # logs, never raises
    refusal = KubernetesActuator(api, lease=lease).exclusive()
    assert refusal is not None
    assert refusal.startswith("the actions lease could not be taken: get lease")
    assert "verb get on leases in API group coordination.k8s.io" in refusal


def test_kill_switch_that_cannot_be_read_is_off(kube_emulator):
    kube_emulator.deny("get", "configmaps", namespace="gpuwatch")
    actuator = KubernetesActuator(kube_emulator.kube_api())
    assert actuator.kill_switch("gpuwatch/gpuwatch-actions/enabled").on is False
