"""Node pools, capacity types and GPU models, read from node labels and taints.

The common four-pool layout labels nodes ``pool=gpu-training|gpu-inference|gpu-spot|cpu``; the
clouds have their own node-pool labels, tried as fallbacks. Spot shows differently on
each cloud: a label (Karpenter, EKS, GKE) or the ACK spot taint.
"""

from __future__ import annotations

import math
import re
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
# Set by NVIDIA GPU feature discovery (the GPU operator). ``gpu.count`` is the node's
# physical GPUs whatever the device plugin advertises; ``gpu.product`` names the model,
# with ``-MIG-<profile>`` appended on a MIG node of the single strategy.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
MIG_STRATEGY_LABEL = "nvidia.com/mig.strategy"
_MIG_PRODUCT = re.compile(r"-MIG-(?P<profile>\d+g\.[\w.]+)$", re.IGNORECASE)
_MIG_COMPUTE_SLICES = re.compile(r"^(?P<slices>\d+)g\.", re.IGNORECASE)
COMPUTE_SLICES_PER_GPU = 7
"""Compute slices (GPCs) of a MIG-capable GPU: 7 on the A100, H100, H200 and B200 (the
A30 has 4, which a price book's ``mig_slices`` says)."""


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
    """GPU model from GPU feature discovery's label (without the ``-MIG-<profile>``
    it carries on single-strategy MIG nodes), else the exporter's ``modelName``."""
    if node is not None and node.labels.get(GPU_PRODUCT_LABEL):
        return _MIG_PRODUCT.sub("", node.labels[GPU_PRODUCT_LABEL])
    return dcgm_model or None


def mig_single_strategy(node: Node) -> bool:
    """``nvidia.com/gpu`` advertises MIG instances, not GPUs (the device plugin's single
    MIG strategy): GPU feature discovery then names the profile in the product label."""
    product = node.labels.get(GPU_PRODUCT_LABEL, "")
    return node.labels.get(MIG_STRATEGY_LABEL) == "single" and bool(_MIG_PRODUCT.search(product))


def compute_slices(profile: str) -> int | None:
    """``3g.40gb`` -> 3: the compute slices a MIG profile takes; None when unreadable."""
    match = _MIG_COMPUTE_SLICES.match(profile)
    return int(match["slices"]) if match else None


def physical_gpu_count(node: Node) -> int:
    """Physical GPUs on the node, whichever way the device plugin advertises them.

    GPU feature discovery's ``nvidia.com/gpu.count`` is the count where it is set.
    Otherwise: ``nvidia.com/gpu`` (already divided by time-slicing replicas when the
    node was read), or on a single-strategy MIG node its instances' compute slices over
    the slices of one GPU; plus the GPUs the mixed strategy's ``nvidia.com/mig-<profile>``
    resources fill (their compute slices over 7, rounded up); or the cGPU count.
    """
    labelled = _int(node.labels.get(GPU_COUNT_LABEL))
    if labelled > 0:
        return labelled
    whole = node.capacity.get(WHOLE_GPU_RESOURCE, 0.0)
    if whole and mig_single_strategy(node):
        match = _MIG_PRODUCT.search(node.labels.get(GPU_PRODUCT_LABEL, ""))
        slices = compute_slices(match["profile"]) if match else None
        whole = math.ceil(whole * (slices or 1) / COMPUTE_SLICES_PER_GPU)
    mig_slices = sum(
        qty * (compute_slices(name[len(MIG_RESOURCE_PREFIX) :]) or 1)
        for name, qty in node.capacity.items()
        if name.startswith(MIG_RESOURCE_PREFIX)
    )
    count = int(whole) + math.ceil(mig_slices / COMPUTE_SLICES_PER_GPU)
    return count or int(node.capacity.get(CGPU_COUNT_RESOURCE, 0))


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
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
