"""How full GPU memory got: the headroom histogram and the near-OOM rule's findings."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gpuwatch.report.data import NearOom
from gpuwatch.report.figures.columns import floats, rows_of

HEADROOM_BIN_RATIO = 0.05


@dataclass(frozen=True)
class NearOomFinding:
    """A finding of the near-OOM rule: an unbroken run of hours above its threshold."""

    node: str
    gpu_uuid: str | None
    pool: str | None
    namespace: str | None
    pod: str | None
    workload: str | None
    team: str | None
    start: datetime
    end: datetime
    hours: int
    worst_value: float | None
    threshold: float | None
    message: str | None


@dataclass(frozen=True)
class MemoryHeadroom:
    """How full GPU memory got: a histogram of each GPU-hour's highest sample."""

    edges: tuple[float, ...]
    """21 edges, 0 to 1 by 5 %; bin ``i`` holds ``edges[i] < ratio <= edges[i+1]``
    (the first bin includes 0, the last anything above 1), so that the last bin is
    exactly the near-OOM GPU-hours."""
    counts: tuple[int, ...]
    measured_gpu_hours: int
    """GPU-hours that have a memory sample (the histogram's total)."""
    near_oom_gpu_hours: int | None
    """GPU-hours whose highest sample is above the near-OOM rule's threshold; None
    without such a rule."""
    findings: tuple[NearOomFinding, ...]
    near_oom_ratio: float | None = None
    """The near-OOM rule's threshold, where the histogram turns red."""


_FIELDS = tuple(field.name for field in fields(NearOomFinding))


def memory_headroom(
    hourly: pa.Table, findings: pa.Table, near_oom: NearOom | None
) -> MemoryHeadroom:
    """Histogram of ``fb_used_max_ratio`` in 5 % bins; with the near-OOM rule, the hours
    above its threshold and its findings."""
    bins = round(1 / HEADROOM_BIN_RATIO)
    # i / bins is the double nearest to the decimal edge, as the literal 0.95 is: a ratio
    # of exactly 0.95 falls in the (0.90, 0.95] bin, not the near-OOM one.
    edges = np.arange(bins + 1) / bins
    ratio = floats(hourly, "fb_used_max_ratio")
    ratio = ratio[~np.isnan(ratio)]
    index = np.clip(np.searchsorted(edges, ratio, side="left") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    rule = near_oom
    marked = (
        [
            NearOomFinding(*row)
            for row in rows_of(findings.filter(pc.equal(findings["rule"], rule.rule)), _FIELDS)
        ]
        if rule is not None
        else []
    )
    marked.sort(key=lambda f: (-(f.worst_value or 0.0), f.start, f.node, f.gpu_uuid or ""))
    return MemoryHeadroom(
        edges=tuple(float(edge) for edge in edges),
        counts=tuple(int(count) for count in counts),
        measured_gpu_hours=int(ratio.size),
        near_oom_gpu_hours=None if rule is None else int(np.count_nonzero(rule.above(ratio))),
        findings=tuple(marked),
        near_oom_ratio=None if rule is None else rule.ratio,
    )
