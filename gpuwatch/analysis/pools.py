"""Node pools, capacity types, GPU models and GPU counts, read from node labels.

The common four-pool layout labels nodes ``pool=gpu-training|gpu-inference|gpu-spot|cpu``;
the platforms have their own node-pool labels, tried as fallbacks
(``attribution.pool_label_fallbacks``). Spot shows differently on each: a label
(Karpenter, EKS, GKE, AKS, OKE) or a taint (ACK, AKS, GKE). How many GPUs a node has
depends on how the device plugin advertises them (whole, MIG single or mixed strategy,
time-sliced, cGPU); ``docs/cluster.md`` lists every label read.
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
from gpuwatch.model.mig import compute_slices, compute_slices_per_gpu, instances_per_gpu
from gpuwatch.model.tenant import CAPACITY_TYPE

SPOT = "spot"
ON_DEMAND = "on-demand"
RESERVED = "reserved"

# Node labels that mark spot (or preemptible) capacity, with the value that means it
# (compared case-insensitively), per platform:
SPOT_LABELS = {
    "karpenter.sh/capacity-type": "spot",  # Karpenter, every version
    "eks.amazonaws.com/capacitytype": "spot",  # EKS managed node groups: SPOT
    "cloud.google.com/gke-spot": "true",  # GKE Spot VMs (standard and Autopilot)
    "cloud.google.com/gke-preemptible": "true",  # GKE preemptible VMs
    "kubernetes.azure.com/scalesetpriority": "spot",  # AKS spot node pools
    "oci.oraclecloud.com/oke-is-preemptible": "true",  # OKE preemptible capacity
    "node.kubernetes.io/lifecycle": "spot",  # kops and self-managed groups
}
# Taints that mark spot capacity: ACK's (the common layout's), GKE's optional one, AKS's
# and OKE's.
SPOT_TAINTS = frozenset(
    {
        "china.alibabacloud.com/spot",
        "cloud.google.com/gke-spot",
        "kubernetes.azure.com/scalesetpriority",
        "oci.oraclecloud.com/oke-is-preemptible",
    }
)
# Reserved capacity: Karpenter's ODCR and capacity-block nodes; EKS managed node groups
# launched into a capacity block (capacityType CAPACITY_BLOCK).
RESERVED_LABELS = {
    "karpenter.sh/capacity-type": "reserved",
    "eks.amazonaws.com/capacitytype": "capacity_block",
}
# An explicit override for capacity bought outside what labels can show (savings plans,
# reserved instances): gpuwatch.io/capacity-type=spot|on-demand|reserved (CAPACITY_TYPE).
# Set by NVIDIA GPU feature discovery (the GPU operator). ``gpu.count`` counts what
# ``nvidia.com/gpu`` advertises (physical GPUs, or MIG instances under the single
# strategy); ``gpu.product`` names the model, with ``-MIG-<profile>`` appended under the
# single strategy and ``-SHARED`` with time-slicing's renamed resource.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
MIG_STRATEGY_LABEL = "nvidia.com/mig.strategy"
MIG_CONFIG_LABEL = "nvidia.com/mig.config"  # mig-parted: all-1g.10gb, all-balanced, ...
_MIG_PRODUCT = re.compile(r"-MIG-(?P<profile>\d+g\.[\w.+]+)$", re.IGNORECASE)
_SHARED_PRODUCT = re.compile(r"-SHARED$", re.IGNORECASE)
_UNIFORM_MIG_CONFIG = re.compile(r"^all-(?P<profile>\d+g\.[\w.+]+)$", re.IGNORECASE)
# The GPU model where GPU feature discovery does not run: the clouds' own labels.
CLOUD_GPU_MODEL_LABELS = (
    "cloud.google.com/gke-accelerator",  # nvidia-l4, nvidia-tesla-t4
    "karpenter.k8s.aws/instance-gpu-name",  # t4, a10g, h100
    "k8s.amazonaws.com/accelerator",  # EKS GPU AMIs: nvidia-tesla-t4
)


def pool_of(node: Node, pool_label: str, fallbacks: Sequence[str]) -> str | None:
    """The node's pool: ``pool_label``, else the first cloud node-pool label present."""
    for label in (pool_label, *fallbacks):
        value = node.labels.get(label)
        if value:
            return value
    return None


