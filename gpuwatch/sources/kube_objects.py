"""Translation between raw Kubernetes JSON objects and gpuwatch's cluster types.

Two sources read the same JSON: the Kubernetes API (``sources/kubernetes.py``) and a
``kubectl get -o json`` file (``sources/snapshot_file.py``). Both hand plain dicts, as
the API serves them, to the functions here, so that the Kubernetes semantics gpuwatch
depends on are written and tested once and no client model (``V1Pod``) crosses the
seam. The shapes read are described by the ``TypedDict``s below; every field is
optional because real objects omit what is empty, and anything of the wrong type is an
error that names the object and the field.

The semantics kept here:

- quantities (``8``, ``500m``, ``768Gi``, ``1e3``) as the API machinery parses them;
- a pod's effective requests as the scheduler computes them: per resource, the larger
  of (app containers + sidecars) and the peak of the init containers, plus the pod's
  overhead; a container limit stands for an omitted request, as API defaulting does
  (extended resources such as ``nvidia.com/gpu`` are usually given only as limits);
- renamed time-slicing resources (``nvidia.com/gpu.shared``) folded into the resource
  they rename, so that ``gpu_request_kind`` and GPU counting see them; a node's
  renamed capacity counts ``nvidia.com/gpu.replicas`` slices per physical GPU, so it is
  divided back. A time-sliced pod therefore reads as holding one whole GPU, which is
  what the scheduler believes too;
- the controlling owner (``ownerReferences[].controller: true``) of pods and owners.

It also holds the inverse (domain types -> ``kubectl get -o json`` shaped objects), so
that tests and benchmarks can feed one cluster to every source and compare what comes
back.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, TypedDict

from gpuwatch.model.cluster import (
    WHOLE_GPU_RESOURCE,
    ClusterState,
    Controller,
    Namespace,
    Node,
    OwnerRef,
    Pod,
    Taint,
)
from gpuwatch.model.errors import SourceBadResponse

# --- raw shapes, as the API serves them (only what gpuwatch reads) ------------------------


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


# --- constants ------------------------------------------------------------------------------

GPU_RESOURCE_ALIASES: Mapping[str, str] = MappingProxyType(
    {"nvidia.com/gpu.shared": WHOLE_GPU_RESOURCE}
)
"""Renamed resource -> the GPU resource it stands for. The NVIDIA device plugin's
time-slicing and MPS sharing with ``renameByDefault: true`` advertise
``nvidia.com/gpu.shared``; clusters that rename differently pass their own mapping."""

GPU_REPLICAS_LABEL = "nvidia.com/gpu.replicas"
"""Set by GPU feature discovery: time-slicing replicas advertised per physical GPU."""

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

# Kinds that own pods or other owners in the workloads gpuwatch attributes to.
OWNER_KINDS = frozenset(
    {"ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
    | {"ReplicationController", "PyTorchJob", "TFJob", "MPIJob", "Notebook"}
    | {"RayCluster", "RayJob"}
)

_UID_NAMESPACE = uuid.UUID("0b6c8f5e-2f6a-4c55-8d3c-7a0f4f3f9b21")

# --- quantities -----------------------------------------------------------------------------

# The API machinery's grammar: a signed decimal number, then an SI suffix, a binary
# suffix, or a decimal exponent (``1e3``). ``1E`` is one exa; ``1e`` is malformed.
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<exponent>[eE][+-]?[0-9]+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?"
)
_MULTIPLIERS: Mapping[str, Decimal] = MappingProxyType(
    {
        "": Decimal(1),
        "n": Decimal("1e-9"),
        "u": Decimal("1e-6"),
        "m": Decimal("1e-3"),
        "k": Decimal("1e3"),
        "M": Decimal("1e6"),
        "G": Decimal("1e9"),
        "T": Decimal("1e12"),
        "P": Decimal("1e15"),
        "E": Decimal("1e18"),
        "Ki": Decimal(2**10),
        "Mi": Decimal(2**20),
        "Gi": Decimal(2**30),
        "Ti": Decimal(2**40),
        "Pi": Decimal(2**50),
        "Ei": Decimal(2**60),
    }
)


def parse_quantity(value: object, where: str = "quantity") -> float:
    """A Kubernetes quantity (``"8"``, ``"500m"``, ``"768Gi"``, ``"1e3"``) as a float.

    ``where`` names the object and field for the error a malformed value raises
    (``SourceBadResponse``). JSON numbers are accepted as they are.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise SourceBadResponse(
            f"{where}: expected a Kubernetes quantity (a string such as 500m, 8, 768Gi), "
            f"got {type(value).__name__} {value!r}"
        )
    if isinstance(value, int | float):
        number = Decimal(value)
        if not number.is_finite():
            raise SourceBadResponse(f"{where}: quantity {value!r} is not a finite number")
        return float(number)
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise SourceBadResponse(
            f"{where}: malformed quantity {value!r}; expected a number with an optional "
            "suffix (m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei) or exponent (1e3)"
        )
    try:
        if match["exponent"]:
            number = Decimal(match["number"] + match["exponent"])
        else:
            number = Decimal(match["number"]) * _MULTIPLIERS[match["suffix"] or ""]
    except InvalidOperation as exc:  # e.g. an exponent too large for Decimal's context
        raise SourceBadResponse(f"{where}: malformed quantity {value!r}: {exc}") from exc
    return float(number)


