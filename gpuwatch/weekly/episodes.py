"""The ``findings`` table: the rules, evaluated at every hour end of the period, as
episodes (one row per unbroken run of hours in which a rule fired for a GPU).

The same evaluator as a cycle's, on the same aggregates computed by the history where
the data lives, so a week's findings are what hourly cycles would have found. At each
hour a GPU's holder is the pod the exporter labelled it with for most of the hour; a GPU
the exporter never labels keeps the cluster's attribution (shared and MIG GPUs under
older exporters).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from gpuwatch.analysis.attribution import EXACT, NONE, GpuContext
from gpuwatch.analysis.rules.evaluate import evaluate
from gpuwatch.analysis.rules.schema import Rule
from gpuwatch.model.findings import Finding, GpuHolder, format_value
from gpuwatch.model.metrics import HistoryFrame, WindowStats
from gpuwatch.report.schema import FINDINGS


@dataclass
class _Episode:
    first: Finding
    start_s: int
    end_s: int
    hours: int
    worst: float | None


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
    n = len(frame.devices)
    if n == 0 or frame.times_s.size == 0:
        return FINDINGS.empty_table()
    labelled = (codes >= 0).any(axis=1)
    index = {(h.namespace, h.pod): i for i, h in enumerate(holders)}
    base = np.array([_holder_code(ctx, index) for ctx in contexts[:n]], dtype=np.int64)
    open_: dict[str, _Episode] = {}
    closed: list[_Episode] = []
    for j, t in enumerate(frame.times_s.tolist()):
        stats = WindowStats(
            at=datetime.fromtimestamp(t, tz=UTC),
            sample_interval_s=sample_interval_s,
            devices=frame.devices,
            values={spec: values[:, j] for spec, values in frame.values.items()},
        )
        hour_contexts = list(contexts[:n])
        changed = np.flatnonzero(labelled & (codes[:, j] != base))
        for i in changed.tolist():
            code = int(codes[i, j])
            hour_contexts[i] = (
                replace(contexts[i], holders=(holders[code],), attribution=EXACT)
                if code >= 0
                else replace(contexts[i], holders=(), attribution=NONE)
            )
        seen: set[str] = set()
        for finding in evaluate(rules, stats, hour_contexts, explain=False).findings:
            key = finding.key
            seen.add(key)
            episode = open_.get(key)
            if episode is None:
                open_[key] = _Episode(finding, t, t, 1, finding.value)
            else:
                episode.end_s, episode.hours = t, episode.hours + 1
                episode.worst = _worse(finding, episode.worst)
        for key in [k for k in open_ if k not in seen]:
            closed.append(open_.pop(key))
    closed.extend(open_.values())
    closed.sort(key=lambda e: (e.start_s, e.first.rule, e.first.node, e.first.gpu_index or 0))
    return _table(closed)


def _holder_code(ctx: GpuContext, index: Mapping[tuple[str, str], int]) -> int:
    """The index of the context's (first) holder among the holders, -1 for none, -2 for
    a pod the exporter never named (always "changed" in an hour it labels)."""
    if not ctx.holders:
        return -1
    return index.get((ctx.holders[0].namespace, ctx.holders[0].pod), -2)


def _worse(finding: Finding, worst: float | None) -> float | None:
    value = finding.value
    if value is None or np.isnan(value):
        return worst
    if worst is None or np.isnan(worst):
        return value
    # The rule's direction decides what is worse: below a "<" limit, lower is worse.
    below = finding.threshold is not None and value < finding.threshold
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
    rows: Mapping[str, list[object]] = {name: [] for name in FINDINGS.names}
    for e in episodes:
        f = e.first
        values = {
            "rule": f.rule,
            "severity": str(f.severity),
            "gpu_uuid": f.gpu_uuid,
            "device_id": f.device_id,
            "node": f.node,
            "pool": f.pool,
            "namespace": f.namespace,
            "pod": f.pod,
            "workload": f.workload,
            "team": f.team,
            "start": datetime.fromtimestamp(e.start_s, tz=UTC),
            "end": datetime.fromtimestamp(e.end_s, tz=UTC),
            "hours": e.hours,
            "worst_value": e.worst,
            "threshold": f.threshold,
            "unit": f.unit,
            "message": _describe(f, e),
        }
        for name in FINDINGS.names:
            rows[name].append(values[name])
    return pa.Table.from_pydict(dict(rows), schema=FINDINGS)
