"""The ``findings`` table: the rules, evaluated at every hour end of the period, as
episodes (one row per unbroken run of hours in which a rule fired for a GPU).

The same rule conditions as a cycle's (``gpuwatch.analysis.rules.hits``), on the same
aggregates computed by the history where the data lives, so a week's findings are what
hourly cycles would have found. Each rule is evaluated once over the whole GPU x hour
grid, and its episodes are found and described column by column: runs over the grid,
each run's worst value by reductions over its hours, names taken by index. Python
touches an episode only to write its message (a 10,000-GPU week is 1.7 million cells
and tens of thousands of episodes). At each hour a GPU's holder is the pod the exporter
labelled it with for most of the hour; a GPU the exporter never labels keeps the
cluster's attribution (shared and MIG GPUs under older exporters).

An episode's columns are those of the finding a cycle would build in its first hour
(``Candidate.build``): the GPU's identity, node and pool, its first holder then, the
rule's severity (critical where the rule raises it), threshold and unit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.rules.evaluate import SEVERITY_ORDER
from gpuwatch.analysis.rules.hits import Grid, Hits, on_grid, rule_hits
from gpuwatch.analysis.rules.schema import Rule
from gpuwatch.model.findings import Finding, GpuHolder, Severity, format_value
from gpuwatch.model.metrics import NO_NODE, HistoryFrame
from gpuwatch.report.schema import FINDINGS

_SEVERITIES = tuple(Severity)


@dataclass(frozen=True)
class _Runs:
    """The episodes of one rule, one per run of consecutive hours in which it fired for
    a GPU, GPU by GPU (the order hourly evaluation opens them in)."""

    rule: Rule
    hits: Hits
    row: np.ndarray
    """The GPU's index in the frame."""
    start: np.ndarray
    end: np.ndarray
    """The first and last hour of the run: indices into the frame's times."""

    def first(self) -> np.ndarray:
        """The value of the first hour (NaN where the finding has none)."""
        return self.hits.value[self.row, self.start]

    def severity(self) -> np.ndarray:
        """Indices into ``_SEVERITIES``: the rule's, or critical where the rule raises it."""
        own = np.full(self.row.size, _SEVERITIES.index(self.rule.severity))
        if self.hits.critical is None:
            return own
        critical = self.hits.critical[self.row, self.start]
        return np.where(critical, _SEVERITIES.index(Severity.CRITICAL), own)

    def worst(self) -> np.ndarray:
        """Each run's worst value as ``_worst`` folds it (NaN for none)."""
        worst = self.first().astype(np.float64)
        values = self.hits.value
        h = values.shape[1]
        longer = np.flatnonzero(self.end > self.start)  # runs with later hours
        if longer.size == 0:
            return worst
        # The later hours of those runs, one after the other: run k's are [lo[k], hi[k]).
        lengths = (self.end - self.start)[longer]
        hi = np.cumsum(lengths)
        lo = hi - lengths
        begin = self.row[longer] * h + self.start[longer] + 1
        cells = np.repeat(begin - lo, lengths) + np.arange(int(hi[-1]))
        later = values.reshape(-1)[cells]
        valid = ~np.isnan(later)
        below = np.zeros_like(valid)
        if self.hits.threshold is not None:
            with np.errstate(invalid="ignore"):
                below = valid & (later < self.hits.threshold)
        known = np.add.reduceat(valid, lo, dtype=np.int64)
        under = np.add.reduceat(below, lo, dtype=np.int64)
        lowest = np.minimum.reduceat(np.where(valid, later, np.inf), lo)
        highest = np.maximum.reduceat(np.where(valid, later, -np.inf), lo)
        first = worst[longer]
        seen = ~np.isnan(first)
        with np.errstate(invalid="ignore"):
            low = np.where(seen & (first < lowest), first, lowest)
            high = np.where(seen & (first > highest), first, highest)
        worst[longer] = np.where(known == 0, first, np.where(under == known, low, high))
        # Hours on both sides of the limit: fold them in order, as the hours did.
        for k in np.flatnonzero((under > 0) & (under < known)).tolist():
            start = None if np.isnan(first[k]) else float(first[k])
            folded = _worst(start, later[lo[k] : hi[k]], self.hits.threshold)
            worst[longer[k]] = np.nan if folded is None else folded
        return worst


@dataclass(frozen=True)
class _Holders:
    """Who held each GPU at each hour, as the rules see it."""

    contexts: Sequence[GpuContext]
    codes: np.ndarray
    holders: Sequence[GpuHolder]
    changed: np.ndarray
    """(GPUs, hours): the exporter named another holder than the cluster's."""

    def allocated(self) -> np.ndarray:
        base = np.fromiter((c.allocated for c in self.contexts), dtype=bool)
        return np.where(self.changed, self.codes >= 0, base[:, None])

    def named(self, rows: np.ndarray, hours: np.ndarray) -> tuple[list[GpuHolder | None], Any]:
        """The holders a finding can name (the exporter's, then each GPU's own first
        one), and for GPU ``rows[k]`` at hour ``hours[k]`` the index of the one it
        names: the exporter's pod where it changed hands, else the cluster's first
        holder; -1 for nobody."""
        vocabulary = [*self.holders, *(c.holders[0] if c.holders else None for c in self.contexts)]
        own = np.array([bool(c.holders) for c in self.contexts], dtype=bool)
        theirs = np.where(own, len(self.holders) + np.arange(own.size), -1)
        return vocabulary, np.where(
            self.changed[rows, hours], self.codes[rows, hours], theirs[rows]
        ).astype(np.int64)


