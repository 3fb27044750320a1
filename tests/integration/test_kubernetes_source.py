"""The Kubernetes API source, through the real client, against the emulated API server."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from gpuwatch.analysis.ownership import OwnerIndex
from gpuwatch.kube.api import KubeApi, RetryPolicy
from gpuwatch.kube.client import Credentials, api_for, connect, new_api_client
from gpuwatch.kube.resources import custom_resource
from gpuwatch.model.cluster import WHOLE_GPU_RESOURCE
from gpuwatch.model.errors import (
    ConfigError,
    SourceAuthRefused,
    SourceBadQuery,
    SourceBadResponse,
    SourceUnreachable,
)
from gpuwatch.sources.base import ClusterSource
from gpuwatch.sources.kubernetes import (
    ClusterReadOptions,
    KubernetesClusterSource,
)
from tests.integration.kube_emulator import (
    KUBEFLOW_RESOURCES,
    Answer,
    KubeEmulator,
    Request,
    ResourceType,
    free_port,
)

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "kubectl_snapshot.json"
AT = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 24, 2, 0, 7, tzinfo=UTC)


class Sleeps:
    """Records the delays the source asks for instead of sleeping them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


READ_OPTIONS = {"page_size", "owner_resources"}


def _source(
    emulator: KubeEmulator, sleeps: Sleeps | None = None, **options: Any
) -> KubernetesClusterSource:
    """The source on ``emulator``; ``options`` are read options or retry policy fields."""
    read = {k: v for k, v in options.items() if k in READ_OPTIONS}
    policy = RetryPolicy(**{k: v for k, v in options.items() if k not in READ_OPTIONS})
    api = api_for(emulator.url, policy, sleep=sleeps or Sleeps(), now=lambda: NOW)
    return KubernetesClusterSource(api, ClusterReadOptions(**read))


def _fixture_items() -> list[dict[str, Any]]:
    return json.loads(FIXTURE.read_text())["items"]


@pytest.fixture
def cluster(kube_emulator: KubeEmulator) -> KubeEmulator:
    """The emulator holding the kubectl fixture's objects, Kubeflow CRDs installed."""
    for resource in KUBEFLOW_RESOURCES:
        kube_emulator.install(resource)
    kube_emulator.add_all(_fixture_items())
    return kube_emulator


def _pod_objects(n: int, namespaces: int = 3) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"p-{i:04d}", "namespace": f"ns-{i % namespaces}"},
            "spec": {
                "nodeName": "n0",
                "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
            },
            "status": {"phase": "Running"},
        }
        for i in range(n)
    ]


def test_it_is_a_cluster_source(cluster):
    source = _source(cluster)
    assert isinstance(source, ClusterSource)
    assert source.name == "kubernetes"


def test_reads_what_kubectl_would_show(cluster):
    state = _source(cluster).snapshot(AT)
    assert state.observed_at == NOW  # a live source reads the cluster as it is now
    assert len(state.nodes) == 5
    assert len(state.pods) == 8
    kinds = sorted({c.kind for c in state.controllers})
    assert kinds == [
        "CronJob",
        "Deployment",
        "Job",
        "PyTorchJob",
        "ReplicaSet",
        "StatefulSet",
    ]
    index = OwnerIndex(state.controllers)
    workloads = {p.name: index.workload_of(p) for p in state.pods}
    assert workloads["asr-5c7d8f9b4-q8zlw"] == "Deployment/serving/asr"
    assert workloads["nightly-eval-29400000-x7k2p"] == "CronJob/vision/nightly-eval"
    assert workloads["llm-pretrain-worker-0"] == "PyTorchJob/llm/llm-pretrain"
    pending = next(p for p in state.pods if p.name == "big-sweep-worker-0")
    assert (pending.node_name, pending.requests[WHOLE_GPU_RESOURCE]) == (None, 8.0)
    # One request per resource kind: nodes, pods, five built-in owner kinds, two CRDs.
    assert len(cluster.requests) == 10
    assert {r.query.get("limit") for r in cluster.requests} == {"500"}


def test_lists_are_read_page_by_page(kube_emulator):
    kube_emulator.add_all(_pod_objects(23))
    state = _source(kube_emulator, page_size=5).snapshot(AT)
    assert sorted(p.name for p in state.pods) == [f"p-{i:04d}" for i in range(23)]
    pages = kube_emulator.requests_to("/api/v1/pods")
    assert [r.query.get("continue") is not None for r in pages] == [False] + [True] * 4
    assert all(r.query["limit"] == "5" for r in pages)


def _after_first_pods_page(emulator: KubeEmulator, action: Callable[[], None]) -> None:
    """Run ``action`` on the server right after it answers the first page of pods."""
    seen: list[Request] = []

    def hook(request: Request, answer: Answer) -> None:
        if request.path == "/api/v1/pods":
            seen.append(request)
            if len(seen) == 1:
                action()

    emulator.after_request = hook


