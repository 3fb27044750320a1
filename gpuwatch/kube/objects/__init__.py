"""Kubernetes objects: their JSON shapes and the semantics gpuwatch depends on, read once.

Every cluster adapter speaks the same JSON: the Kubernetes API source
(``sources/kubernetes.py``) a page at a time, the ``kubectl get -o json`` file source
(``sources/snapshot_file.py``), and the simulator's cluster written out as such a file
(``gpuwatch simulate``). They all hand plain dicts, as the API serves them, to this
package, so that the Kubernetes semantics gpuwatch depends on are written and tested
once and no client model (``V1Pod``) crosses the seam.

- ``shapes``: the raw objects as ``TypedDict``s (only what gpuwatch reads);
- ``quantity``: ``8``, ``500m``, ``768Gi``, ``1e3`` as the API machinery parses them;
- ``fields``: reading untrusted JSON, with errors that name the object and the field;
  identity, timestamps and the controlling owner every object has;
- ``requests``: what a pod holds and a node offers, as the scheduler counts them (init
  containers, sidecars, overhead, pod-level resources, renamed GPU resources);
- ``decode``: raw JSON -> ``gpuwatch.model.cluster`` types;
- ``encode``: the inverse, so that tests, benchmarks and the simulator can feed one
  cluster to every adapter and compare what comes back.
"""

from gpuwatch.kube.objects.decode import (
    OWNER_KINDS,
    controller_from_kube,
    namespace_from_kube,
    node_from_kube,
    owner_kinds_referenced,
    pod_from_kube,
)
from gpuwatch.kube.objects.encode import (
    API_VERSIONS,
    api_version_of,
    controller_to_kube,
    kube_list,
    namespace_to_kube,
    node_to_kube,
    object_uid,
    pod_to_kube,
    state_to_kube,
)
from gpuwatch.kube.objects.fields import (
    controlling_owner,
    format_time,
    object_identity,
    parse_time,
    read_mapping,
    read_sequence,
    read_string,
    read_string_map,
)
from gpuwatch.kube.objects.quantity import format_quantity, parse_quantity
from gpuwatch.kube.objects.requests import (
    GPU_REPLICAS_LABEL,
    GPU_RESOURCE_ALIASES,
    container_requests,
    effective_requests,
    fold_gpu_aliases,
    node_capacity,
)
from gpuwatch.kube.objects.shapes import (
    Container,
    ContainerState,
    ContainerStateTerminated,
    ContainerStatus,
    KubeList,
    KubeNode,
    KubeObject,
    KubePod,
    KubeTaint,
    ListMeta,
    NodeSpec,
    NodeStatus,
    ObjectMeta,
    OwnerReference,
    PodSpec,
    PodStatus,
    ResourceRequirements,
)

__all__ = [
    "API_VERSIONS",
    "GPU_REPLICAS_LABEL",
    "GPU_RESOURCE_ALIASES",
    "OWNER_KINDS",
    "Container",
    "ContainerState",
    "ContainerStateTerminated",
    "ContainerStatus",
    "KubeList",
    "KubeNode",
    "KubeObject",
    "KubePod",
    "KubeTaint",
    "ListMeta",
    "NodeSpec",
    "NodeStatus",
    "ObjectMeta",
    "OwnerReference",
    "PodSpec",
    "PodStatus",
    "ResourceRequirements",
    "api_version_of",
    "container_requests",
    "controller_from_kube",
    "controller_to_kube",
    "controlling_owner",
    "effective_requests",
    "fold_gpu_aliases",
    "format_quantity",
    "format_time",
    "kube_list",
    "namespace_from_kube",
    "namespace_to_kube",
    "node_capacity",
    "node_from_kube",
    "node_to_kube",
    "object_identity",
    "object_uid",
    "owner_kinds_referenced",
    "parse_quantity",
    "parse_time",
    "pod_from_kube",
    "pod_to_kube",
    "read_mapping",
    "read_sequence",
    "read_string",
    "read_string_map",
    "state_to_kube",
]
