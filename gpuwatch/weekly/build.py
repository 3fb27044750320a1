"""One report: read a period's history, build its four tables.

History comes through the metrics seam, downsampled to hours where the data lives (the
Prometheus planner, or the simulator a day at a time); everything after that is
columnar. The savings are a cycle's at the end of the period: its gather and analyse
phases, the same code as every cycle, without its effects (no state, messages or
writes); the actions are those the cycles of the period recorded in their JSON results.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from gpuwatch.analysis.attribution import attribute
from gpuwatch.analysis.rules.evaluate import lookback_s, required_specs
from gpuwatch.analysis.rules.roles import rule_for
from gpuwatch.analysis.rules.schema import ForecastRule, Rule, ThresholdRule
from gpuwatch.analysis.savings.use import SPECS as SAVINGS_SPECS
from gpuwatch.config.settings import Settings
from gpuwatch.model.findings import DataQualityNote, Role
from gpuwatch.model.metrics import (
    AggregateSpec,
    HistoryFrame,
    HistoryRequest,
    HolderHistory,
    WindowRequest,
    WindowStats,
)
from gpuwatch.model.savings import Saving
from gpuwatch.pipeline import Components, analyse, gather
from gpuwatch.report.data import NearOom, PricesUsed, ReportData, ReportPeriod
from gpuwatch.report.schema import FORECASTS, SAVINGS
from gpuwatch.sources.base import MetricsSource, Progress
from gpuwatch.weekly.cycles import actions_table, period_actions, read_cycles
from gpuwatch.weekly.episodes import findings_table
from gpuwatch.weekly.forecasts import forecasts_table
from gpuwatch.weekly.hourly import HOUR_S, SPECS, HourlyInputs, hourly_tables
from gpuwatch.weekly.realized import CostHistory, realized_table, taken_in
from gpuwatch.weekly.teams import budgets_table, team_weekly_table

log = logging.getLogger(__name__)
MICRO = Decimal("0.000001")
Stage = Callable[[str], None]
"""Told the name of each stage as the build enters it (for a progress display)."""


@dataclass(frozen=True)
class Built:
    tables: dict[str, pa.Table]
    notes: tuple[DataQualityNote, ...]


def build_report(
    components: Components,
    settings: Settings,
    period: ReportPeriod,
    sample_interval_s: float,
    *,
    previous: Mapping[str, pa.Table] | None = None,
    trend: tuple[tuple[str, pa.Table], ...] = (),
    cycles_dir: Path | None = None,
    progress: Progress | None = None,
    stage: Stage | None = None,
) -> ReportData:
    """The period's report. Raises ``SourceError`` when a source cannot answer: a report
    with a hole where a source failed would be read as a quiet week."""
    # The savings first: the cycle's analysis then runs before the period's big tables
    # are held, and the peak memory is the larger of the two, not their sum.
    components = _one_history(components, settings, period, progress)
    if stage:
        stage("savings")
    savings, budgets, cycle_notes = _savings(components, settings, period.end)
    built = build_tables(
        components, settings, period, sample_interval_s, progress=progress, stage=stage
    )
    if isinstance(components.metrics, _OneHistory):
        components.metrics.forget()  # the tables hold what they need of it
    tables = {**built.tables, "savings": savings, "budgets": budgets}
    tables["team_weekly"] = team_weekly_table(tables["holder_hourly"])
    notes = [*built.notes, *cycle_notes]
    cycles = read_cycles(cycles_dir, notes)
    tables["actions"] = actions_table(period_actions(cycles, period))
    forecast = rule_for(components.rules, Role.OOM_FORECAST)
    tables["forecasts"] = (
        forecasts_table(
            cycles, period, tables["gpu_hourly"], forecast.horizon_s, forecast.threshold
        )
        if isinstance(forecast, ForecastRule)
        else FORECASTS.empty_table()
    )
    tables["realized"] = realized_table(
        taken_in(cycles, period),
        _history(tables["gpu_hourly"], previous, "gpu_hourly", period),
        _history(tables["holder_hourly"], previous, "holder_hourly", period),
        period.end,
    )
    if previous is None:
        notes.append(
            DataQualityNote(kind="previous", message=f"no report for {period.previous().label}")
        )
    return ReportData(
        settings.cluster.name,
        period,
        tables,
        previous,
        tuple(notes),
        near_oom=near_oom_of(components.rules),
        trend=trend,
        prices=PricesUsed(components.price_book.path, components.price_book.is_example),
    )


class _OneHistory:
    """The metrics source, with one hourly history of the period serving the savings (a
    cycle at the period's end looks back over the same hours) and the report's tables:
    the samples are read once, not once for each."""

    def __init__(
        self, metrics: MetricsSource, request: HistoryRequest, progress: Progress | None
    ) -> None:
        self.metrics = metrics
        self.name = metrics.name
        self.request = request
        self.progress = progress
        self._frame: HistoryFrame | None = None

    def window_stats(self, request: WindowRequest) -> WindowStats:
        return self.metrics.window_stats(request)

    def forget(self) -> None:
        self._frame = None

    def holders(self, request: HistoryRequest, progress: Progress | None = None) -> HolderHistory:
        return self.metrics.holders(request, progress)

    def history(self, request: HistoryRequest, progress: Progress | None = None) -> HistoryFrame:
        mine = self.request
        same = (request.start, request.end, request.step_s) == (mine.start, mine.end, mine.step_s)
        if not same or not request.specs <= mine.specs:
            return self.metrics.history(request, progress)
        if self._frame is None:
            self._frame = self.metrics.history(mine, progress or self.progress)
            for array in self._frame.values.values():
                array.setflags(write=False)  # shared by every reader: none may change it
        frame = self._frame
        # The GPUs with data in these aggregates, as a history of them alone lists them.
        kept = np.zeros(len(frame.devices), dtype=bool)
        for spec in request.specs:
            kept |= ~np.isnan(frame.values[spec]).all(axis=1)
        if kept.all():
            values = {spec: frame.values[spec] for spec in request.specs}
            return HistoryFrame(frame.devices, frame.times_s, values)
        devices = tuple(d for d, keep in zip(frame.devices, kept, strict=True) if keep)
        values = {spec: frame.values[spec][kept] for spec in request.specs}
        return HistoryFrame(devices, frame.times_s, values)


def _one_history(
    components: Components, settings: Settings, period: ReportPeriod, progress: Progress | None
) -> Components:
    """``components`` reading the period's hourly history once, where the savings' look
    back covers exactly the period (the default: a week)."""
    if settings.savings.lookback_s != int((period.end - period.start).total_seconds()):
        return components
    specs = _table_specs(components.rules, findings=True) | SAVINGS_SPECS
    request = HistoryRequest(period.start, period.end, HOUR_S, specs)
    return replace(components, metrics=_OneHistory(components.metrics, request, progress))


def _table_specs(rules: Sequence[Rule], findings: bool) -> frozenset[AggregateSpec]:
    """What the tables read of every hour (and the findings, the rules' aggregates)."""
    return frozenset(SPECS.values()) | (required_specs(rules) if findings else frozenset())


def near_oom_of(rules: Sequence[Rule]) -> NearOom | None:
    """The near-OOM rule as the report draws it; None when no enabled rule has the role
    (its role guarantees a threshold rule on the framebuffer ratio)."""
    rule = rule_for(rules, Role.NEAR_OOM)
    if not isinstance(rule, ThresholdRule):
        return None
    return NearOom(rule.id, rule.threshold, inclusive=rule.op == ">=")


def build_tables(
    components: Components,
    settings: Settings,
    period: ReportPeriod,
    sample_interval_s: float,
    *,
    findings: bool = True,
    progress: Progress | None = None,
    stage: Stage | None = None,
) -> Built:
    """``gpu_hourly``, ``holder_hourly`` (and, with ``findings``, the ``findings``
    episodes) of a period."""
    rules = components.rules
    if stage:
        stage("cluster")
    cluster = components.cluster.snapshot(period.end)
    rule_specs = required_specs(rules) if findings else frozenset()
    hours = HistoryRequest(period.start, period.end, HOUR_S, _table_specs(rules, findings))
    if stage:
        stage("history")
    frame = components.metrics.history(hours, progress)
    if stage:
        stage("holders")
    holders = components.metrics.holders(replace(hours, specs=frozenset()), progress)
    if stage:
        stage("tables")
    attribution = attribute(
        frame.devices, cluster, settings.attribution, period.end, lookback_s(rules)
    )
    contexts = attribution.contexts[: len(frame.devices)]
    hourly = hourly_tables(
        HourlyInputs(
            frame=frame,
            holders=holders,
            contexts=contexts,
            cluster=cluster,
            book=components.price_book,
            team_label=settings.attribution.team_label,
            sample_interval_s=sample_interval_s,
        )
    )
    tables = {"gpu_hourly": hourly.gpu_hourly, "holder_hourly": hourly.holder_hourly}
    if findings:
        rule_frame = HistoryFrame(
            frame.devices, frame.times_s, {s: frame.values[s] for s in rule_specs}
        )
        codes = holders.aligned([d.device_id for d in frame.devices])
        tables["findings"] = findings_table(
            rules, rule_frame, contexts, codes, hourly.exporter, sample_interval_s
        )
    return Built(tables, hourly.notes)


def _savings(
    components: Components, settings: Settings, at: datetime
) -> tuple[pa.Table, pa.Table, list[DataQualityNote]]:
    """What each change would save, and where each budget stands, as a cycle at ``at``
    computes them: the cycle's first two phases (its reads and its analysis), never its
    effects."""
    gathered = gather(components, settings, at, for_effects=False)
    analysis = analyse(gathered, components.rules, components.price_book, settings)
    notes = [DataQualityNote(kind="savings", message=e) for e in analysis.errors]
    return savings_table(analysis.savings.savings, at), budgets_table(analysis.budgets), notes


def savings_table(savings: Sequence[Saving], at: datetime) -> pa.Table:
    """The ``savings`` table: every figure the plan computed, so that the page's (the net
    cash, the reclaimed capacity beside it, each lever's gross and net, what blocks it)
    recomputes from the Parquet. Rows in the plan's order."""
    ordered = sorted(savings, key=lambda s: (s.order, -s.net_monthly, -s.monthly))
    return pa.Table.from_pylist(
        [
            {
                "kind": s.kind,
                "scope": json.dumps(dict(s.scope), sort_keys=True),
                "monthly": _micro(s.monthly),
                "currency": s.currency,
                "confidence": s.confidence,
                "formula": s.formula,
                "inputs": json.dumps(_jsonable(s.inputs), sort_keys=True),
                "assumptions": json.dumps(list(s.assumptions)),
                "action": s.action,
                "at": at,
                "net_monthly": _micro(s.net_monthly),
                "cash": s.cash,
                "reclaimed_gpu_hours_monthly": s.reclaimed_gpu_hours_monthly,
                "reclaimed_monthly": _micro(s.reclaimed_monthly),
                "gpus": json.dumps(list(s.gpu_uuids)),
                "nodes": json.dumps(list(s.nodes)),
                "blocked": s.blocked,
                "unblock": s.unblock,
                "lookback_s": s.lookback_s,
                "hours_counted": s.hours_counted,
                "order": s.order,
                # The scope again as plain columns: SQL groups by them on any engine.
                **{name: s.scope.get(name) for name in ("team", "pool", "workload")},
            }
            for s in ordered
        ],
        schema=SAVINGS,
    )


def _history(
    table: pa.Table, previous: Mapping[str, pa.Table] | None, name: str, period: ReportPeriod
) -> CostHistory:
    """The period's cost rows, and the previous period's where it is known (so that an
    action early in the week has hours before it to compare)."""
    columns = ["hour", "node", "namespace", "pod", "workload", "cost", "currency"]
    mine = table.select([c for c in columns if c in table.column_names])
    before = (previous or {}).get(name)
    if before is None or not before.num_rows:
        return CostHistory(mine, period.start)
    earlier = before.select(mine.column_names).cast(mine.schema)
    return CostHistory(pa.concat_tables([earlier, mine]), period.previous().start)


def _micro(amount: Decimal) -> Decimal:
    """To the sixth place, as the Parquet decimal holds it (pyarrow refuses to round)."""
    return amount.quantize(MICRO, rounding=ROUND_HALF_EVEN)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
