"""One contract, every ClusterSource: the simulator, a kubectl snapshot file, the API.

The simulated cluster is the reference. Its state is written out as Kubernetes objects
(``gpuwatch.kube.objects.state_to_kube``), loaded into a ``kubectl get -o json`` file and
into the emulated API server, and read back through each source; all three must yield the
same nodes, the same pods with the same effective requests, and owners that resolve to
the same workloads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from gpuwatch.analysis.ownership import OwnerIndex
from gpuwatch.config.settings import SimulatorSettings
from gpuwatch.kube.client import api_for
from gpuwatch.kube.objects import kube_list, state_to_kube
from gpuwatch.model.cluster import ClusterState, gpu_request_kind
from gpuwatch.sources.base import ClusterSource
from gpuwatch.sources.kubernetes import ClusterReadOptions, KubernetesClusterSource
from gpuwatch.sources.simulator import SimulatedCluster, SimulatorClusterSource
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from gpuwatch.sources.snapshot_file import SnapshotFileClusterSource
from tests.integration.kube_emulator import KUBEFLOW_RESOURCES, KubeEmulator

pytestmark = pytest.mark.integration

AT = SHOWCASE_AT
# Two blocks of the scenario: every kind of pod and owner, twice, and enough objects that
# the API source needs several pages at the page size used below.
GPUS = 128


@pytest.fixture(scope="module")
def reference() -> SimulatedCluster:
    return SimulatedCluster(SimulatorSettings(gpus=GPUS), end=AT)


def _simulator(cluster: SimulatedCluster, tmp: Path) -> Iterator[ClusterSource]:
    yield SimulatorClusterSource(cluster)


def _snapshot_file(cluster: SimulatedCluster, tmp: Path) -> Iterator[ClusterSource]:
    path = tmp / "cluster.json"
    path.write_text(json.dumps(kube_list(state_to_kube(cluster.state())), indent=2))
    yield SnapshotFileClusterSource(path)


def _kubernetes_api(cluster: SimulatedCluster, tmp: Path) -> Iterator[ClusterSource]:
    with KubeEmulator(deadline_s=30.0) as emulator:
        for resource in KUBEFLOW_RESOURCES:
            emulator.install(resource)
        emulator.add_all(state_to_kube(cluster.state()))
        yield KubernetesClusterSource(api_for(emulator.url), ClusterReadOptions(page_size=17))
        pods_pages = emulator.requests_to("/api/v1/pods")
        if pods_pages:  # one page of pods per snapshot would not exercise pagination
            assert len(pods_pages) >= 2 * sum(1 for r in pods_pages if "continue" not in r.query)
        assert not emulator.exhausted


SOURCES: dict[str, Callable[[SimulatedCluster, Path], Iterator[ClusterSource]]] = {
    "simulator": _simulator,
    "snapshot-file": _snapshot_file,
    "kubernetes": _kubernetes_api,
}


@pytest.fixture(params=sorted(SOURCES))
def source(request, reference, tmp_path) -> Iterator[ClusterSource]:
    yield from SOURCES[request.param](reference, tmp_path)


def _sorted(state: ClusterState) -> ClusterState:
    """The same state in a canonical order (the API serves objects sorted by key)."""
    return ClusterState(
        observed_at=state.observed_at,
        nodes=tuple(sorted(state.nodes, key=lambda n: n.name)),
        pods=tuple(sorted(state.pods, key=lambda p: p.key)),
        controllers=tuple(sorted(state.controllers, key=lambda c: (c.kind, c.namespace, c.name))),
    )


def test_it_is_a_named_cluster_source(source):
    assert isinstance(source, ClusterSource)
    assert isinstance(source.name, str) and source.name


def test_the_snapshot_is_one_aware_instant(source):
    state = source.snapshot(AT)
    assert isinstance(state, ClusterState)
    assert isinstance(state.observed_at, datetime) and state.observed_at.tzinfo is not None


def test_same_nodes(source, reference):
    got, want = _sorted(source.snapshot(AT)), _sorted(reference.state())
    assert got.nodes == want.nodes


def test_same_pods_with_the_same_effective_requests(source, reference):
    got, want = _sorted(source.snapshot(AT)), _sorted(reference.state())
    assert [p.key for p in got.pods] == [p.key for p in want.pods]
    for mine, theirs in zip(got.pods, want.pods, strict=True):
        assert mine.requests == theirs.requests, mine.key
        assert gpu_request_kind(mine.requests) == gpu_request_kind(theirs.requests)
    assert got.pods == want.pods  # and everything else: phase, node, labels, times


def test_same_owners_resolving_to_the_same_workloads(source, reference):
    got, want = source.snapshot(AT), reference.state()
    assert _sorted(got).controllers == _sorted(want).controllers
    mine, theirs = OwnerIndex(got.controllers), OwnerIndex(want.controllers)
    workloads = {p.key: mine.workload_of(p) for p in got.pods}
    assert workloads == {p.key: theirs.workload_of(p) for p in want.pods}
    assert "Notebook/research/alice" in workloads.values()  # Pod -> StatefulSet -> Notebook
    assert "CronJob/vision/nightly-eval" in workloads.values()  # Pod -> Job -> CronJob


def test_pending_gpu_pods_are_included(source):
    pending = [p for p in source.snapshot(AT).pods if p.node_name is None]
    assert pending and all(p.phase == "Pending" for p in pending)
    assert all(gpu_request_kind(p.requests) == "whole" for p in pending)


def test_reading_twice_gives_the_same_state(source):
    first, second = source.snapshot(AT), source.snapshot(AT)
    assert _sorted(first).pods == _sorted(second).pods
    assert _sorted(first).nodes == _sorted(second).nodes
