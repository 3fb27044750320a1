"""What a MIG instance is worth: a share of its GPU, never a GPU of its own.

A GPU split into MIG instances is billed once, as one GPU. Each instance is billed its
share (``PriceBook.mig_fraction``: one over the instances of its profile a GPU holds),
the instances of one GPU never more than the card between them, and what no instance
covers is the card's unpartitioned remainder: paid for, held by nobody.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.pricing import PriceBook
from gpuwatch.model.findings import DataQualityNote


@dataclass(frozen=True)
class Partitioned:
    """A MIG-enabled GPU: the share of it its instances do not cover."""

    context: GpuContext
    """One of its instances (node, pool, model and price are the card's)."""
    remainder: float


def with_gpu_fractions(
    contexts: Sequence[GpuContext], book: PriceBook
) -> tuple[tuple[GpuContext, ...], tuple[Partitioned, ...], tuple[DataQualityNote, ...]]:
    """``contexts`` with each MIG instance's ``gpu_fraction``; the partitioned GPUs with
    the share no instance covers; notes where the price book did not say."""
    by_gpu: dict[str, list[int]] = defaultdict(list)
    for i, ctx in enumerate(contexts):
        if ctx.device is not None and ctx.device.mig_instance_id is not None:
            by_gpu[ctx.device.uuid].append(i)
    out = list(contexts)
    partitioned: list[Partitioned] = []
    notes: list[DataQualityNote] = []
    for uuid, rows in sorted(by_gpu.items()):
        fractions = []
        for i in rows:
            device = contexts[i].device
            assert device is not None
            fraction, how = book.mig_fraction(contexts[i].model, device.mig_profile)
            if not how.startswith("1/"):
                notes.append(
                    DataQualityNote(
                        kind="mig", node=contexts[i].node_name, gpu_uuid=uuid,
                        message=f"{device.label} on {contexts[i].node_shown} billed as {how}",
                    )
                )  # fmt: skip
            fractions.append(fraction)
        total = sum(fractions)
        if total > 1.0 + 1e-9:
            notes.append(
                DataQualityNote(
                    kind="mig",
                    node=contexts[rows[0]].node_name,
                    gpu_uuid=uuid,
                    message=f"the MIG instances of {uuid} add up to {total:.2f} of the GPU by "
                    "the price book's mig_slices; each is billed its part of one GPU",
                )
            )
            fractions = [f / total for f in fractions]
        for i, fraction in zip(rows, fractions, strict=True):
            out[i] = replace(contexts[i], gpu_fraction=fraction)
        remainder = 1.0 - sum(fractions)
        if remainder > 1e-9:
            partitioned.append(Partitioned(out[rows[0]], remainder))
    return tuple(out), tuple(partitioned), tuple(notes)
