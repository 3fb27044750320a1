"""gpuwatch's cluster types -> Kubernetes JSON, as ``kubectl get -o json`` prints it.

The inverse of ``decode``, so that one cluster can be fed to every cluster adapter and
what comes back compared: tests and benchmarks write a ``ClusterState`` as objects for
the emulated API server and for a ``kubectl`` file, and ``gpuwatch simulate`` writes the
simulated cluster for anyone to load. Only the fields gpuwatch reads are written, in the
form the API serves them (canonical quantities, RFC 3339 times in UTC, empty fields
omitted), and decoding them gives back the object that was encoded.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from gpuwatch.kube.objects.fields import format_time
from gpuwatch.kube.objects.quantity import format_quantity
from gpuwatch.kube.objects.shapes import (
    Container,
    KubeList,
    KubeNode,
    KubeObject,
    KubePod,
    NodeSpec,
    ObjectMeta,
    OwnerReference,
    PodSpec,
    PodStatus,
)
from gpuwatch.model.cluster import ClusterState, Controller, Namespace, Node, OwnerRef, Pod

API_VERSIONS: Mapping[str, str] = MappingProxyType(
    {
        "Node": "v1",
        "Pod": "v1",
        "ReplicationController": "v1",
        "ReplicaSet": "apps/v1",
        "Deployment": "apps/v1",
        "StatefulSet": "apps/v1",
        "DaemonSet": "apps/v1",
        "Job": "batch/v1",
        "CronJob": "batch/v1",
        "PyTorchJob": "kubeflow.org/v1",
        "TFJob": "kubeflow.org/v1",
        "MPIJob": "kubeflow.org/v2beta1",
        "Notebook": "kubeflow.org/v1",
        "RayCluster": "ray.io/v1",
        "RayJob": "ray.io/v1",
    }
)
"""apiVersion of the kinds gpuwatch commonly meets, for the inverse translation."""

# Fixed, so that the same object gets the same uid in every run.
_UID_NAMESPACE = uuid.UUID("0b6c8f5e-2f6a-4c55-8d3c-7a0f4f3f9b21")


def object_uid(kind: str, namespace: str, name: str) -> str:
    """A stable uid for an object that has none (the inverse needs owner uids)."""
    return str(uuid.uuid5(_UID_NAMESPACE, f"{kind}/{namespace}/{name}"))


def api_version_of(kind: str) -> str:
    """The apiVersion of a kind gpuwatch knows; ``gpuwatch.io/v1`` for any other."""
    return API_VERSIONS.get(kind, "gpuwatch.io/v1")


def _owner_references(owner: OwnerRef | None, namespace: str) -> list[OwnerReference]:
    if owner is None:
        return []
    return [
        {
            "apiVersion": api_version_of(owner.kind),
            "kind": owner.kind,
            "name": owner.name,
            "uid": object_uid(owner.kind, namespace, owner.name),
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def _namespaced_meta(
    namespace: str,
    name: str,
    uid: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    owner: OwnerRef | None,
) -> ObjectMeta:
    """A namespaced object's metadata; as the API does, empty fields are left out."""
    meta: ObjectMeta = {"name": name, "namespace": namespace, "uid": uid}
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    if owner is not None:
        meta["ownerReferences"] = _owner_references(owner, namespace)
    return meta


def node_to_kube(node: Node) -> KubeNode:
    """A Node as ``kubectl get node -o json`` prints it (the fields gpuwatch reads)."""
    meta: ObjectMeta = {
        "name": node.name,
        "uid": object_uid("Node", "", node.name),
        "labels": dict(node.labels),
    }
    if node.created_at is not None:
        meta["creationTimestamp"] = format_time(node.created_at)
    if node.annotations:
        meta["annotations"] = dict(node.annotations)
    quantities = {name: format_quantity(qty) for name, qty in node.capacity.items()}
    spec: NodeSpec = {}
    if node.taints:
        spec["taints"] = [{"key": t.key, "value": t.value, "effect": t.effect} for t in node.taints]
        for taint in spec["taints"]:
            if not taint["value"]:
                del taint["value"]  # the API omits empty taint values
    if node.unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": meta,
        "spec": spec,
        "status": {"capacity": quantities, "allocatable": dict(quantities)},
    }


def pod_to_kube(pod: Pod) -> KubePod:
    """A Pod with one container holding its effective requests (GPUs also as limits,
    since extended resources must have limits equal to requests)."""
    uid = pod.uid or object_uid("Pod", pod.namespace, pod.name)
    meta = _namespaced_meta(pod.namespace, pod.name, uid, pod.labels, pod.annotations, pod.owner)
    requests = {name: format_quantity(qty) for name, qty in pod.requests.items()}
    limits = {name: qty for name, qty in requests.items() if "/" in name}
    container: Container = {"name": "main"}
    if pod.images:  # the first container carries the requests; sidecars follow
        container["image"] = pod.images[0]
    if requests:
        container["resources"] = {"requests": requests}
        if limits:
            container["resources"]["limits"] = limits
    sidecars: list[Container] = [
        {"name": f"sidecar-{i}", "image": image} for i, image in enumerate(pod.images[1:], 1)
    ]
    spec: PodSpec = {"containers": [container, *sidecars]}
    if pod.node_name:
        spec["nodeName"] = pod.node_name
    if pod.node_selector:
        spec["nodeSelector"] = dict(pod.node_selector)
    if pod.local_storage:
        spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    status: PodStatus = {"phase": pod.phase}
    if pod.started_at is not None:
        status["startTime"] = format_time(pod.started_at)
    if pod.finished_at is not None:
        status["containerStatuses"] = [
            {
                "name": "main",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": 0 if pod.phase == "Succeeded" else 1,
                        "reason": "Completed" if pod.phase == "Succeeded" else "Error",
                        "finishedAt": format_time(pod.finished_at),
                    }
                },
            }
        ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def controller_to_kube(controller: Controller) -> KubeObject:
    """An owner (ReplicaSet, Job, PyTorchJob...) with its controlling owner reference."""
    meta = _namespaced_meta(
        controller.namespace,
        controller.name,
        object_uid(controller.kind, controller.namespace, controller.name),
        controller.labels,
        controller.annotations,
        controller.owner,
    )
    return {
        "apiVersion": api_version_of(controller.kind),
        "kind": controller.kind,
        "metadata": meta,
        "spec": {},
        "status": {},
    }


def namespace_to_kube(namespace: Namespace) -> dict[str, Any]:
    """A Namespace as ``kubectl get namespace -o json`` prints an active one."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace.name,
            "uid": object_uid("Namespace", "", namespace.name),
            "labels": dict(namespace.labels),
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def state_to_kube(state: ClusterState) -> list[dict[str, Any]]:
    """Every object of ``state`` as kubectl prints it: namespaces, nodes, owners, pods."""
    items: list[dict[str, Any]] = [namespace_to_kube(ns) for ns in state.namespaces]
    items.extend(dict(node_to_kube(n)) for n in state.nodes)
    items.extend(dict(controller_to_kube(c)) for c in state.controllers)
    items.extend(dict(pod_to_kube(p)) for p in state.pods)
    return items


def kube_list(items: Iterable[Mapping[str, Any]]) -> KubeList:
    """Items wrapped as ``kubectl get -o json`` wraps several kinds: a ``List``."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": [dict(item) for item in items],
    }