def test_a_list_started_before_a_create_stays_consistent(kube_emulator):
    kube_emulator.add_all(_pod_objects(6))
    late = _pod_objects(1)[0] | {"metadata": {"name": "late", "namespace": "a"}}
    _after_first_pods_page(kube_emulator, lambda: kube_emulator.add(late))
    state = _source(kube_emulator, page_size=4).snapshot(AT)
    assert sorted(p.name for p in state.pods) == [f"p-{i:04d}" for i in range(6)]
    assert len(kube_emulator.requests_to("/api/v1/pods")) == 2


def test_an_expired_continue_token_restarts_the_list(kube_emulator, caplog):
    kube_emulator.add_all(_pod_objects(10))
    _after_first_pods_page(kube_emulator, kube_emulator.compact)
    with caplog.at_level(logging.WARNING):
        state = _source(kube_emulator, page_size=4).snapshot(AT)
    assert sorted(p.name for p in state.pods) == [f"p-{i:04d}" for i in range(10)]
    # first page, its continuation (410), then the whole list again in three pages
    assert len(kube_emulator.requests_to("/api/v1/pods")) == 5
    assert "continue token expired; listing again" in caplog.text


def test_403_names_the_resource_and_the_verb_to_grant(cluster):
    cluster.deny("list", "pods")
    with pytest.raises(SourceAuthRefused) as caught:
        _source(cluster).snapshot(AT)
    message = str(caught.value)
    assert message.startswith("list pods at cluster scope: 403 Forbidden")
    assert "verb list on pods" in message and "grant the service account a ClusterRole" in message
    assert 'cannot list resource "pods"' in message  # the server's own words kept
    assert caught.value.kind == "auth_refused"


def test_403_on_a_custom_resource_names_its_group(cluster):
    cluster.deny("list", "pytorchjobs", group="kubeflow.org")
    with pytest.raises(
        SourceAuthRefused, match=r"verb list on pytorchjobs in API group kubeflow\.org"
    ):
        _source(cluster).snapshot(AT)


def test_401_says_the_credentials_were_refused():
    with KubeEmulator(token="s3cret") as emulator:
        configuration = k8s.Configuration(host=emulator.url)
        configuration.api_key = {"authorization": "wrong"}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        source = KubernetesClusterSource(KubeApi(new_api_client(configuration), sleep=Sleeps()))
        with pytest.raises(
            SourceAuthRefused, match="list nodes at cluster scope: 401 Unauthorized"
        ):
            source.snapshot(AT)
        configuration = k8s.Configuration(host=emulator.url)
        configuration.api_key = {"authorization": "s3cret"}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        source = KubernetesClusterSource(KubeApi(new_api_client(configuration), sleep=Sleeps()))
        assert source.snapshot(AT).nodes == ()


def test_429_is_retried_after_the_servers_retry_after(cluster):
    cluster.fail_next("/api/v1/pods", 429, times=2, retry_after_s=3)
    sleeps = Sleeps()
    state = _source(cluster, sleeps).snapshot(AT)
    assert len(state.pods) == 8
    assert sleeps.delays == [3.0, 3.0]
    assert len(cluster.requests_to("/api/v1/pods")) == 3


def test_retry_after_is_capped(cluster):
    cluster.fail_next("/api/v1/nodes", 429, retry_after_s=3600)
    sleeps = Sleeps()
    _source(cluster, sleeps, backoff_max_s=20.0).snapshot(AT)
    assert sleeps.delays == [20.0]


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_retried_with_growing_capped_backoff(cluster, status):
    cluster.fail_next("/apis/apps/v1/replicasets", status, times=4)
    sleeps = Sleeps()
    state = _source(cluster, sleeps, backoff_initial_s=1.0, backoff_max_s=4.0).snapshot(AT)
    assert len(state.controllers) == 10
    # Exponential (1, 2, 4, 4) with equal jitter: each delay in [base/2, base].
    bases = [1.0, 2.0, 4.0, 4.0]
    assert len(sleeps.delays) == 4
    assert all(base / 2 <= d <= base for d, base in zip(sleeps.delays, bases, strict=True))


def test_5xx_that_does_not_stop_gives_up_after_the_retries(cluster):
    cluster.fail_next("/api/v1/nodes", 500, times=100)
    sleeps = Sleeps()
    with pytest.raises(
        SourceUnreachable, match=r"list nodes at cluster scope: .* kept failing \(4 attempts\): 500"
    ):
        _source(cluster, sleeps, retries=3).snapshot(AT)
    assert len(sleeps.delays) == 3
    assert len(cluster.requests_to("/api/v1/nodes")) == 4


