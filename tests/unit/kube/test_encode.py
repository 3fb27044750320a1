"""Domain types -> Kubernetes JSON: what is encoded decodes back to the same object."""

from __future__ import annotations

from datetime import UTC, datetime

from gpuwatch.config.settings import SimulatorSettings
from gpuwatch.kube.objects.decode import (
    controller_from_kube,
    namespace_from_kube,
    node_from_kube,
    pod_from_kube,
)
from gpuwatch.kube.objects.encode import (
    controller_to_kube,
    node_to_kube,
    pod_to_kube,
    state_to_kube,
)
from gpuwatch.model.cluster import ClusterState, Controller, Node, OwnerRef, Pod, Taint
from gpuwatch.sources.simulator import SimulatedCluster
from gpuwatch.sources.simulator.layout import SHOWCASE_AT

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
