"""Which pods hold which GPU, and where each GPU sits (node, pool, capacity type).

The exporter's pod labels are the ground truth for whole GPUs. Shared GPUs (cGPU) and
MIG slices under exporters that label no pod on them carry no pod label: for those the
node's allocations decide, using the gpushare scheduler's GPU-index annotation where it
exists, and the result says the attribution is approximate where it had to guess. A GPU
the exporter labels with several pods (time-slicing, MPS) is split between them by their
GPU requests (equally without requests), approximate too.

A device's node is the first of its node labels that names a node the cluster has: on
some platforms the exporter's ``Hostname`` is its own pod's name, and the ``node`` label
Prometheus added names the node. When the labels disagree, a note says which was used.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cached_property, partial

from gpuwatch.analysis.ownership import OwnerIndex, team_of
from gpuwatch.analysis.pools import (
    capacity_type_of,
    gpu_model_of,
    mig_single_strategy,
    physical_gpu_count,
    pool_of,
)
from gpuwatch.config.settings import AttributionSettings
from gpuwatch.model.cluster import (
    CGPU_COUNT_RESOURCE,
    CGPU_MEMORY_RESOURCE,
    MIG_RESOURCE_PREFIX,
    WHOLE_GPU_RESOURCE,
    ClusterState,
    Node,
    Pod,
    gpu_request_kind,
    gpu_share,
)
from gpuwatch.model.findings import DataQualityNote, GpuHolder
from gpuwatch.model.metrics import NO_NODE, GpuDevice
from gpuwatch.model.tenant import CGPU_INDEX

EXACT = "exact"
APPROXIMATE = "approximate"
NONE = "none"
# Phases in which a pod holds its devices. A Pending pod bound to a node has them
# allocated by the kubelet while its containers start.
_HOLDING_PHASES = frozenset({"Running", "Pending", "Unknown"})


@dataclass(frozen=True)
class GpuContext:
    """Everything analysis knows about one GPU besides its metrics."""

    node_name: str
    device: GpuDevice | None
    """None for a GPU the node advertises but the metrics never showed."""
    node: Node | None
    pool: str | None
    capacity_type: str
    model: str | None
    holders: tuple[GpuHolder, ...] = ()
    attribution: str = NONE
    recently_released: bool = False
    """A GPU pod on this node ended inside the look-back: the GPU may have been held."""
    gpu_fraction: float = 1.0
    """The share of a physical GPU this device is: 1 for a whole GPU, less for a MIG
    instance (``gpuwatch.analysis.mig``). Its GPU-hours are hours x this."""

    @property
    def allocated(self) -> bool:
        return bool(self.holders)

    @property
    def node_shown(self) -> str:
        """The node as messages name it: an exporter without a host label gives none."""
        return self.node_name or NO_NODE

    @property
    def gpu_shown(self) -> str:
        """What follows "GPU " in messages (``3``, ``0 MIG 1g.10gb #2``, the UUID)."""
        return self.device.short_label if self.device is not None else "?"

    @cached_property
    def in_gpu_pool(self) -> bool:
        return self.node is not None and physical_gpu_count(self.node) > 0


@dataclass(frozen=True)
class Attribution:
    contexts: tuple[GpuContext, ...]
    """Aligned with the devices passed in, then one per GPU missing from the metrics."""
    notes: tuple[DataQualityNote, ...] = ()
    pending_gpu_pods: tuple[Pod, ...] = ()


@dataclass
class _Slot:
    device: GpuDevice
    holders: list[GpuHolder] = field(default_factory=list)
    exact: bool = True
    free_share: float = 1.0


def attribute(
    devices: Sequence[GpuDevice],
    cluster: ClusterState,
    settings: AttributionSettings,
    at: datetime,
    lookback_s: int,
) -> Attribution:
    """Attribute every device to its node, pool and holders."""
    owners = OwnerIndex(cluster.controllers)
    namespace_labels = {ns.name: ns.labels for ns in cluster.namespaces}
    nodes = {n.name: n for n in cluster.nodes}
    notes: list[DataQualityNote] = []
    slots_by_node: dict[str, list[_Slot]] = defaultdict(list)
    pods_by_name: dict[str, Pod] = {pod.name: pod for pod in cluster.pods if pod.node_name}
    slots = [_Slot(_placed(d, nodes, pods_by_name, notes)) for d in devices]
    for slot in slots:
        slots_by_node[slot.device.node].append(slot)

    holding: dict[str, list[Pod]] = defaultdict(list)
    released_nodes: set[str] = set()
    pending: list[Pod] = []
    cutoff = at - timedelta(seconds=lookback_s)
    for pod in cluster.pods:
        if gpu_request_kind(pod.requests) is None:
            continue
        if pod.node_name is None:
            if pod.phase == "Pending":
                pending.append(pod)
            continue
        if pod.phase in _HOLDING_PHASES:
            holding[pod.node_name].append(pod)
        elif pod.finished_at is not None and pod.finished_at > cutoff:
            released_nodes.add(pod.node_name)

    def holder_of(pod: Pod) -> Callable[[float], GpuHolder]:
        return partial(
            GpuHolder,
            pod.namespace,
            pod.name,
            owners.workload_of(pod),
            team_of(pod, settings.team_label, namespace_labels),
        )

    for node_name, pods in holding.items():
        node = nodes.get(node_name)
        node_slots = sorted(slots_by_node.get(node_name, []), key=lambda s: s.device.index)
        shared = _share(node_slots, pods, holder_of, notes)
        # On a MIG node of the single strategy, nvidia.com/gpu counts MIG instances.
        whole_is_mig = node is not None and mig_single_strategy(node)
        for pod in sorted(pods, key=lambda p: p.key):
            make = holder_of(pod)
            unplaced = _place(pod, node, node_slots, make, shared.get(pod.key, 0), whole_is_mig)
            if unplaced:
                notes.append(
                    DataQualityNote(
                        kind="unplaced_pod",
                        node=node_name,
                        message=f"pod {pod.namespace}/{pod.name} holds {unplaced} GPU(s) on "
                        f"{node_name} that no exported device matches",
                    )
                )

    facts: dict[str, tuple[str | None, str]] = {}
    models: dict[tuple[str, str | None], str | None] = {}
    contexts = [_context(slot, nodes, settings, released_nodes, facts, models) for slot in slots]
    for slot in slots:
        if slot.device.node not in nodes:
            notes.append(
                DataQualityNote(
                    kind="unknown_node",
                    node=slot.device.node,
                    gpu_uuid=slot.device.uuid,
                    message=f"GPU {slot.device.uuid} reports node "
                    f"{slot.device.node or NO_NODE}, which the cluster state "
                    "does not have",
                )
            )
        elif slot.holders and not slot.exact:
            notes.append(
                DataQualityNote(
                    kind="approximate_attribution",
                    node=slot.device.node,
                    gpu_uuid=slot.device.uuid,
                    message=f"{slot.device.label} on {slot.device.node or NO_NODE}: "
                    + (
                        f"{len(slot.device.pods)} pods share it (time-slicing or MPS); its "
                        "cost is split by their GPU requests"
                        if len(slot.device.pods) > 1
                        else "no pod label from the exporter; holders inferred from the "
                        "node's allocations"
                    ),
                )
            )

    for node in cluster.nodes:
        seen = len({s.device.uuid for s in slots_by_node.get(node.name, [])})
        expected = physical_gpu_count(node)
        for _ in range(max(expected - seen, 0)):
            contexts.append(
                GpuContext(
                    node_name=node.name,
                    device=None,
                    node=node,
                    pool=pool_of(node, settings.pool_label, settings.pool_label_fallbacks),
                    capacity_type=capacity_type_of(node),
                    model=gpu_model_of(node),
                )
            )
    return Attribution(tuple(contexts), tuple(notes), tuple(pending))


def _placed(
    device: GpuDevice,
    nodes: Mapping[str, Node],
    pods: Mapping[str, Pod],
    notes: list[DataQualityNote],
) -> GpuDevice:
    """``device`` on the first of its node labels that names a known node, else on the
    node of the pod one names (the exporter's ``Hostname`` is often its own pod's name,
    and that pod runs on the GPU's node)."""
    if device.node in nodes and device.node_candidates[:1] in ((), (device.node,)):
        return device  # its first node label names a node the cluster has, as it says
    named = ", ".join(device.node_candidates)
    known = next((name for name in device.node_candidates if name in nodes), None)
    how = f"{known} is a node the cluster has"
    if known is None:
        exporter = next((pods[n] for n in device.node_candidates if n in pods), None)
        if exporter is not None and exporter.node_name in nodes:
            known = exporter.node_name
            how = f"{exporter.name} is pod {exporter.namespace}/{exporter.name}, on node {known}"
    if known is None or known == device.node:
        return device
    notes.append(
        DataQualityNote(
            kind="node_label",
            node=known,
            gpu_uuid=device.uuid,
            message=f"{device.label} ({device.uuid}): its node labels say {named}; "
            f"{how}, so the GPU is placed there (the exporter's Hostname is often its own "
            "pod's name)",
        )
    )
    return replace(device, node=known)


def _share(
    slots: Sequence[_Slot],
    pods: Sequence[Pod],
    holder_of: Callable[[Pod], Callable[[float], GpuHolder]],
    notes: list[DataQualityNote],
) -> dict[tuple[str, str], int]:
    """Devices the exporter labels with several pods (time-slicing, MPS): each pod's
    share is its GPU request over theirs together (equal when none requests). Returns,
    per pod, how many devices it was given this way."""
    by_key = {pod.key: pod for pod in pods}
    given: dict[tuple[str, str], int] = defaultdict(int)
    for slot in slots:
        sharing = [
            by_key[(p.namespace, p.name)]
            for p in slot.device.pods
            if (p.namespace, p.name) in by_key
        ]
        if len(slot.device.pods) < 2 or not sharing:
            continue
        weights = [gpu_share(pod.requests) or 1.0 for pod in sharing]
        total = sum(weights)
        for pod, weight in zip(sharing, weights, strict=True):
            slot.holders.append(holder_of(pod)(weight / total))
            given[pod.key] += 1
        slot.free_share = 0.0
        slot.exact = False
    return given


def _place(
    pod: Pod,
    node: Node | None,
    slots: list[_Slot],
    make: Callable[[float], GpuHolder],
    shared: int = 0,
    whole_is_mig: bool = False,
) -> int:
    """Give ``pod`` its devices among ``slots``; return how many it could not get.
    ``shared``: devices it already holds a share of (several pods labelled on them);
    ``whole_is_mig``: the node's ``nvidia.com/gpu`` are MIG instances (single strategy)."""
    kind = gpu_request_kind(pod.requests)
    labelled = [
        s
        for s in slots
        if len(s.device.pods) == 1
        and s.device.pod is not None
        and s.device.pod.name == pod.name
        and s.device.pod.namespace == pod.namespace
    ]

    if kind == "whole":
        wanted = max(int(pod.requests[WHOLE_GPU_RESOURCE]) - shared, 0)
        if shared:
            # A pod sharing a GPU is time-sliced: it asked for replicas, not GPUs, and
            # the exporter's labels are all that says where they are.
            wanted = min(wanted, len(labelled))
        for slot in labelled[:wanted]:
            slot.holders.append(make(1.0))
            slot.free_share = 0.0
        missing = wanted - min(len(labelled), wanted)
        free = [
            s
            for s in slots
            if s.free_share >= 1.0
            and s.device.pod is None
            and (s.device.mig_profile is not None) == whole_is_mig
        ]
        for slot in free[:missing]:
            slot.holders.append(make(1.0))
            slot.free_share = 0.0
            slot.exact = False
        return missing - min(len(free), missing)

    if kind == "cgpu":
        share = _cgpu_share(pod, node)
        index = CGPU_INDEX.get(pod.annotations)
        target: _Slot | None = labelled[0] if labelled else None
        exact = target is not None
        if target is None and index is not None:
            target = next((s for s in slots if s.device.index == index), None)
            exact = target is not None
        if target is None:
            target = next(
                (s for s in slots if s.free_share >= share - 1e-9 and s.device.mig_profile is None),
                None,
            )
        if target is None:
            return 1
        target.holders.append(make(share))
        target.free_share = max(target.free_share - share, 0.0)
        target.exact = target.exact and exact
        return 0

    # MIG: one slice per unit requested, of the requested profile.
    unplaced = 0
    for resource, qty in pod.requests.items():
        if not resource.startswith(MIG_RESOURCE_PREFIX) or qty <= 0:
            continue
        profile = resource[len(MIG_RESOURCE_PREFIX) :]
        wanted = int(qty)
        mine = [s for s in labelled if s.device.mig_profile == profile][:wanted]
        for slot in mine:
            slot.holders.append(make(1.0))
            slot.free_share = 0.0
        free = [
            s
            for s in slots
            if s.device.mig_profile == profile and s.free_share >= 1.0 and s.device.pod is None
        ]
        rest = wanted - len(mine)
        for slot in free[:rest]:
            slot.holders.append(make(1.0))
            slot.free_share = 0.0
            slot.exact = False
        unplaced += rest - min(len(free), rest)
    return unplaced


def _cgpu_share(pod: Pod, node: Node | None) -> float:
    """Memory share of one physical GPU: requested GiB / that GPU's GiB."""
    requested = pod.requests.get(CGPU_MEMORY_RESOURCE, 0.0)
    if node is None:
        return 1.0
    total = node.capacity.get(CGPU_MEMORY_RESOURCE, 0.0)
    gpus = node.capacity.get(CGPU_COUNT_RESOURCE, 0.0) or physical_gpu_count(node)
    if total <= 0 or gpus <= 0:
        return 1.0
    return min(requested / (total / gpus), 1.0)


def _context(
    slot: _Slot,
    nodes: dict[str, Node],
    settings: AttributionSettings,
    released_nodes: set[str],
    facts: dict[str, tuple[str | None, str]],
    models: dict[tuple[str, str | None], str | None],
) -> GpuContext:
    """``facts``: each node's pool and capacity type, ``models``: the GPU model of each
    node and exporter model name, filled as they are met (a node's GPUs share them)."""
    node = nodes.get(slot.device.node)
    attribution = (EXACT if slot.exact else APPROXIMATE) if slot.holders else NONE
    if node is None:
        pool, capacity_type = None, "unknown"
    elif node.name in facts:
        pool, capacity_type = facts[node.name]
    else:
        pool = pool_of(node, settings.pool_label, settings.pool_label_fallbacks)
        capacity_type = capacity_type_of(node)
        facts[node.name] = (pool, capacity_type)
    # The model depends on the node's labels and the exporter's model name alone.
    known = (slot.device.node, slot.device.model_name)
    model = models[known] if known in models else gpu_model_of(node, slot.device.model_name)
    models[known] = model
    return GpuContext(
        node_name=slot.device.node,
        device=slot.device,
        node=node,
        pool=pool,
        capacity_type=capacity_type,
        model=model,
        holders=tuple(sorted(slot.holders, key=lambda h: -h.share)) if slot.holders else (),
        attribution=attribution,
        recently_released=slot.device.node in released_nodes and not slot.holders,
    )
