"""Who held each GPU-hour, and what share of it: the exporter's labels where they name a
pod, the cluster's allocations where they do not.

The cycle's cost (``gpuwatch.analysis.cost``) takes holders and shares from the
cluster's allocations (``gpuwatch.analysis.attribution``): whole GPUs, cGPU memory
shares, MIG slices, time-sliced GPUs split by request; a holder counts from its pod's
``started_at``. The report does the same for every hour of the period, and keeps the
exporter's pod label as the evidence of who held a whole GPU in an hour where it
changed hands. For each GPU and hour:

- the exporter labels a pod the allocations do not name (the GPU changed hands, or the
  pod is gone): that pod held the whole GPU-hour;
- the exporter labels a pod the allocations name: the allocations' holders, each with
  its share (the labelled pod whole; the others from their pods' start);
- the exporter labels nothing while it reports the GPU and has labelled it in some hour
  of the period: nobody held it (it speaks for that GPU);
- otherwise (a GPU the exporter never labels, as cGPU-shared ones; an hour without
  samples): the allocations' holders, each from its pod's start.

What the holders leave of the hour is unallocated; shares adding up to more than the
GPU are scaled down to it. Everything is computed on (GPUs x hours) arrays; Python
loops only over a GPU's few allocation slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.model.cluster import ClusterState
from gpuwatch.model.findings import GpuHolder
from gpuwatch.model.metrics import HolderHistory

HOUR_S = 3600
EXPORTER, ALLOCATION = 0, 1
EVIDENCE = ("exporter", "allocation")
"""What each ``evidence`` code says named the holder."""
_EPSILON = 1e-9


@dataclass(frozen=True)
class HeldHours:
    """The holder rows of every GPU-hour, grouped by cell (``device x hours + hour``),
    holders by share (largest first), the unallocated rest last."""

    holders: tuple[GpuHolder, ...]
    """The vocabulary ``code`` indexes (``share`` there means nothing)."""
    cell: npt.NDArray[np.int64]
    code: npt.NDArray[np.int32]
    """-1 on the row of the unallocated rest."""
    fraction: npt.NDArray[np.float64]
    """The row's part of the GPU-hour's cost; a cell's rows add up to 1."""
    evidence: npt.NDArray[np.int8]
    """``EXPORTER`` or ``ALLOCATION`` (-1 on the unallocated rest)."""
    main: npt.NDArray[np.int32]
    """Per cell: the code of the holder with the largest share; -1 for none."""
    allocated: npt.NDArray[np.float64]
    """Per cell: the holders' fractions together (0..1)."""