def findings_table(
    rules: Sequence[Rule],
    frame: HistoryFrame,
    contexts: Sequence[GpuContext],
    codes: np.ndarray,
    holders: Sequence[GpuHolder],
    sample_interval_s: float,
) -> pa.Table:
    """``frame``: the rules' aggregates at every hour end; ``codes[i, j]``: the index in
    ``holders`` of the pod holding ``frame.devices[i]`` at hour ``j`` (-1: none)."""
    n, h = len(frame.devices), frame.times_s.size
    if n == 0 or h == 0:
        return FINDINGS.empty_table()
    contexts = contexts[:n]
    labelled = (codes >= 0).any(axis=1)
    index = {(g.namespace, g.pod): i for i, g in enumerate(holders)}
    base = np.array([_holder_code(ctx, index) for ctx in contexts], dtype=np.int64)
    held = _Holders(contexts, codes, holders, labelled[:, None] & (codes != base[:, None]))
    grid = Grid(frame.values, (n, h), frame.times_s.astype(np.float64), sample_interval_s)
    allocated = held.allocated()
    runs = []
    for rule in rules:
        # A forecast's warnings come from the cycles' results (``weekly.forecasts``);
        # a budget is the month's, not an hour's.
        if rule.enabled and on_grid(rule):
            hits = rule_hits(rule, grid, contexts, allocated)
            edges = np.diff(np.pad(hits.fired, ((0, 0), (1, 1))).astype(np.int8), axis=1)
            rows, starts = np.nonzero(edges == 1)
            ends = np.nonzero(edges == -1)[1] - 1  # row-major: the same order as the starts
            runs.append(_Runs(rule, hits, rows, starts, ends))
    return _grid_table(runs, held, frame.times_s.astype(np.int64))


def _grid_table(runs: Sequence[_Runs], held: _Holders, times_s: np.ndarray) -> pa.Table:
    """Every rule's episodes, in the order hourly evaluation gave: by start, rule and
    place; then as they closed, and in the order a cycle lists its findings."""

    def joined(part: Callable[[int, _Runs], Any]) -> np.ndarray:
        return np.concatenate(
            [np.broadcast_to(part(k, r), r.row.shape) for k, r in enumerate(runs)] or [[]]
        )

    contexts = held.contexts
    ids = {rule_id: k for k, rule_id in enumerate(sorted({r.rule.id for r in runs}))}
    nodes = {node: k for k, node in enumerate(sorted({c.node_name for c in contexts}))}
    gpu_index = [_gpu_index(c) for c in contexts]
    row = joined(lambda k, r: r.row).astype(np.int64)
    start = joined(lambda k, r: r.start).astype(np.int64)
    end = joined(lambda k, r: r.end).astype(np.int64)
    rule = joined(lambda k, r: k).astype(np.int64)
    severity = joined(lambda k, r: r.severity()).astype(np.int64)
    order = np.lexsort(
        (
            np.arange(row.size),
            row,
            np.array([SEVERITY_ORDER[s] for s in _SEVERITIES])[severity],
            times_s[end],
            np.array([i or 0 for i in gpu_index], dtype=np.int64)[row],
            np.array([nodes[c.node_name] for c in contexts], dtype=np.int64)[row],
            np.array([ids[r.rule.id] for r in runs], dtype=np.int64)[rule],
            times_s[start],
        )
    )
    worst = joined(lambda k, r: r.worst())[order]
    row, start, end, rule, severity = (a[order] for a in (row, start, end, rule, severity))
    threshold = np.array([np.nan if r.hits.threshold is None else r.hits.threshold for r in runs])
    vocabulary, holder = held.named(row, start)
    hours = end - start + 1
    device = pa.array(row)
    where = [_where(c.node_name, i) for c, i in zip(contexts, gpu_index, strict=True)]
    held_by = [*(_held_by(_who(v)) for v in vocabulary), ""]
    named = np.where(holder < 0, len(vocabulary), holder)
    units = [r.hits.unit for r in runs]
    columns = {
        "rule": _taken([r.rule.id for r in runs], rule),
        "severity": _taken([str(s) for s in _SEVERITIES], severity),
        "gpu_uuid": pc.take(
            pa.array([c.device.uuid if c.device else None for c in contexts], pa.string()), device
        ),
        "device_id": pc.take(
            pa.array([c.device.device_id if c.device else None for c in contexts], pa.string()),
            device,
        ),
        "node": pc.take(pa.array([c.node_name for c in contexts], pa.string()), device),
        "pool": pc.take(pa.array([c.pool for c in contexts], pa.string()), device),
        **{
            name: pc.take(
                pa.array([getattr(v, name, None) for v in vocabulary], pa.string()),
                pa.array(holder, mask=holder < 0),
            )
            for name in ("namespace", "pod", "workload", "team")
        },
        "start": pa.array(times_s[start], FINDINGS.field("start").type),
        "end": pa.array(times_s[end], FINDINGS.field("end").type),
        "hours": pa.array(hours, pa.int32()),
        "worst_value": pa.array(worst, mask=np.isnan(worst)),
        "threshold": pa.array(threshold[rule], mask=np.isnan(threshold[rule])),
        "unit": _taken(units, rule),
        "message": _messages(runs, rule, _taken(where, row), _taken(held_by, named), hours, worst),
    }
    return _assemble(columns)


