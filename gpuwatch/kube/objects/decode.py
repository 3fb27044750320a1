"""Raw Kubernetes JSON -> gpuwatch's cluster types (``gpuwatch.model.cluster``).

Every cluster adapter hands the objects it reads, as plain dicts, to the functions here:
the Kubernetes API source a page at a time, the ``kubectl get -o json`` file source, and
whatever test or benchmark feeds either. A malformed field raises ``SourceBadResponse``
naming the object and the field (``fields``); requests and capacity are counted as the
scheduler counts them (``requests``).

A pod or owner belongs to its controlling owner (``ownerReferences[].controller:
true``); following that chain up to the workload is ``gpuwatch.analysis.ownership``'s
job, with the owners listed here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from gpuwatch.kube.objects.fields import (
    controlling_owner,
    object_identity,
    parse_time,
    read_mapping,
    read_sequence,
    read_string,
    read_string_map,
)
from gpuwatch.kube.objects.requests import (
    GPU_RESOURCE_ALIASES,
    effective_requests,
    node_capacity,
)
from gpuwatch.model.cluster import Controller, Namespace, Node, Pod, Taint
from gpuwatch.model.errors import SourceBadResponse

# Kinds that own pods or other owners in the workloads gpuwatch attributes to.
OWNER_KINDS = frozenset(
    {"ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
    | {"ReplicationController", "PyTorchJob", "TFJob", "MPIJob", "Notebook"}
    | {"RayCluster", "RayJob"}
)


def node_from_kube(
    obj: Mapping[str, Any], gpu_aliases: Mapping[str, str] = GPU_RESOURCE_ALIASES
) -> Node:
    """A Node from ``kubectl get node -o json``; no pool label is fine (pool is None)."""
    _, name, what = object_identity(obj, "node", namespaced=False)
    meta, spec, status = _sections(obj, what)
    labels = read_string_map(meta.get("labels"), f"{what}: metadata.labels")

    taints = []
    for i, raw in enumerate(read_sequence(spec.get("taints"), f"{what}: spec.taints")):
        at = f"{what}: spec.taints[{i}]"
        taint = read_mapping(raw, at)
        key = read_string(taint.get("key"), f"{at}.key")
        if not key:
            raise SourceBadResponse(f"{at}: a taint needs a key")
        value = read_string(taint.get("value"), f"{at}.value")
        effect = read_string(taint.get("effect"), f"{at}.effect") or "NoSchedule"
        taints.append(Taint(key, value, effect))

    return Node(
        name=name,
        labels=labels,
        taints=tuple(taints),
        capacity=node_capacity(status, labels, what, gpu_aliases),
        unschedulable=spec.get("unschedulable") is True,
        created_at=parse_time(meta.get("creationTimestamp"), f"{what}: creationTimestamp"),
        annotations=read_string_map(meta.get("annotations"), f"{what}: metadata.annotations"),
    )


def pod_from_kube(
    obj: Mapping[str, Any], gpu_aliases: Mapping[str, str] = GPU_RESOURCE_ALIASES
) -> Pod:
    """A Pod with its effective requests, controlling owner and lifetime."""
    namespace, name, what = object_identity(obj, "pod", namespaced=True)
    meta, spec, status = _sections(obj, what)
    # A pod the API has not reported on yet (no status) has not started: Pending.
    phase = read_string(status.get("phase"), f"{what}: status.phase") or "Pending"
    node_name = read_string(spec.get("nodeName"), f"{what}: spec.nodeName") or None

    finished_at: datetime | None = None
    if phase in ("Succeeded", "Failed"):
        # The pod ended when its last container did.
        statuses = read_sequence(status.get("containerStatuses"), f"{what}: containerStatuses")
        for i, raw in enumerate(statuses):
            at = f"{what}: status.containerStatuses[{i}]"
            state = read_mapping(read_mapping(raw, at).get("state"), f"{at}.state")
            terminated = read_mapping(state.get("terminated"), f"{at}.state.terminated")
            ended = parse_time(terminated.get("finishedAt"), f"{at}.state.terminated.finishedAt")
            if ended is not None and (finished_at is None or ended > finished_at):
                finished_at = ended

    return Pod(
        namespace=namespace,
        name=name,
        node_name=node_name,
        phase=phase,
        requests=effective_requests(spec, what, gpu_aliases),
        labels=read_string_map(meta.get("labels"), f"{what}: metadata.labels"),
        annotations=read_string_map(meta.get("annotations"), f"{what}: metadata.annotations"),
        owner=controlling_owner(meta, what),
        uid=read_string(meta.get("uid"), f"{what}: metadata.uid"),
        started_at=parse_time(status.get("startTime"), f"{what}: status.startTime"),
        finished_at=finished_at,
        node_selector=read_string_map(spec.get("nodeSelector"), f"{what}: spec.nodeSelector"),
        local_storage=any(
            isinstance(volume, Mapping) and ("hostPath" in volume or "emptyDir" in volume)
            for volume in read_sequence(spec.get("volumes"), f"{what}: spec.volumes")
        ),
        images=tuple(
            image
            for c in read_sequence(spec.get("containers"), f"{what}: spec.containers")
            if (image := read_string(read_mapping(c, f"{what}: containers").get("image"), what))
        ),
    )


def _sections(
    obj: Mapping[str, Any], what: str
) -> tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]:
    """An object's metadata, spec and status, each empty where the object omits it."""
    return (
        read_mapping(obj.get("metadata"), f"{what}: metadata"),
        read_mapping(obj.get("spec"), f"{what}: spec"),
        read_mapping(obj.get("status"), f"{what}: status"),
    )


def controller_from_kube(obj: Mapping[str, Any], kind: str | None = None) -> Controller:
    """Any owner (ReplicaSet, Job, PyTorchJob, Notebook...) with its own controlling owner.

    ``kind`` is for lists served by the API, whose items do not repeat their kind.
    """
    kind = kind or read_string(obj.get("kind"), "object: kind")
    if not kind:
        raise SourceBadResponse("object without kind")
    namespace, name, what = object_identity(obj, kind, namespaced=True)
    meta = read_mapping(obj.get("metadata"), f"{what}: metadata")
    return Controller(
        kind=kind,
        namespace=namespace,
        name=name,
        owner=controlling_owner(meta, what),
        labels=read_string_map(meta.get("labels"), f"{what}: metadata.labels"),
        annotations=read_string_map(meta.get("annotations"), f"{what}: metadata.annotations"),
    )


def owner_kinds_referenced(objects: Iterable[Mapping[str, Any]]) -> set[str]:
    """Kinds named by any controller reference among ``objects`` (lenient: skips junk)."""
    kinds: set[str] = set()
    for obj in objects:
        meta = obj.get("metadata")
        refs = meta.get("ownerReferences") if isinstance(meta, Mapping) else None
        for ref in refs if isinstance(refs, list) else ():
            if isinstance(ref, Mapping) and isinstance(ref.get("kind"), str):
                kinds.add(ref["kind"])
    return kinds


def namespace_from_kube(obj: Mapping[str, Any]) -> Namespace:
    """A Namespace with its labels (one of them may name the team that pays)."""
    meta = read_mapping(obj.get("metadata"), "Namespace.metadata")
    name = read_string(meta.get("name"), "Namespace.metadata.name")
    return Namespace(
        name, read_string_map(meta.get("labels"), f"Namespace {name}: metadata.labels")
    )
