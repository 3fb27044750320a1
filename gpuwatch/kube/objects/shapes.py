"""The raw shapes of the Kubernetes objects gpuwatch reads, as the API serves them.

Only the fields gpuwatch reads or writes are described. Every field is optional
(``total=False``) because real objects omit what is empty: an absent ``resources``, a pod
the API has not reported on yet (no ``status``), a node without taints. The decoders do
not trust these types (the JSON comes from a server or a file); they describe what a
well-formed object looks like, and the encoders produce exactly that.
"""

from __future__ import annotations

from typing import Any, TypedDict


class OwnerReference(TypedDict, total=False):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool
    blockOwnerDeletion: bool


class ObjectMeta(TypedDict, total=False):
    name: str
    generateName: str
    namespace: str
    uid: str
    resourceVersion: str
    creationTimestamp: str
    deletionTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[OwnerReference]
    managedFields: list[dict[str, Any]]


class ResourceRequirements(TypedDict, total=False):
    requests: dict[str, str]
    limits: dict[str, str]


class Container(TypedDict, total=False):
    name: str
    image: str
    resources: ResourceRequirements
    restartPolicy: str
    """``Always`` on an init container makes it a sidecar (Kubernetes 1.28+)."""


class PodSpec(TypedDict, total=False):
    nodeName: str
    volumes: list[dict[str, Any]]
    nodeSelector: dict[str, str]
    containers: list[Container]
    initContainers: list[Container]
    overhead: dict[str, str]
    """Added by the RuntimeClass admission controller (Kata, gVisor...)."""
    resources: ResourceRequirements
    """Pod-level resources (Kubernetes 1.32+, PodLevelResources)."""


class ContainerStateTerminated(TypedDict, total=False):
    exitCode: int
    reason: str
    startedAt: str
    finishedAt: str


class ContainerState(TypedDict, total=False):
    running: dict[str, Any]
    waiting: dict[str, Any]
    terminated: ContainerStateTerminated


class ContainerStatus(TypedDict, total=False):
    name: str
    state: ContainerState
    lastState: ContainerState
    ready: bool
    restartCount: int


class PodStatus(TypedDict, total=False):
    phase: str
    startTime: str
    hostIP: str
    podIP: str
    conditions: list[dict[str, Any]]
    containerStatuses: list[ContainerStatus]
    initContainerStatuses: list[ContainerStatus]


class KubePod(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: PodSpec
    status: PodStatus


class KubeTaint(TypedDict, total=False):
    key: str
    value: str
    effect: str
    timeAdded: str


class NodeSpec(TypedDict, total=False):
    taints: list[KubeTaint]
    unschedulable: bool
    providerID: str


class NodeStatus(TypedDict, total=False):
    capacity: dict[str, str]
    allocatable: dict[str, str]
    conditions: list[dict[str, Any]]
    nodeInfo: dict[str, str]


class KubeNode(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: NodeSpec
    status: NodeStatus


class KubeObject(TypedDict, total=False):
    """Any other object: an owner (ReplicaSet, Job, PyTorchJob...) as gpuwatch reads it."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: dict[str, Any]
    status: dict[str, Any]


# ``continue`` is a Python keyword, hence the functional form.
ListMeta = TypedDict(
    "ListMeta",
    {"resourceVersion": str, "continue": str, "remainingItemCount": int},
    total=False,
)


class KubeList(TypedDict, total=False):
    """A list as the API serves it (``PodList``...) or as kubectl prints it (``List``)."""

    apiVersion: str
    kind: str
    metadata: ListMeta
    items: list[dict[str, Any]]
