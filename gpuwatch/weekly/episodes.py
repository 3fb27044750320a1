"""The ``findings`` table: the rules, evaluated at every hour end of the period, as
episodes (one row per unbroken run of hours in which a rule fired for a GPU).

The same rule conditions as a cycle's (``gpuwatch.analysis.rules.hits``), on the same
aggregates computed by the history where the data lives, so a week's findings are what
hourly cycles would have found. Each rule is evaluated once over the whole GPU x hour
grid; only the episodes become Python objects, never a finding per GPU per hour (a
10,000-GPU week is 1.7 million cells). At each hour a GPU's holder is the pod the
exporter labelled it with for most of the hour; a GPU the exporter never labels keeps
the cluster's attribution (shared and MIG GPUs under older exporters).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from gpuwatch.analysis.attribution import EXACT, NONE, GpuContext
from gpuwatch.analysis.rules.evaluate import SEVERITY_ORDER, Candidate
from gpuwatch.analysis.rules.hits import Grid, Hits, on_grid, rule_hits
from gpuwatch.analysis.rules.schema import Rule
from gpuwatch.model.findings import Finding, GpuHolder, Severity, format_value
from gpuwatch.model.metrics import HistoryFrame
from gpuwatch.report.schema import FINDINGS


@dataclass
class _Episode:
    first: Finding
    start_s: int
    end_s: int
    hours: int
    worst: float | None
    row: int
    """The GPU's index in the frame: the last tie-break of the table's order."""


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

    def context(self, i: int, j: int) -> GpuContext:
        if not self.changed[i, j]:
            return self.contexts[i]
        code = int(self.codes[i, j])
        if code >= 0:
            return replace(self.contexts[i], holders=(self.holders[code],), attribution=EXACT)
        return replace(self.contexts[i], holders=(), attribution=NONE)


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
    episodes: list[_Episode] = []
    for rule in rules:
        # A forecast's warnings come from the cycles' results (``weekly.forecasts``);
        # a budget is the month's, not an hour's.
        if rule.enabled and on_grid(rule):
            hits = rule_hits(rule, grid, contexts, allocated)
            episodes.extend(_episodes(rule, hits, held, frame.times_s))
    # The order hourly evaluation gave: by start, rule and place; then as they closed,
    # and in the order a cycle lists its findings.
    episodes.sort(
        key=lambda e: (
            e.start_s,
            e.first.rule,
            e.first.node,
            e.first.gpu_index or 0,
            e.end_s,
            SEVERITY_ORDER[e.first.severity],
            e.row,
        )
    )
    return _table(episodes)


def _episodes(rule: Rule, hits: Hits, held: _Holders, times_s: np.ndarray) -> list[_Episode]:
    """One per run of consecutive hours in which ``hits`` fired for a GPU."""
    edges = np.diff(np.pad(hits.fired, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1] - 1  # row-major: the same order as the starts
    found = []
    for i, j0, j1 in zip(rows.tolist(), starts.tolist(), ends.tolist(), strict=True):
        value = float(hits.value[i, j0])
        critical = hits.critical is not None and bool(hits.critical[i, j0])
        first = Candidate(
            held.context(i, j0),
            None if np.isnan(value) else value,
            hits.threshold,
            float(hits.coverage[i, j0]),
            hits.unit,
            severity=Severity.CRITICAL if critical else None,
        ).build(rule, datetime.fromtimestamp(int(times_s[j0]), tz=UTC), messages=False)
        worst = _worst(first.value, hits.value[i, j0 + 1 : j1 + 1], first.threshold)
        found.append(_Episode(first, int(times_s[j0]), int(times_s[j1]), j1 - j0 + 1, worst, i))
    return found


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


def _describe(finding: Finding, episode: _Episode) -> str:
    where = finding.where
    who = finding.workload or (f"{finding.namespace}/{finding.pod}" if finding.pod else None)
    worst = format_value(episode.worst, finding.unit)
    limit = (
        f" (limit {format_value(finding.threshold, finding.unit)})"
        if finding.threshold is not None
        else ""
    )
    held = f" held by {who}" if who else ""
    return f"{finding.rule}: {where}{held} for {episode.hours} h, worst {worst}{limit}"


def _table(episodes: Sequence[_Episode]) -> pa.Table:
    """A column at a time (a 10,000-GPU week has tens of thousands of episodes)."""
    first = [e.first for e in episodes]

    def instants(seconds: list[int], name: str) -> pa.Array:
        return pa.array(seconds, pa.timestamp("s", tz="UTC")).cast(FINDINGS.field(name).type)

    columns: dict[str, object] = {
        "rule": [f.rule for f in first],
        "severity": [str(f.severity) for f in first],
        "gpu_uuid": [f.gpu_uuid for f in first],
        "device_id": [f.device_id for f in first],
        "node": [f.node for f in first],
        "pool": [f.pool for f in first],
        "namespace": [f.namespace for f in first],
        "pod": [f.pod for f in first],
        "workload": [f.workload for f in first],
        "team": [f.team for f in first],
        "start": instants([e.start_s for e in episodes], "start"),
        "end": instants([e.end_s for e in episodes], "end"),
        "hours": [e.hours for e in episodes],
        "worst_value": [e.worst for e in episodes],
        "threshold": [f.threshold for f in first],
        "unit": [f.unit for f in first],
        "message": [_describe(f, e) for f, e in zip(first, episodes, strict=True)],
    }
    return pa.Table.from_pydict({name: columns[name] for name in FINDINGS.names}, schema=FINDINGS)
