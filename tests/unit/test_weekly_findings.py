"""The week's findings, every rule evaluated once over the GPU x hour grid, are exactly
what evaluating the rules hour by hour (as hourly cycles would) finds: the same episodes,
holders, worst values and order, on a fleet with exporter gaps, holders that change
from hour to hour, thresholds met exactly at the edge, and rules with a ``for``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from gpuwatch.analysis.attribution import EXACT, NONE, GpuContext, attribute
from gpuwatch.analysis.ownership import exporter_holders
from gpuwatch.analysis.rules.evaluate import evaluate, lookback_s, required_specs
from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.analysis.rules.schema import DataGapRule, Rule, ThresholdRule, UnallocatedRule
from gpuwatch.config.settings import Settings, SimulatorSettings
from gpuwatch.model.findings import Finding, GpuHolder, format_value
from gpuwatch.model.metrics import (
    Aggregate,
    AggregateSpec,
    HistoryFrame,
    HistoryRequest,
    Signal,
    WindowStats,
)
from gpuwatch.report.schema import FINDINGS
from gpuwatch.sources.simulator import SimulatedCluster, SimulatorMetricsSource
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from gpuwatch.weekly import episodes
from gpuwatch.weekly.episodes import findings_table

STEP_S = 60
UTIL_30M = AggregateSpec(Signal.UTIL_RATIO, Aggregate.AVG, 1800)
FB_5M = AggregateSpec(Signal.FB_USED_RATIO, Aggregate.MAX, 300)


@dataclass(frozen=True)
class Inputs:
    rules: tuple[Rule, ...]
    frame: HistoryFrame
    contexts: Sequence[GpuContext]
    codes: np.ndarray
    holders: Sequence[GpuHolder]


def _edge_rules(frame: HistoryFrame) -> list[Rule]:
    """Rules whose thresholds are values the frame holds exactly, each operator, and
    rules with a ``for``, a pool list, another scope and a strict data-gap rule."""
    util = frame.values[UTIL_30M]
    fb = frame.values[FB_5M]
    u = float(np.quantile(util[util > 0], 0.5, method="nearest"))
    f = float(np.nanquantile(fb[~np.isnan(fb)], 0.9, method="nearest"))
    assert (util == u).any() and (fb == f).any()
    common = {"kind": "threshold", "window": "30m", "signal": "util_ratio", "aggregate": "avg"}
    rules: list[Rule] = [
        ThresholdRule(id="edge-le", op="<=", threshold=u, **common),
        ThresholdRule(id="edge-lt", op="<", threshold=u, **{"for": "2h"}, **common),
        ThresholdRule(id="edge-ge", op=">=", threshold=u, scope="unallocated", **common),
        ThresholdRule(
            id="edge-fb",
            kind="threshold",
            signal="fb_used_ratio",
            aggregate="max",
            op=">=",
            threshold=f,
            window="5m",
            min_coverage=1.0,
            pools=["gpu-training", "gpu-spot"],
        ),
        UnallocatedRule(id="unheld-for", kind="unallocated", window="1h", **{"for": "3h"}),
        DataGapRule(id="strict-gap", kind="data_gap", window="1h", min_coverage=0.99),
    ]
    return rules


@pytest.fixture(scope="module")
def inputs() -> Inputs:
    cluster = SimulatedCluster(SimulatorSettings(gpus=64, days=2, step_s=STEP_S), SHOWCASE_AT)
    source = SimulatorMetricsSource(cluster)
    end = SHOWCASE_AT.replace(minute=0, second=0)
    start = end - timedelta(days=1)
    shipped = tuple(load_rules())
    probe = source.history(HistoryRequest(start, end, 3600, frozenset({UTIL_30M, FB_5M})))
    rules = (*shipped, *_edge_rules(probe))
    specs = required_specs(rules)
    frame = source.history(HistoryRequest(start, end, 3600, specs))
    # Whole windows without a sample (the exporter down): no value, a count of zero.
    rng = np.random.default_rng(7)
    dark = rng.random((len(frame.devices), frame.times_s.size)) < 0.03
    for spec, values in frame.values.items():
        values[dark] = 0.0 if spec.aggregate is Aggregate.COUNT else np.nan
    state = cluster.state()
    attribution = attribute(frame.devices, state, Settings().attribution, end, lookback_s(rules))
    holder_history = source.holders(HistoryRequest(start, end, 3600, frozenset()))
    holders = tuple(exporter_holders(holder_history.pods, state, "team"))
    codes = holder_history.aligned([d.device_id for d in frame.devices])
    # Holders that change within the week: another pod, or none, in a few hours.
    flip = rng.random(codes.shape) < 0.05
    codes = np.where(flip, rng.integers(-1, len(holders), codes.shape), codes).astype(np.int32)
    return Inputs(rules, frame, attribution.contexts[: len(frame.devices)], codes, holders)


# ------------------------------------------------------------ the hour-by-hour reference


@dataclass
class _Open:
    first: Finding
    start_s: int
    end_s: int
    hours: int
    worst: float | None


def _worse(finding: Finding, worst: float | None) -> float | None:
    value = finding.value
    if value is None or np.isnan(value):
        return worst
    if worst is None or np.isnan(worst):
        return value
    below = finding.threshold is not None and value < finding.threshold
    return min(value, worst) if below else max(value, worst)


def hour_by_hour(i: Inputs) -> pa.Table:
    """The report's findings as they were computed before: ``evaluate`` at every hour,
    runs of hours kept open per finding key."""
    frame, contexts, codes, holders = i.frame, i.contexts, i.codes, i.holders
    n = len(frame.devices)
    labelled = (codes >= 0).any(axis=1)
    index = {(h.namespace, h.pod): k for k, h in enumerate(holders)}
    base = np.array(
        [
            -1 if not c.holders else index.get((c.holders[0].namespace, c.holders[0].pod), -2)
            for c in contexts
        ]
    )
    open_: dict[str, _Open] = {}
    closed: list[_Open] = []
    for j, t in enumerate(frame.times_s.tolist()):
        stats = WindowStats(
            at=datetime.fromtimestamp(t, tz=UTC),
            sample_interval_s=STEP_S,
            devices=frame.devices,
            values={spec: values[:, j] for spec, values in frame.values.items()},
        )
        hour = list(contexts)
        for k in np.flatnonzero(labelled & (codes[:, j] != base)).tolist():
            code = int(codes[k, j])
            hour[k] = (
                replace(contexts[k], holders=(holders[code],), attribution=EXACT)
                if code >= 0
                else replace(contexts[k], holders=(), attribution=NONE)
            )
        seen = set()
        for finding in evaluate(i.rules, stats, hour[:n], explain=False).findings:
            seen.add(finding.key)
            run = open_.get(finding.key)
            if run is None:
                open_[finding.key] = _Open(finding, t, t, 1, finding.value)
            else:
                run.end_s, run.hours = t, run.hours + 1
                run.worst = _worse(finding, run.worst)
        for key in [k for k in open_ if k not in seen]:
            closed.append(open_.pop(key))
    closed.extend(open_.values())
    closed.sort(key=lambda e: (e.start_s, e.first.rule, e.first.node, e.first.gpu_index or 0))
    return _table(closed)


_FINDING_FIELDS = ("rule", "gpu_uuid", "device_id", "node", "pool", "namespace", "pod", "workload",
                   "team", "threshold", "unit")  # fmt: skip


def _table(closed: Sequence[_Open]) -> pa.Table:
    """The episodes as the findings table, row by row, each message written out whole."""
    first = [e.first for e in closed]

    def instants(seconds: list[int], name: str) -> pa.Array:
        return pa.array(seconds, pa.timestamp("s", tz="UTC")).cast(FINDINGS.field(name).type)

    def message(f: Finding, e: _Open) -> str:
        who = f.workload or (f"{f.namespace}/{f.pod}" if f.pod else "")
        held = f" held by {who}" if who else ""
        limit = f" (limit {format_value(f.threshold, f.unit)})" if f.threshold is not None else ""
        worst = format_value(e.worst, f.unit)
        return f"{f.rule}: {f.where}{held} for {e.hours} h, worst {worst}{limit}"

    columns = {
        **{name: [getattr(f, name) for f in first] for name in _FINDING_FIELDS},
        "severity": [str(f.severity) for f in first],
        "start": instants([e.start_s for e in closed], "start"),
        "end": instants([e.end_s for e in closed], "end"),
        "hours": [e.hours for e in closed],
        "worst_value": [e.worst for e in closed],
        "message": [message(f, e) for f, e in zip(first, closed, strict=True)],
    }
    return pa.Table.from_pydict({n: columns[n] for n in FINDINGS.names}, schema=FINDINGS)


# ------------------------------------------------------------------------------ tests


def test_the_fleet_exercises_every_edge(inputs: Inputs):
    table = hour_by_hour(inputs)
    rules = set(table["rule"].to_pylist())
    assert {"gpu-idle", "gpu-unallocated", "data-gap", "gpu-xid", "edge-le", "edge-lt"} <= rules
    assert {"edge-ge", "edge-fb", "unheld-for", "strict-gap"} <= rules
    hours: dict[str, int] = {}
    for row in table.to_pylist():
        hours[row["rule"]] = hours.get(row["rule"], 0) + row["hours"]
    # Hours exactly at the limit: "<=" fires there, "<" does not (same scope otherwise).
    assert hours["edge-le"] > hours["edge-lt"]
    assert row_limit(inputs, "edge-le") == row_limit(inputs, "edge-lt")
    assert (table["hours"].to_numpy() > 1).any()
    assert (inputs.codes == -1).any() and np.isnan(inputs.frame.values[UTIL_30M]).any()


def row_limit(inputs: Inputs, rule_id: str) -> float:
    rule = next(r for r in inputs.rules if r.id == rule_id)
    assert isinstance(rule, ThresholdRule)
    return rule.threshold


def test_the_grid_finds_what_hourly_evaluation_finds(inputs: Inputs):
    expected = hour_by_hour(inputs)
    got = findings_table(
        inputs.rules, inputs.frame, inputs.contexts, inputs.codes, inputs.holders, STEP_S
    )
    assert got.schema == expected.schema
    assert got.num_rows == expected.num_rows > 100
    assert got.to_pylist() == expected.to_pylist()


def test_worst_folds_like_the_hours_even_across_the_limit():
    # Below the limit lower is worse, above it higher: the order of the hours matters.
    assert episodes._worst(0.5, np.array([1.0, 0.95]), 0.9) == 1.0
    assert episodes._worst(1.0, np.array([0.5, 0.95]), 0.9) == 0.95
    assert episodes._worst(0.5, np.array([0.4, np.nan]), 0.9) == 0.4
    assert episodes._worst(None, np.array([np.nan]), None) is None
    assert episodes._worst(None, np.array([0.2, 0.1]), None) == 0.2