def test_a_crd_that_is_not_installed_means_no_objects_of_that_kind(kube_emulator):
    kube_emulator.add_all(
        item for item in _fixture_items() if item["apiVersion"] != "kubeflow.org/v1"
    )
    state = _source(kube_emulator).snapshot(AT)
    assert "PyTorchJob" not in {c.kind for c in state.controllers}
    pytorch = kube_emulator.requests_to("/apis/kubeflow.org/v1/pytorchjobs")
    assert len(pytorch) == 1  # a 404 is an answer, not a failure to retry
    # Pods of the missing kind still name it as their owner.
    pod = next(p for p in state.pods if p.name == "llm-pretrain-master-0")
    assert OwnerIndex(state.controllers).workload_of(pod) == "PyTorchJob/llm/llm-pretrain"


def test_404_on_pods_is_not_a_kubernetes_api(kube_emulator):
    source = _source(kube_emulator)
    kube_emulator.fail_next("/api/v1/pods", 404)
    with pytest.raises(SourceBadQuery, match="list pods at cluster scope: 404"):
        source.snapshot(AT)


def test_extra_custom_resources_are_read(kube_emulator):
    kube_emulator.install(ResourceType("ray.io", "v1", "rayjobs", "RayJob"))
    kube_emulator.add({"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "r"}})
    rayjobs = (custom_resource("ray.io", "v1", "rayjobs", "RayJob"),)
    state = _source(kube_emulator, owner_resources=rayjobs).snapshot(AT)
    assert [(c.kind, c.namespace, c.name) for c in state.controllers] == [
        ("RayJob", "default", "r")
    ]


def test_an_unreachable_server_is_reported_as_such():
    host = f"http://127.0.0.1:{free_port()}"
    sleeps = Sleeps()
    source = KubernetesClusterSource(api_for(host, RetryPolicy(retries=2), sleep=sleeps))
    with pytest.raises(SourceUnreachable) as caught:
        source.snapshot(AT)
    assert str(caught.value).startswith(
        f"list nodes at cluster scope: cannot reach the Kubernetes API at {host}"
    )
    assert "Connection refused" in str(caught.value)
    assert len(sleeps.delays) == 2


def test_a_server_answering_garbage_is_a_bad_response(kube_emulator):
    garbage = Answer(200, b"<html>a proxy's login page</html>")
    kube_emulator.after_request = lambda request, answer: garbage
    with pytest.raises(
        SourceBadResponse, match="list nodes at cluster scope: the answer is not JSON"
    ):
        _source(kube_emulator).snapshot(AT)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"retries": -1}, "retries"),
        ({"request_timeout_s": 0}, "request_timeout_s"),
        ({"backoff_initial_s": 5, "backoff_max_s": 1}, "backoff"),
    ],
)
def test_bad_retry_policies_are_config_errors(options, problem):
    with pytest.raises(ConfigError, match=problem):
        RetryPolicy(**options)


def test_bad_read_options_are_config_errors():
    with pytest.raises(ConfigError, match="page_size"):
        ClusterReadOptions(page_size=0)


def test_credentials_that_cannot_load_are_config_errors(tmp_path):
    missing = tmp_path / "kubeconfig"
    with pytest.raises(ConfigError, match=f"kubeconfig {missing}, context prod"):
        connect(Credentials(kubeconfig=str(missing), context="prod"))


def test_a_kubeconfig_and_context_are_honoured(tmp_path, kube_emulator):
    kube_emulator.add_all(_pod_objects(2))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "emu", "cluster": {"server": kube_emulator.url}},
                    {"name": "other", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}},
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "emulated", "context": {"cluster": "emu", "user": "u"}},
                    {"name": "elsewhere", "context": {"cluster": "other", "user": "u"}},
                ],
                "current-context": "elsewhere",
            }
        )
    )
    source = KubernetesClusterSource(
        connect(Credentials(kubeconfig=str(kubeconfig), context="emulated"))
    )
    try:
        assert len(source.snapshot(AT).pods) == 2
    finally:
        source.close()


def test_in_cluster_config_outside_a_cluster_is_a_config_error(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="in-cluster service account"):
        connect(Credentials(in_cluster=True))


def test_a_malformed_object_names_the_list_object_and_field(kube_emulator):
    pod = _pod_objects(1)[0]
    pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "one"
    kube_emulator.add(pod)
    with pytest.raises(SourceBadResponse) as caught:
        _source(kube_emulator).snapshot(AT)
    assert str(caught.value) == (
        f"list pods at {kube_emulator.url}: pod ns-0/p-0000: spec.containers[0].resources"
        ".limits['nvidia.com/gpu']: malformed quantity 'one'; expected a number with an "
        "optional suffix (m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei) or exponent (1e3)"
    )
