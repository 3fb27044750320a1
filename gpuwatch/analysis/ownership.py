"""Resolve the workload that owns a pod, and the team that pays for it.

Workloads are named ``Kind/namespace/name`` at the top of the ownerReferences chain:
Pod -> ReplicaSet -> Deployment, Pod -> Job -> CronJob, Pod -> PyTorchJob,
Pod -> StatefulSet -> Notebook. Where a link is missing from the state (a snapshot
without ReplicaSets) the chain stops at the last known owner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gpuwatch.model.cluster import Controller, Pod

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
