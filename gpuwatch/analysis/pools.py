"""Node pools, capacity types and GPU models, read from node labels and taints.

The common four-pool layout labels nodes ``pool=gpu-training|gpu-inference|gpu-spot|cpu``; the
clouds have their own node-pool labels, tried as fallbacks. Spot shows differently on
each cloud: a label (Karpenter, EKS, GKE) or the ACK spot taint.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gpuwatch.model.cluster import (
    CGPU_COUNT_RESOURCE,
    MIG_RESOURCE_PREFIX,
    WHOLE_GPU_RESOURCE,
    Node,
    Pod,
    gpu_request_kind,
)

SPOT = "spot"
ON_DEMAND = "on-demand"
RESERVED = "reserved"

# label -> value meaning spot (compared case-insensitively)
SPOT_LABELS = {
    "karpenter.sh/capacity-type": "spot",
    "eks.amazonaws.com/capacitytype": "spot",
    "cloud.google.com/gke-spot": "true",
    "cloud.google.com/gke-preemptible": "true",
}
SPOT_TAINTS = frozenset({"china.alibabacloud.com/spot", "cloud.google.com/gke-spot"})
RESERVED_LABELS = {"karpenter.sh/capacity-type": "reserved"}
# An explicit override for capacity bought outside what labels can show (savings plans,
# reserved instances): gpuwatch.io/capacity-type=spot|on-demand|reserved.
OVERRIDE_LABEL = "gpuwatch.io/capacity-type"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # set by GPU feature discovery
GPU_COUNT_LABEL = "nvidia.com/gpu.count"


def pool_of(node: Node, pool_label: str, fallbacks: Sequence[str]) -> str | None:
    """The node's pool: ``pool_label``, else the first cloud node-pool label present."""
    for label in (pool_label, *fallbacks):
        value = node.labels.get(label)
        if value:
            return value
    return None


def capacity_type_of(node: Node) -> str:
    """``spot``, ``reserved`` or ``on-demand`` (the default when nothing says otherwise)."""
    override = node.labels.get(OVERRIDE_LABEL, "").lower()
    if override in (SPOT, ON_DEMAND, RESERVED):
        return override
    lowered = {k.lower(): v.lower() for k, v in node.labels.items()}
    if any(lowered.get(label) == value for label, value in SPOT_LABELS.items()):
        return SPOT
    if any(taint.key in SPOT_TAINTS for taint in node.taints):
        return SPOT
    if any(lowered.get(label) == value for label, value in RESERVED_LABELS.items()):
        return RESERVED
    return ON_DEMAND


def gpu_model_of(node: Node | None, dcgm_model: str | None = None) -> str | None:
    """GPU model from GPU feature discovery's label, else the exporter's ``modelName``."""
    if node is not None and node.labels.get(GPU_PRODUCT_LABEL):
        return node.labels[GPU_PRODUCT_LABEL]
    return dcgm_model or None


def physical_gpu_count(node: Node) -> int:
    """Physical GPUs on the node, whichever way the device plugin advertises them."""
    whole = int(node.capacity.get(WHOLE_GPU_RESOURCE, 0))
    if whole:
        return whole
    cgpu = int(node.capacity.get(CGPU_COUNT_RESOURCE, 0))
    if cgpu:
        return cgpu
    if any(name.startswith(MIG_RESOURCE_PREFIX) for name in node.capacity):
        return int(node.labels.get(GPU_COUNT_LABEL, "0") or 0)
    return 0


def pending_gpu_pods_for(pods: Iterable[Pod], node: Node | None) -> list[Pod]:
    """Unscheduled GPU pods that could land on ``node``'s pool: their node selector matches
    its labels (every pending GPU pod when the pool's nodes are unknown). They are why a
    pool must not shrink."""
    return [
        pod
        for pod in pods
        if pod.node_name is None
        and pod.phase == "Pending"
        and gpu_request_kind(pod.requests)
        and (node is None or all(node.labels.get(k) == v for k, v in pod.node_selector.items()))
    ]
