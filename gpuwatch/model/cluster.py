"""Kubernetes cluster state as gpuwatch needs it: nodes, pods and their controllers.

Sources (the Kubernetes API, a ``kubectl get -o json`` file, the simulator) translate
their objects into these types; nothing above a source ever sees a ``V1Pod``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

# Extended resources that stand for GPUs. ``nvidia.com/mig-<profile>`` is matched by
# prefix; renamed time-slicing resources are configured per cluster.
WHOLE_GPU_RESOURCE = "nvidia.com/gpu"
CGPU_MEMORY_RESOURCE = "aliyun.com/gpu-mem"  # GiB of a shared GPU (Alibaba cGPU)
CGPU_COUNT_RESOURCE = "aliyun.com/gpu-count"  # physical GPUs behind cGPU on a node
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
# The gpushare scheduler records the chosen GPU index of a cGPU pod in this annotation.
CGPU_INDEX_ANNOTATION = "ALIYUN_COM_GPU_MEM_IDX"


@dataclass(frozen=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"


@dataclass(frozen=True)
class OwnerRef:
    """The controlling owner of an object (``ownerReferences`` with ``controller: true``)."""

    kind: str
    name: str


@dataclass(frozen=True)
class Node:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    capacity: Mapping[str, float] = field(default_factory=dict)
    """Resource name -> quantity (GPUs as counts, ``aliyun.com/gpu-mem`` in GiB)."""
    unschedulable: bool = False
    created_at: datetime | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    node_name: str | None
    phase: str
    """Kubernetes pod phase: Pending, Running, Succeeded, Failed or Unknown."""
    requests: Mapping[str, float] = field(default_factory=dict)
    """Effective requests as the scheduler computes them (init containers, overhead,
    limits where requests are omitted)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    owner: OwnerRef | None = None
    uid: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    images: tuple[str, ...] = ()
    """Container images (app containers), e.g. to recognise an inference server."""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    """``spec.nodeSelector``: which pool a pending pod waits for."""
    local_storage: bool = False
    """Mounts an emptyDir or hostPath volume: its data dies with the node, so Cluster
    Autoscaler will not drain it unless the pod says it is safe to evict."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True)
class Controller:
    """Any object that can own pods or other controllers: ReplicaSet, Deployment, Job,
    CronJob, StatefulSet, PyTorchJob, Notebook..."""

    kind: str
    namespace: str
    name: str
    owner: OwnerRef | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterState:
    """One consistent read of the cluster."""

    observed_at: datetime
    nodes: tuple[Node, ...] = ()
    pods: tuple[Pod, ...] = ()
    controllers: tuple[Controller, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    """Only their labels matter (a team label set on the namespace); may be empty."""

    @classmethod
    def of(
        cls,
        observed_at: datetime,
        nodes: Iterable[Node],
        pods: Iterable[Pod],
        controllers: Iterable[Controller],
        namespaces: Iterable[Namespace] = (),
    ) -> ClusterState:
        """A state from whatever collections a source gathered them in."""
        return cls(observed_at, tuple(nodes), tuple(pods), tuple(controllers), tuple(namespaces))


def gpu_share(requests: Mapping[str, float]) -> float:
    """GPUs a pod asks for, as a number: whole GPUs, or MIG slices counted one each.
    A cGPU request (GiB of a shared GPU) counts as 0 here: its share depends on the
    GPU it lands on."""
    whole = requests.get(WHOLE_GPU_RESOURCE, 0.0)
    mig = sum(q for name, q in requests.items() if name.startswith(MIG_RESOURCE_PREFIX))
    return float(whole + mig)


def gpu_request_kind(requests: Mapping[str, float]) -> str | None:
    """Which GPU resource a pod asks for: ``whole``, ``cgpu``, ``mig`` or None."""
    if requests.get(WHOLE_GPU_RESOURCE, 0) > 0:
        return "whole"
    if requests.get(CGPU_MEMORY_RESOURCE, 0) > 0:
        return "cgpu"
    if any(name.startswith(MIG_RESOURCE_PREFIX) and qty > 0 for name, qty in requests.items()):
        return "mig"
    return None
