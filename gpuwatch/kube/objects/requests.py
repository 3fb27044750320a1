"""The resources a pod holds and a node offers, as the Kubernetes scheduler counts them.

gpuwatch prices and attributes what the scheduler reserves, so it does the scheduler's
arithmetic rather than summing containers:

- a pod's effective requests (``resourcehelper.PodRequests``): per resource, the larger
  of (app containers + sidecars) and the peak of the init containers, plus the pod's
  overhead; pod-level resources, where set, replace the containers' sum;
- a container limit stands for an omitted request, as API defaulting does (extended
  resources such as ``nvidia.com/gpu`` are usually given only as limits);
- renamed time-slicing resources (``nvidia.com/gpu.shared``) are folded into the
  resource they rename, so that ``gpu_request_kind`` and GPU counting see them; a node's
  renamed capacity counts ``nvidia.com/gpu.replicas`` slices per physical GPU, so it is
  divided back. A time-sliced pod therefore reads as holding one whole GPU, which is
  what the scheduler believes too.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from gpuwatch.kube.objects.fields import read_mapping, read_sequence
from gpuwatch.kube.objects.quantity import parse_quantity
from gpuwatch.model.cluster import WHOLE_GPU_RESOURCE

GPU_RESOURCE_ALIASES: Mapping[str, str] = MappingProxyType(
    {"nvidia.com/gpu.shared": WHOLE_GPU_RESOURCE}
)
"""Renamed resource -> the GPU resource it stands for. The NVIDIA device plugin's
time-slicing and MPS sharing with ``renameByDefault: true`` advertise
``nvidia.com/gpu.shared``; clusters that rename differently pass their own mapping."""

GPU_REPLICAS_LABEL = "nvidia.com/gpu.replicas"
"""Set by GPU feature discovery: time-slicing replicas advertised per physical GPU."""


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
        for name, qty in read_mapping(value, where).items()
    }


def container_requests(container: Mapping[str, Any], where: str) -> dict[str, float]:
    """A container's requests, its limits standing in for requests it omits.

    API defaulting copies a limit into an unset request; objects that never went through
    the API server (a manifest, some test fixtures) may not have had that done.
    """
    resources = read_mapping(container.get("resources"), f"{where}.resources")
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
    for i, container in enumerate(
        read_sequence(spec.get("containers"), f"{where}: spec.containers")
    ):
        at = f"{where}: spec.containers[{i}]"
        _add(total, container_requests(read_mapping(container, at), at))

    sidecars: dict[str, float] = {}
    init_peak: dict[str, float] = {}
    inits = read_sequence(spec.get("initContainers"), f"{where}: spec.initContainers")
    for i, container in enumerate(inits):
        at = f"{where}: spec.initContainers[{i}]"
        body = read_mapping(container, at)
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
    pod_level = read_mapping(spec.get("resources"), f"{where}: spec.resources")
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


def node_capacity(
    status: Mapping[str, Any],
    labels: Mapping[str, str],
    where: str,
    gpu_aliases: Mapping[str, str] = GPU_RESOURCE_ALIASES,
) -> dict[str, float]:
    """A node's resources from its ``status``, time-sliced GPUs counted as physical GPUs.

    With time-slicing or MPS, the device plugin advertises ``replicas`` slices per GPU:
    under a new name (``nvidia.com/gpu.shared``, folded into ``nvidia.com/gpu`` here), or
    as ``nvidia.com/gpu`` itself when it does not rename. Either way the count is divided
    by ``nvidia.com/gpu.replicas``, so that a node with 4 GPUs shared 10 ways has 4."""
    # capacity is what the node has; allocatable subtracts system reservations. GPUs are
    # never reserved, and a node that reports only allocatable still says what it has.
    raw_capacity = status.get("capacity") or status.get("allocatable")
    capacity = _quantities(raw_capacity, f"{where}: status.capacity")
    replicas = _replicas(labels.get(GPU_REPLICAS_LABEL, ""))
    if any(resource in gpu_aliases for resource in capacity):
        return fold_gpu_aliases(capacity, gpu_aliases, divisor=replicas)
    if replicas > 1 and WHOLE_GPU_RESOURCE in capacity:
        capacity[WHOLE_GPU_RESOURCE] /= replicas
    return capacity


def _replicas(label: str) -> float:
    """Slices per physical GPU; a node without time-slicing (no label, or junk) has one."""
    try:
        replicas = int(label)
    except ValueError:
        return 1.0
    return float(replicas) if replicas > 0 else 1.0