def capacity_type_of(node: Node) -> str:
    """``spot``, ``reserved`` or ``on-demand`` (the default when nothing says otherwise)."""
    override = CAPACITY_TYPE.get(node.labels)
    if override is not None:
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
    """The GPU model: GPU feature discovery's product label (without what it appends for
    MIG or time-slicing), else the exporter's ``modelName``, else a cloud's label."""
    labels = node.labels if node is not None else {}
    product = labels.get(GPU_PRODUCT_LABEL)
    if product:
        return _SHARED_PRODUCT.sub("", _MIG_PRODUCT.sub("", product))
    if dcgm_model:
        return dcgm_model
    return next((labels[name] for name in CLOUD_GPU_MODEL_LABELS if labels.get(name)), None)


def mig_single_profile(node: Node) -> str | None:
    """The MIG profile every ``nvidia.com/gpu`` of the node is, under the device
    plugin's single MIG strategy (GPU feature discovery's product label, or a uniform
    mig-parted configuration); None otherwise, and always when the mixed strategy's
    ``nvidia.com/mig-<profile>`` resources are in use."""
    mixed_in_use = any(
        name.startswith(MIG_RESOURCE_PREFIX) and qty > 0 for name, qty in node.capacity.items()
    )
    if mixed_in_use or node.labels.get(MIG_STRATEGY_LABEL) == "mixed":
        return None
    match = _MIG_PRODUCT.search(node.labels.get(GPU_PRODUCT_LABEL, ""))
    if match:
        return match["profile"]
    uniform = _UNIFORM_MIG_CONFIG.match(node.labels.get(MIG_CONFIG_LABEL, ""))
    if uniform and node.capacity.get(WHOLE_GPU_RESOURCE, 0) > 0:
        return uniform["profile"]
    return None


def mig_single_strategy(node: Node) -> bool:
    """``nvidia.com/gpu`` on this node advertises MIG instances, not GPUs."""
    return mig_single_profile(node) is not None


def _mig_cards(instances: dict[str, float], model: str | None) -> int:
    """Cards that hold ``instances`` (profile -> count): at least the compute slices they
    take over a card's, and at least what each profile alone needs."""
    if not instances:
        return 0
    slices = sum(qty * (compute_slices(p) or 1) for p, qty in instances.items())
    by_profile = (
        math.ceil(qty / (instances_per_gpu(p, model) or 1)) for p, qty in instances.items()
    )
    per_card = compute_slices_per_gpu(model, tuple(instances))
    return max(math.ceil(slices / per_card), *by_profile)


def physical_gpu_count(node: Node) -> int:
    """Physical GPUs on the node, whichever way the device plugin advertises them:

    - whole GPUs: ``nvidia.com/gpu`` (time-slicing replicas already divided out when
      the node was read), or GPU feature discovery's ``gpu.count``;
    - the single MIG strategy: its instances over the instances of its profile per card;
    - the mixed strategy: ``nvidia.com/mig-<profile>`` over the instances per card of
      each profile and their compute slices over a card's, beside any whole GPUs;
    - cGPU: ``aliyun.com/gpu-count``.
    """
    labelled = _int(node.labels.get(GPU_COUNT_LABEL))
    whole = node.capacity.get(WHOLE_GPU_RESOURCE, 0.0)
    profile = mig_single_profile(node)
    if profile is not None:
        return _mig_cards({profile: labelled or whole}, gpu_model_of(node))
    mixed = {
        name[len(MIG_RESOURCE_PREFIX) :]: qty
        for name, qty in node.capacity.items()
        if name.startswith(MIG_RESOURCE_PREFIX) and qty > 0
    }
    if not mixed and labelled > 0:
        return labelled
    count = int(whole) + (_mig_cards(mixed, gpu_model_of(node)) if mixed else 0)
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