def format_quantity(value: float) -> str:
    """A float as the canonical quantity string a Kubernetes object would carry."""
    if value == int(value):
        whole = int(value)
        for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
            step = int(_MULTIPLIERS[suffix])
            if whole and whole % step == 0:
                return f"{whole // step}{suffix}"
        return str(whole)
    milli = value * 1000
    if milli == int(milli):
        return f"{int(milli)}m"
    return repr(value)


# --- helpers for untrusted JSON ---------------------------------------------------------------


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SourceBadResponse(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _sequence(value: object, where: str) -> Sequence[Any]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise SourceBadResponse(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _string_map(value: object, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, item in _mapping(value, where).items():
        if not isinstance(item, str):
            raise SourceBadResponse(
                f"{where}[{key!r}]: expected a string, got {type(item).__name__}"
            )
        out[key] = item
    return out


def _string(value: object, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SourceBadResponse(f"{where}: expected a string, got {type(value).__name__}")
    return value


def parse_time(value: object, where: str) -> datetime | None:
    """An RFC 3339 timestamp (``2026-11-24T02:00:00Z``) as an aware datetime; None if absent."""
    text = _string(value, where)
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise SourceBadResponse(
            f"{where}: malformed timestamp {text!r}; expected RFC 3339 such as 2026-11-24T02:00:00Z"
        ) from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC, whole seconds as Kubernetes writes them (fractions kept if any)."""
    utc = value.astimezone(UTC)
    spec = "seconds" if utc.microsecond == 0 else "microseconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def _identity(obj: Mapping[str, Any], what: str, namespaced: bool) -> tuple[str, str, str]:
    """(namespace, name, description) of an object; raises when it has no name."""
    meta = _mapping(obj.get("metadata"), f"{what}: metadata")
    name = _string(meta.get("name"), f"{what}: metadata.name")
    if not name:
        raise SourceBadResponse(f"{what} without metadata.name")
    # An object of a namespaced kind that omits its namespace lives in ``default``, as
    # ``kubectl apply`` would place it.
    namespace = _string(meta.get("namespace"), f"{what} {name}: metadata.namespace")
    if namespaced:
        namespace = namespace or "default"
        return namespace, name, f"{what} {namespace}/{name}"
    return namespace, name, f"{what} {name}"


def controlling_owner(meta: Mapping[str, Any], where: str) -> OwnerRef | None:
    """The owner reference with ``controller: true``; None for a bare object.

    Other owner references (garbage-collection parents without control) do not make a
    workload: a pod belongs to the one controller that manages it.
    """
    for i, ref in enumerate(_sequence(meta.get("ownerReferences"), f"{where}: ownerReferences")):
        at = f"{where}: ownerReferences[{i}]"
        ref_map = _mapping(ref, at)
        if ref_map.get("controller") is True:
            kind = _string(ref_map.get("kind"), f"{at}.kind")
            name = _string(ref_map.get("name"), f"{at}.name")
            if not kind or not name:
                raise SourceBadResponse(f"{at}: a controller reference needs kind and name")
            return OwnerRef(kind, name)
    return None


# --- resources ------------------------------------------------------------------------------


def _add(total: dict[str, float], more: Mapping[str, float]) -> None:
    for name, qty in more.items():
        total[name] = total.get(name, 0.0) + qty


def _max(total: dict[str, float], other: Mapping[str, float]) -> None:
    for name, qty in other.items():
        if qty > total.get(name, float("-inf")):
            total[name] = qty


def _quantities(value: object, where: str) -> dict[str, float]:
    return {
        name: parse_quantity(qty, f"{where}[{name!r}]")
        for name, qty in _mapping(value, where).items()
    }


def container_requests(container: Mapping[str, Any], where: str) -> dict[str, float]:
    """A container's requests, its limits standing in for requests it omits.

    API defaulting copies a limit into an unset request; objects that never went through
    the API server (a manifest, some test fixtures) may not have had that done.
    """
    resources = _mapping(container.get("resources"), f"{where}.resources")
    requests = _quantities(resources.get("requests"), f"{where}.resources.requests")
    for name, qty in _quantities(resources.get("limits"), f"{where}.resources.limits").items():
        requests.setdefault(name, qty)
    return requests


def effective_requests(
    spec: Mapping[str, Any],
    where: str = "pod",
    gpu_aliases: Mapping[str, str] = GPU_RESOURCE_ALIASES,
) -> dict[str, float]:
    """A pod's requests as the scheduler sums them (``resourcehelper.PodRequests``).

    Per resource: max(sum of app containers + sidecars, peak of init containers) +
    overhead. Init containers run one at a time, each next to the sidecars (init
    containers with ``restartPolicy: Always``) started before it; sidecars then keep
    running beside the app containers.
    """
    total: dict[str, float] = {}
    for i, container in enumerate(_sequence(spec.get("containers"), f"{where}: spec.containers")):
        at = f"{where}: spec.containers[{i}]"
        _add(total, container_requests(_mapping(container, at), at))

    sidecars: dict[str, float] = {}
    init_peak: dict[str, float] = {}
    inits = _sequence(spec.get("initContainers"), f"{where}: spec.initContainers")
    for i, container in enumerate(inits):
        at = f"{where}: spec.initContainers[{i}]"
        body = _mapping(container, at)
        requests = container_requests(body, at)
        if body.get("restartPolicy") == "Always":
            _add(sidecars, requests)
            _add(total, requests)
            _max(init_peak, sidecars)
        else:
            running = dict(requests)
            _add(running, sidecars)
            _max(init_peak, running)
    _max(total, init_peak)

    # Pod-level resources, where set, replace the containers' sum for those resources.
    pod_level = _mapping(spec.get("resources"), f"{where}: spec.resources")
    if pod_level:
        total.update(container_requests(spec, f"{where}: spec"))

    _add(total, _quantities(spec.get("overhead"), f"{where}: spec.overhead"))
    return fold_gpu_aliases(total, gpu_aliases)


def fold_gpu_aliases(
    resources: Mapping[str, float], gpu_aliases: Mapping[str, str], divisor: float = 1.0
) -> dict[str, float]:
    """``resources`` with each renamed GPU resource added to the one it renames."""
    out: dict[str, float] = {}
    for name, qty in resources.items():
        target = gpu_aliases.get(name)
        if target is None:
            out[name] = out.get(name, 0.0) + qty
        else:
            out[target] = out.get(target, 0.0) + qty / divisor
    return out


# --- objects -> domain --------------------------------------------------------------------


def node_from_kube(
    obj: Mapping[str, Any], gpu_aliases: Mapping[str, str] = GPU_RESOURCE_ALIASES
) -> Node:
    """A Node from ``kubectl get node -o json``; no pool label is fine (pool is None)."""
    _, name, what = _identity(obj, "node", namespaced=False)
    meta = _mapping(obj.get("metadata"), f"{what}: metadata")
    spec = _mapping(obj.get("spec"), f"{what}: spec")
    status = _mapping(obj.get("status"), f"{what}: status")
    labels = _string_map(meta.get("labels"), f"{what}: metadata.labels")

    taints = []
    for i, raw in enumerate(_sequence(spec.get("taints"), f"{what}: spec.taints")):
        at = f"{what}: spec.taints[{i}]"
        taint = _mapping(raw, at)
        key = _string(taint.get("key"), f"{at}.key")
        if not key:
            raise SourceBadResponse(f"{at}: a taint needs a key")
        value = _string(taint.get("value"), f"{at}.value")
        effect = _string(taint.get("effect"), f"{at}.effect") or "NoSchedule"
        taints.append(Taint(key, value, effect))

    # capacity is what the node has; allocatable subtracts system reservations. GPUs are
    # never reserved, and a node that reports only allocatable still says what it has.
    raw_capacity = status.get("capacity") or status.get("allocatable")
    capacity = _quantities(raw_capacity, f"{what}: status.capacity")
    if any(resource in gpu_aliases for resource in capacity):
        replicas = _replicas(labels.get(GPU_REPLICAS_LABEL, ""))
        capacity = fold_gpu_aliases(capacity, gpu_aliases, divisor=replicas)

    return Node(
        name=name,
        labels=labels,
        taints=tuple(taints),
        capacity=capacity,
        unschedulable=spec.get("unschedulable") is True,
        created_at=parse_time(meta.get("creationTimestamp"), f"{what}: creationTimestamp"),
        annotations=_string_map(meta.get("annotations"), f"{what}: metadata.annotations"),
    )


def _replicas(label: str) -> float:
    try:
        replicas = int(label)
    except ValueError:
        return 1.0
    return float(replicas) if replicas > 0 else 1.0


def pod_from_kube(
    obj: Mapping[str, Any], gpu_aliases: Mapping[str, str] = GPU_RESOURCE_ALIASES
) -> Pod:
    """A Pod with its effective requests, controlling owner and lifetime."""
    namespace, name, what = _identity(obj, "pod", namespaced=True)
    meta = _mapping(obj.get("metadata"), f"{what}: metadata")
    spec = _mapping(obj.get("spec"), f"{what}: spec")
    status = _mapping(obj.get("status"), f"{what}: status")
    # A pod the API has not reported on yet (no status) has not started: Pending.
    phase = _string(status.get("phase"), f"{what}: status.phase") or "Pending"
    node_name = _string(spec.get("nodeName"), f"{what}: spec.nodeName") or None

    finished_at: datetime | None = None
    if phase in ("Succeeded", "Failed"):
        # The pod ended when its last container did.
        statuses = _sequence(status.get("containerStatuses"), f"{what}: containerStatuses")
        for i, raw in enumerate(statuses):
            at = f"{what}: status.containerStatuses[{i}]"
            state = _mapping(_mapping(raw, at).get("state"), f"{at}.state")
            terminated = _mapping(state.get("terminated"), f"{at}.state.terminated")
            ended = parse_time(terminated.get("finishedAt"), f"{at}.state.terminated.finishedAt")
            if ended is not None and (finished_at is None or ended > finished_at):
                finished_at = ended

    return Pod(
        namespace=namespace,
        name=name,
        node_name=node_name,
        phase=phase,
        requests=effective_requests(spec, what, gpu_aliases),
        labels=_string_map(meta.get("labels"), f"{what}: metadata.labels"),
        annotations=_string_map(meta.get("annotations"), f"{what}: metadata.annotations"),
        owner=controlling_owner(meta, what),
        uid=_string(meta.get("uid"), f"{what}: metadata.uid"),
        started_at=parse_time(status.get("startTime"), f"{what}: status.startTime"),
        finished_at=finished_at,
        node_selector=_string_map(spec.get("nodeSelector"), f"{what}: spec.nodeSelector"),
        local_storage=any(
            isinstance(volume, Mapping) and ("hostPath" in volume or "emptyDir" in volume)
            for volume in _sequence(spec.get("volumes"), f"{what}: spec.volumes")
        ),
        images=tuple(
            image
            for c in _sequence(spec.get("containers"), f"{what}: spec.containers")
            if (image := _string(_mapping(c, f"{what}: containers").get("image"), what))
        ),
    )


def controller_from_kube(obj: Mapping[str, Any], kind: str | None = None) -> Controller:
    """Any owner (ReplicaSet, Job, PyTorchJob, Notebook...) with its own controlling owner.

    ``kind`` is for lists served by the API, whose items do not repeat their kind.
    """
    kind = kind or _string(obj.get("kind"), "object: kind")
    if not kind:
        raise SourceBadResponse("object without kind")
    namespace, name, what = _identity(obj, kind, namespaced=True)
    meta = _mapping(obj.get("metadata"), f"{what}: metadata")
    return Controller(
        kind=kind,
        namespace=namespace,
        name=name,
        owner=controlling_owner(meta, what),
        labels=_string_map(meta.get("labels"), f"{what}: metadata.labels"),
        annotations=_string_map(meta.get("annotations"), f"{what}: metadata.annotations"),
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


# --- domain -> objects (the inverse) --------------------------------------------------------


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
    meta: ObjectMeta = {
        "name": pod.name,
        "namespace": pod.namespace,
        "uid": pod.uid or object_uid("Pod", pod.namespace, pod.name),
    }
    if pod.labels:
        meta["labels"] = dict(pod.labels)
    if pod.annotations:
        meta["annotations"] = dict(pod.annotations)
    if pod.owner is not None:
        meta["ownerReferences"] = _owner_references(pod.owner, pod.namespace)
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
    meta: ObjectMeta = {
        "name": controller.name,
        "namespace": controller.namespace,
        "uid": object_uid(controller.kind, controller.namespace, controller.name),
    }
    if controller.labels:
        meta["labels"] = dict(controller.labels)
    if controller.annotations:
        meta["annotations"] = dict(controller.annotations)
    if controller.owner is not None:
        meta["ownerReferences"] = _owner_references(controller.owner, controller.namespace)
    return {
        "apiVersion": api_version_of(controller.kind),
        "kind": controller.kind,
        "metadata": meta,
        "spec": {},
        "status": {},
    }


def namespace_from_kube(obj: Mapping[str, Any]) -> Namespace:
    meta = _mapping(obj.get("metadata"), "Namespace.metadata")
    name = _string(meta.get("name"), "Namespace.metadata.name")
    return Namespace(name, _string_map(meta.get("labels"), f"Namespace {name}: metadata.labels"))


def namespace_to_kube(namespace: Namespace) -> dict[str, Any]:
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