def held_hours(
    history: HolderHistory,
    exporter: Sequence[GpuHolder],
    device_ids: Sequence[str],
    contexts: Sequence[GpuContext],
    cluster: ClusterState,
    covered: npt.NDArray[np.bool_],
    existed: npt.NDArray[np.float64],
) -> HeldHours:
    """The holder rows of the devices ``device_ids`` at ``history``'s hours.

    ``contexts[i]`` describes ``device_ids[i]`` (its allocations); ``exporter[k]`` is
    ``history.pods[k]`` as a holder; ``covered[i, j]``: the hour has samples;
    ``existed[i, j]``: the part of the hour the GPU's node existed (0..1)."""
    n, h = covered.shape
    codes = history.aligned(device_ids)
    vocabulary = list(exporter)
    index = {(v.namespace, v.pod): i for i, v in enumerate(vocabulary)}
    allocations = sorted(
        {(a.namespace, a.pod): a for ctx in contexts[:n] for a in ctx.holders}.items()
    )
    for key, holder in allocations:
        if key not in index:
            index[key] = len(vocabulary)
            vocabulary.append(GpuHolder(holder.namespace, holder.pod, holder.workload, holder.team))
    started = {p.key: p.started_at.timestamp() for p in cluster.pods if p.started_at is not None}
    hour_end = history.times_s.astype(np.float64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        to_existed = np.where(existed > 0, 1.0 / existed, 0.0)

    slots = max((len(ctx.holders) for ctx in contexts[:n]), default=0)
    slot_code = np.full((n, slots), -1, dtype=np.int32)
    slot_share = np.zeros((n, slots))
    slot_start = np.full((n, slots), -np.inf)
    for i, ctx in enumerate(contexts[:n]):
        for k, holder in enumerate(ctx.holders):
            slot_code[i, k] = index[(holder.namespace, holder.pod)]
            slot_share[i, k] = holder.share
            slot_start[i, k] = started.get((holder.namespace, holder.pod), -np.inf)

    labelled = codes >= 0
    named = np.zeros((n, h), dtype=bool)
    exporter_share = np.ones((n, h))
    for k in range(slots):
        same = labelled & (codes == slot_code[:, k : k + 1])
        named |= same
        exporter_share = np.where(same, slot_share[:, k : k + 1], exporter_share)
    speaks = labelled.any(axis=1, keepdims=True) & covered
    use_allocations = (labelled & named) | (~labelled & ~speaks)

    # A cell has at most one row from each source: the exporter's label, each slot.
    where = np.flatnonzero(labelled)
    sources = [
        _Source(where, codes.reshape(-1)[where], exporter_share.reshape(-1)[where], EXPORTER)
    ]
    for k in range(slots):
        ran = np.clip((hour_end - slot_start[:, k : k + 1]) / HOUR_S, 0.0, 1.0)
        fraction = np.minimum(slot_share[:, k : k + 1] * ran * to_existed, slot_share[:, k : k + 1])
        take = use_allocations & (codes != slot_code[:, k : k + 1]) & (fraction > _EPSILON)
        take &= slot_code[:, k : k + 1] >= 0
        where = np.flatnonzero(take)
        code = np.repeat(slot_code[:, k], h)[where]
        sources.append(_Source(where, code, fraction.reshape(-1)[where], ALLOCATION))
    return _with_rest(tuple(vocabulary), n * h, sources)


@dataclass(frozen=True)
class _Source:
    """The rows one source of holders gives, at most one per cell, by cell."""

    cell: npt.NDArray[np.int64]
    code: npt.NDArray[np.int32]
    fraction: npt.NDArray[np.float64]
    evidence: int


def _with_rest(
    vocabulary: tuple[GpuHolder, ...], size: int, sources: Sequence[_Source]
) -> HeldHours:
    """The holder rows with each cell's unallocated rest added, by cell, share (largest
    first) and holder, the rest last; shares adding up to more than the GPU are scaled
    down to it. Each row is written straight to its place: a cell's rows start where
    the rows of the cells before it end, its sources' rows in their order."""
    total = np.zeros(size)
    count = np.zeros(size, dtype=np.int32)
    before = []  # per source: the rows earlier sources gave each of its cells
    for source in sources:  # in the order of the sources, as adding the rows one by one
        before.append(count[source.cell])
        total[source.cell] += source.fraction
        count[source.cell] += 1
    over = total > 1.0
    scaled = bool(over.any())
    allocated = np.minimum(total, 1.0) if scaled else total
    rest = allocated < 1.0 - _EPSILON
    first = np.cumsum(count + rest, dtype=np.int64)
    rows = int(first[-1]) if size else 0
    first -= count + rest  # each cell's first row
    cell = np.empty(rows, dtype=np.int64)
    code = np.empty(rows, dtype=np.int32)
    fraction = np.empty(rows)
    evidence = np.empty(rows, dtype=np.int8)
    for source, earlier in zip(sources, before, strict=True):
        at = first[source.cell] + earlier
        cell[at], code[at], evidence[at] = source.cell, source.code, source.evidence
        fraction[at] = source.fraction
        if scaled:
            mine = over[source.cell]
            fraction[at[mine]] = source.fraction[mine] / total[source.cell[mine]]
    at = first[rest] + count[rest]
    cell[at], code[at], evidence[at] = np.flatnonzero(rest), -1, -1
    fraction[at] = 1.0 - allocated[rest]
    # Cells with several holders: by share (largest first), then holder; ties keep the
    # order of the sources.
    several_cells = np.flatnonzero(count > 1)
    if several_cells.size:
        width = count[several_cells]
        offset = np.cumsum(width) - width
        several = np.repeat(first[several_cells] - offset, width) + np.arange(int(width.sum()))
        order = several[np.lexsort((code[several], -fraction[several], cell[several]))]
        code[several], fraction[several], evidence[several] = (
            code[order],
            fraction[order],
            evidence[order],
        )
    main = np.full(size, -1, dtype=np.int32)
    held = count > 0
    main[held] = code[first[held]]
    return HeldHours(vocabulary, cell, code, fraction, evidence, main, allocated)
