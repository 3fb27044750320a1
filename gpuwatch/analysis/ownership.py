"""Resolve the workload that owns a pod, and the team that pays for it.

Workloads are named ``Kind/namespace/name`` at the top of the ownerReferences chain:
Pod -> ReplicaSet -> Deployment, Pod -> Job -> CronJob, Pod -> PyTorchJob,
Pod -> StatefulSet -> Notebook. Where a link is missing from the state (a snapshot
without ReplicaSets) the chain stops at the last known owner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from gpuwatch.model.cluster import ClusterState, Controller, Pod
from gpuwatch.model.findings import GpuHolder
from gpuwatch.model.metrics import PodRef

_MAX_DEPTH = 16  # ownerReferences cannot legally cycle, but a bad snapshot could


class OwnerIndex:
    def __init__(self, controllers: Iterable[Controller]) -> None:
        self._by_key = {(c.kind, c.namespace, c.name): c for c in controllers}

    def workload_of(self, pod: Pod) -> str | None:
        """``Kind/namespace/name`` of the pod's top owner; None for a bare pod."""
        owner = pod.owner
        if owner is None:
            return None
        kind, name = owner.kind, owner.name
        for _ in range(_MAX_DEPTH):
            controller = self._by_key.get((kind, pod.namespace, name))
            if controller is None or controller.owner is None:
                break
            kind, name = controller.owner.kind, controller.owner.name
        return f"{kind}/{pod.namespace}/{name}"


def team_of(
    pod: Pod,
    team_label: str | None,
    namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """The pod's team label when configured and present, else its namespace's team
    label, else the namespace itself."""
    if team_label:
        if pod.labels.get(team_label):
            return pod.labels[team_label]
        from_namespace = (namespace_labels or {}).get(pod.namespace, {}).get(team_label)
        if from_namespace:
            return from_namespace
    return pod.namespace


def exporter_holders(
    pods: Sequence[PodRef], cluster: ClusterState, team_label: str | None
) -> list[GpuHolder]:
    """The exporter's pods as holders: workload and team from the cluster as it is at
    the end of the period; a pod gone by then keeps its namespace, with no workload,
    and its namespace's team."""
    by_key = {(p.namespace, p.name): p for p in cluster.pods}
    owners = OwnerIndex(cluster.controllers)
    namespace_labels = {ns.name: ns.labels for ns in cluster.namespaces}
    out = []
    for ref in pods:
        pod = by_key.get((ref.namespace, ref.name))
        workload = owners.workload_of(pod) if pod is not None else None
        team = _team(ref, pod, team_label, namespace_labels)
        out.append(GpuHolder(ref.namespace, ref.name, workload, team))
    return out


def _team(
    ref: PodRef,
    pod: Pod | None,
    team_label: str | None,
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> str:
    if pod is not None:
        return team_of(pod, team_label, namespace_labels)
    if team_label and namespace_labels.get(ref.namespace, {}).get(team_label):
        return namespace_labels[ref.namespace][team_label]
    return ref.namespace