def _messages(
    runs: Sequence[_Runs],
    rule: np.ndarray,
    where: pa.Array,
    held_by: pa.Array,
    hours: np.ndarray,
    worst: np.ndarray,
) -> pa.Array:
    """Each episode's message, ``rule: node/gpuN held by workload for N h, worst X
    (limit Y)``, joined column by column: Python formats only the worst values."""
    return pc.binary_join_element_wise(
        _taken([f"{r.rule.id}: " for r in runs], rule),
        where,
        held_by,
        " for ",
        pc.cast(pa.array(hours), pa.string()),
        " h, worst ",
        _formatted(worst, [r.hits.unit for r in runs], rule),
        _taken([_limit(r.hits.threshold, r.hits.unit) for r in runs], rule),
        "",
    )


def _formatted(values: np.ndarray, units: Sequence[str], rule: np.ndarray) -> pa.Array:
    """``format_value`` of each value in its rule's unit, called once per distinct value
    of a unit (the same bits: -0.0 is not 0.0)."""
    text = np.empty(values.size, dtype=object)
    unit_of = np.array([sorted(set(units)).index(u) for u in units], dtype=np.int64)[rule]
    for k, unit in enumerate(sorted(set(units))):
        mine = np.flatnonzero(unit_of == k)
        bits, index = np.unique(values[mine].view(np.int64), return_inverse=True)
        shown = [format_value(value, unit) for value in bits.view(np.float64).tolist()]
        text[mine] = np.array(shown, dtype=object)[index.reshape(-1)]
    return pa.array(text, pa.string())


def _taken(values: Sequence[str | None], index: np.ndarray) -> pa.Array:
    return pc.take(pa.array(values, pa.string()), pa.array(index))


def _gpu_index(ctx: GpuContext) -> int | None:
    device = ctx.device
    return device.index if device is not None and device.index >= 0 else None


def _assemble(columns: Mapping[str, object]) -> pa.Table:
    return pa.Table.from_pydict({name: columns[name] for name in FINDINGS.names}, schema=FINDINGS)


def _holder_code(ctx: GpuContext, index: Mapping[tuple[str, str], int]) -> int:
    """The index of the context's (first) holder among the holders, -1 for none, -2 for
    a pod the exporter never named (always "changed" in an hour it labels)."""
    if not ctx.holders:
        return -1
    return index.get((ctx.holders[0].namespace, ctx.holders[0].pod), -2)


def _worst(first: float | None, rest: np.ndarray, threshold: float | None) -> float | None:
    """The episode's worst value: ``first``, then each later hour's value folded in by
    ``_worse``. A run whose later values all lie on one side of the limit is their
    minimum or maximum with ``first``; only a run on both sides (a data gap short of
    coverage, then stale) needs the fold hour by hour."""
    rest = rest[~np.isnan(rest)]
    if rest.size == 0:
        return first
    known = [] if first is None or np.isnan(first) else [first]
    below = rest < threshold if threshold is not None else np.zeros(rest.size, dtype=bool)
    if below.all():
        return min([float(rest.min()), *known])
    if not below.any():
        return max([float(rest.max()), *known])
    worst = first
    for value in rest.tolist():
        worst = _worse(value, threshold, worst)
    return worst


def _worse(value: float, threshold: float | None, worst: float | None) -> float:
    if worst is None or np.isnan(worst):
        return value
    # The rule's direction decides what is worse: below a "<" limit, lower is worse.
    below = threshold is not None and value < threshold
    return min(value, worst) if below else max(value, worst)


def _where(node: str, gpu_index: int | None) -> str:
    """``Finding.where`` of a GPU's finding."""
    shown = node or NO_NODE
    return shown if gpu_index is None else f"{shown}/gpu{gpu_index}"


def _who(holder: GpuHolder | Finding | None) -> str:
    """Whom a message names: the holder's workload, else its pod; "" for nobody."""
    if holder is None:
        return ""
    return holder.workload or (f"{holder.namespace}/{holder.pod}" if holder.pod else "")


def _limit(threshold: float | None, unit: str) -> str:
    return f" (limit {format_value(threshold, unit)})" if threshold is not None else ""


def _held_by(who: str) -> str:
    return f" held by {who}" if who else ""
