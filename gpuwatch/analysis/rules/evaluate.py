"""Evaluate rules against one cycle's window aggregates and GPU contexts.

Rules of thought that hold for every kind:
- No data is not zero. Aggregates skip missing samples; a GPU whose window is covered
  less than the rule's ``min_coverage`` is not judged at all (the rule with role
  ``data_gap`` reports it).
- An allocated GPU and an unallocated one are different problems: ``scope`` keeps the
  idle rule (allocated GPUs) and the unallocated rule apart, never both for one GPU.
- ``since`` is when a finding first fired in consecutive cycles (from the state), or the
  start of the window that proves it when it is new.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.forecast import FitSettings, FitVerdict, GrowthFit
from gpuwatch.analysis.forecast_rows import RowFits, fit_rows
from gpuwatch.analysis.rules.hits import Grid, in_pools, rule_hits
from gpuwatch.analysis.rules.schema import (
    BudgetRule,
    DataGapRule,
    ForecastRule,
    Rule,
    ThresholdRule,
    UnallocatedRule,
    XidRule,
)
from gpuwatch.model.durations import format_duration, format_eta
from gpuwatch.model.findings import (
    DataQualityNote,
    Finding,
    GpuHolder,
    Role,
    Severity,
    format_value,
)
from gpuwatch.model.metrics import (
    SIGNAL_UNITS,
    Aggregate,
    AggregateSpec,
    HistoryFrame,
    HistoryRequest,
    Signal,
    WindowStats,
)

_DEFAULT_MESSAGES = {
    "threshold": "GPU {gpu} on {node} ({holder}): {value} {op} {threshold} over {window}",
    "unallocated": "GPU {gpu} on {node} in pool {pool}: no pod held it for {window}",
    "xid": "GPU {gpu} on {node} ({holder}) reported XID {value} within {window}",
    "data_gap": "GPU {gpu} on {node}: metrics cover {coverage} of the last {window}",
    "forecast": "GPU {gpu} on {node} ({holder}) at {value}, rising {rate}: at this rate, "
    "full ({threshold}) in {eta}",
}


@dataclass(frozen=True)
class Evaluation:
    findings: tuple[Finding, ...]
    notes: tuple[DataQualityNote, ...]


def required_specs(rules: Sequence[Rule]) -> frozenset[AggregateSpec]:
    """The aggregates that ``rules`` need from a metrics source."""
    specs: set[AggregateSpec] = set()
    for rule in rules:
        if not rule.enabled:
            continue
        w = rule.window_s
        if isinstance(rule, ThresholdRule):
            specs.add(AggregateSpec(rule.signal, Aggregate(rule.aggregate), w))
            specs.add(AggregateSpec(rule.signal, Aggregate.COUNT, w))
        elif isinstance(rule, UnallocatedRule):
            specs.add(AggregateSpec(Signal.POD_ATTACHED, Aggregate.MAX, w))
            specs.add(AggregateSpec(Signal.UTIL_RATIO, Aggregate.AVG, w))
            specs.add(AggregateSpec(Signal.UTIL_RATIO, Aggregate.COUNT, w))
        elif isinstance(rule, XidRule):
            for agg in (Aggregate.CHANGES, Aggregate.MAX, Aggregate.LAST, Aggregate.COUNT):
                specs.add(AggregateSpec(Signal.XID, agg, w))
        elif isinstance(rule, DataGapRule):
            specs.add(AggregateSpec(Signal.UTIL_RATIO, Aggregate.COUNT, w))
            specs.add(AggregateSpec(Signal.UTIL_RATIO, Aggregate.LAST_TS, w))
    return frozenset(specs)


def series_request(rules: Sequence[Rule], at: datetime) -> HistoryRequest | None:
    """The recent samples the enabled forecast rules fit lines through: each step's
    highest value over the longest forecast window, at the finest step asked for. None
    when no forecast rule is enabled."""
    forecasts = [r for r in rules if r.enabled and isinstance(r, ForecastRule)]
    if not forecasts:
        return None
    step_s = min(r.step_s for r in forecasts)
    window_s = max(r.window_s for r in forecasts)
    specs = frozenset(AggregateSpec(r.signal, Aggregate.MAX, step_s) for r in forecasts)
    return HistoryRequest(at - timedelta(seconds=window_s), at, step_s, specs)


def lookback_s(rules: Sequence[Rule]) -> int:
    """The longest window among enabled rules (0 when there are none), which is how
    far back a pod that finished still counts as having held its GPUs. A forecast's
    window is the sample history its line is fitted to, not a window a GPU is judged
    held or unheld over, so it does not count."""
    return max(
        (r.window_s for r in rules if r.enabled and not isinstance(r, ForecastRule | BudgetRule)),
        default=0,
    )


def evaluate(
    rules: Sequence[Rule],
    stats: WindowStats,
    contexts: Sequence[GpuContext],
    since_by_key: Mapping[str, datetime] | None = None,
    explain: bool = True,
    series: HistoryFrame | None = None,
) -> Evaluation:
    """Every finding of every enabled rule; ``contexts[i]`` describes ``stats.devices[i]``
    for i < len(devices), the rest are GPUs the cluster has but the metrics lack.

    ``explain=False`` leaves each finding's message empty and writes no note for GPUs
    not judged: evaluating every hour of a week, only the findings' identities and
    values are wanted, and a sentence per GPU per hour would be most of the work.
    ``series`` holds the recent samples ``series_request`` asked for; forecast rules
    judge no GPU without them."""
    since_by_key = since_by_key or {}
    findings: list[Finding] = []
    notes: list[DataQualityNote] = []
    n = len(stats.devices)
    allocated = np.fromiter((c.allocated for c in contexts[:n]), dtype=bool, count=n)
    recent = _RecentSamples(stats, series)
    for rule in rules:
        if not rule.enabled:
            continue
        if isinstance(rule, ForecastRule):
            found = _forecast(rule, stats, contexts[:n], allocated, recent.of(rule))
        elif isinstance(rule, BudgetRule):
            continue  # judged on the month's spend (``analysis/budgets.py``), not a window
        else:
            found = _candidates(rule, stats, contexts, allocated, notes if explain else None)
            if rule.role is Role.NEAR_OOM and isinstance(rule, ThresholdRule):
                found = _time_to_full(found, recent.of(_forecast_of(rule, rules)))
        for candidate in found:
            finding = candidate.build(rule, stats.at, explain)
            prior = since_by_key.get(finding.key)
            if prior is not None and prior < finding.since:
                finding = replace(finding, since=prior)
            findings.append(finding)
    findings.sort(key=lambda f: (SEVERITY_ORDER[f.severity], f.rule, f.node, f.gpu_index or 0))
    return Evaluation(tuple(findings), tuple(notes))


SEVERITY_ORDER = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(frozen=True)
class Candidate:
    """A rule firing on one GPU, before it is a ``Finding`` (which needs the instant)."""

    ctx: GpuContext
    value: float | None
    threshold: float | None
    coverage: float | None
    unit: str
    since: datetime | None = None
    severity: Severity | None = None
    extra: Mapping[str, Any] | None = None
    fit: GrowthFit | None = None

    def build(self, rule: Rule, at: datetime, messages: bool = True) -> Finding:
        ctx = self.ctx
        device = ctx.device
        primary = ctx.holders[0] if ctx.holders else None
        since = self.since or at - timedelta(seconds=rule.window_s)
        message = self._message(rule, primary) if messages else ""
        return Finding(
            rule=rule.id,
            role=rule.role,
            severity=self.severity or rule.severity,
            gpu_uuid=device.uuid if device else None,
            device_id=device.device_id if device else None,
            gpu_index=device.index if device and device.index >= 0 else None,
            node=ctx.node_name,
            pool=ctx.pool,
            model=ctx.model,
            capacity_type=ctx.capacity_type,
            namespace=primary.namespace if primary else None,
            pod=primary.pod if primary else None,
            workload=primary.workload if primary else None,
            team=primary.team if primary else None,
            value=self.value,
            threshold=self.threshold,
            unit=self.unit,
            window_s=rule.window_s,
            coverage_ratio=self.coverage,
            since=since,
            message=message,
            attribution=ctx.attribution,
            holders=ctx.holders,
            eta_s=self.fit.eta_s if self.fit else None,
            fit_r2=self.fit.fit_r2 if self.fit else None,
            rate_per_h=self.fit.rate_per_h if self.fit else None,
        )

    def _message(self, rule: Rule, primary: GpuHolder | None) -> str:
        template = rule.message or _DEFAULT_MESSAGES[rule.kind]
        return template.format_map(_Fields(self, rule, primary))


Field = Callable[[Candidate, Rule, GpuHolder | None], Any]
_FIELDS: dict[str, Field] = {
    "rule": lambda c, rule, primary: rule.id,
    "gpu": lambda c, rule, primary: c.ctx.gpu_shown,
    "gpu_uuid": lambda c, rule, primary: c.ctx.device.uuid if c.ctx.device else "",
    "node": lambda c, rule, primary: c.ctx.node_shown,
    "pool": lambda c, rule, primary: c.ctx.pool or "(no pool)",
    "model": lambda c, rule, primary: c.ctx.model or "unknown model",
    "namespace": lambda c, rule, primary: primary.namespace if primary else "",
    "pod": lambda c, rule, primary: primary.pod if primary else "",
    "workload": lambda c, rule, primary: (primary.workload or "") if primary else "",
    "team": lambda c, rule, primary: primary.team if primary else "",
    "holder": lambda c, rule, primary: _holder_text(c.ctx),
    "value": lambda c, rule, primary: _Shown(c.value, c.unit),
    "threshold": lambda c, rule, primary: _Shown(c.threshold, c.unit),
    "op": lambda c, rule, primary: getattr(rule, "op", ""),
    "window": lambda c, rule, primary: format_duration(rule.window_s),
    "coverage": lambda c, rule, primary: _Shown(c.coverage, "ratio"),
    "unit": lambda c, rule, primary: c.unit,
}
"""What a rule's message template may name (besides the candidate's ``extra``)."""


class _Fields(dict[str, Any]):
    """A message's fields, each worked out when the template names it: most templates
    name a few of them, and a cycle writes a message per finding."""

    def __init__(self, candidate: Candidate, rule: Rule, primary: GpuHolder | None) -> None:
        super().__init__(candidate.extra or {})
        self.candidate, self.rule, self.primary = candidate, rule, primary

    def __missing__(self, key: str) -> Any:
        field = _FIELDS.get(key)
        if field is None:
            raise KeyError(key)
        value = self[key] = field(self.candidate, self.rule, self.primary)
        return value


class _Shown(float):
    """A number that formats itself with its unit when the template gives no format."""

    unit: str

    def __new__(cls, value: float | None, unit: str) -> _Shown:
        shown = super().__new__(cls, math.nan if value is None else value)
        shown.unit = unit
        return shown

    def __format__(self, spec: str) -> str:
        if spec:
            return float.__format__(self, spec)
        return format_value(float(self), self.unit)


def _holder_text(ctx: GpuContext) -> str:
    if not ctx.holders:
        return "unallocated"
    first = ctx.holders[0]
    text = first.workload or f"Pod/{first.namespace}/{first.pod}"
    if len(ctx.holders) > 1:
        text += f" and {len(ctx.holders) - 1} more sharing it"
    return text


def _not_judged(rule: Rule, ctx: GpuContext, coverage: float, minimum: float) -> DataQualityNote:
    device = ctx.device
    return DataQualityNote(
        kind="not_judged",
        node=ctx.node_name,
        gpu_uuid=device.uuid if device else None,
        window_s=rule.window_s,
        coverage_ratio=coverage,
        message=f"{rule.id}: GPU {ctx.gpu_shown} on {ctx.node_shown} not "
        f"judged: metrics cover {format_value(coverage, 'ratio')} of "
        f"{format_duration(rule.window_s)}, below the rule's minimum "
        f"{format_value(minimum, 'ratio')}",
        details={"rule": rule.id},
    )


def _candidates(
    rule: Rule,
    stats: WindowStats,
    contexts: Sequence[GpuContext],
    allocated: np.ndarray,
    notes: list[DataQualityNote] | None,
) -> list[Candidate]:
    """The rule's findings among the GPUs with metrics (``contexts[:n]``), and for the
    data_gap kind the GPUs the cluster advertises that the metrics lack."""
    n = len(stats.devices)
    grid = Grid(stats.values, (n,), stats.at.timestamp(), stats.sample_interval_s)
    hits = rule_hits(rule, grid, contexts[:n], allocated)
    if notes is not None and hits.unjudged is not None:
        minimum = float(getattr(rule, "min_coverage", 0.0))
        for i in np.flatnonzero(hits.unjudged).tolist():
            notes.append(_not_judged(rule, contexts[i], float(hits.coverage[i]), minimum))
    found = []
    for i in np.flatnonzero(hits.fired).tolist():
        value = float(hits.value[i])
        since_s = float(hits.since_s[i]) if hits.since_s is not None else math.nan
        critical = hits.critical is not None and bool(hits.critical[i])
        found.append(
            Candidate(
                contexts[i],
                None if math.isnan(value) else value,
                hits.threshold,
                float(hits.coverage[i]),
                hits.unit,
                since=None
                if math.isnan(since_s)
                else datetime.fromtimestamp(since_s, tz=stats.at.tzinfo),
                severity=Severity.CRITICAL if critical else None,
            )
        )
    if isinstance(rule, DataGapRule):
        # Advertised by the node, absent from the metrics for the whole window.
        for i in np.flatnonzero(in_pools(rule, contexts)[n:]).tolist():
            found.append(Candidate(contexts[n + i], 0.0, rule.min_coverage, 0.0, "ratio"))
    return found


def _forecast(
    rule: ForecastRule,
    stats: WindowStats,
    contexts: Sequence[GpuContext],
    allocated: np.ndarray,
    recent: _Recent | None,
) -> list[Candidate]:
    """GPUs whose fitted line crosses the threshold within the horizon, not yet past it
    (the threshold rule of the same signal reports those)."""
    if recent is None:
        return []
    scope = in_pools(rule, contexts)
    if rule.scope == "allocated":
        scope &= allocated
    elif rule.scope == "unallocated":
        scope &= ~allocated
    unit = SIGNAL_UNITS[rule.signal]
    found = []
    judged = np.flatnonzero(scope).tolist()
    rows = [recent.row(contexts[i]) for i in judged]
    have = [k for k, row in enumerate(rows) if row is not None]  # ints: nothing for the GC
    fits = recent.fit_rows([rows[k] for k in have], rule.threshold)
    for j, k in enumerate(have):
        eta_s = fits.eta_s[j]
        if fits.verdicts[j] is not FitVerdict.RISING or eta_s is None or eta_s > rule.horizon_s:
            continue
        ctx, fit = contexts[judged[k]], fits[j]
        extra = {
            "eta": format_eta(fit.eta_s),
            "rate": f"{format_value(fit.rate_per_h, unit)}/h",
            "fit_r2": f"{fit.fit_r2:.2f}",
        }
        # A prediction holds from the cycle that makes it, not from the start of the
        # samples behind it.
        found.append(
            Candidate(
                ctx, fit.last, rule.threshold, None, unit, since=stats.at, extra=extra, fit=fit
            )
        )
    return found


FULL_RATIO = 1.0
"""The framebuffer ratio of a full card (used + free + reserved, reserved counted as not
used: a card with reserved memory runs out a little before it)."""


def _forecast_of(rule: ThresholdRule, rules: Sequence[Rule]) -> ForecastRule | None:
    """The enabled forecast rule on ``rule``'s signal, whose recent samples it shares."""
    return next(
        (r for r in rules if r.enabled and isinstance(r, ForecastRule) and r.signal == rule.signal),
        None,
    )


def _time_to_full(found: list[Candidate], recent: _Recent | None) -> list[Candidate]:
    """Near-OOM findings with the time until the card is full at the rate its memory
    grows: the forecast's robust fit through the same recent samples, to 100 %. A flat,
    falling or poorly fitted series gives no estimate (the fit's quality says why);
    without an enabled forecast rule on the signal there are no recent samples to fit."""
    if recent is None:
        return found
    fits = recent.fits([c.ctx for c in found], FULL_RATIO)
    return [replace(c, fit=fit or c.fit) for c, fit in zip(found, fits, strict=True)]


@dataclass(frozen=True)
class _Recent:
    """The recent samples a forecast rule fits lines through, over its window."""

    times: np.ndarray
    values: np.ndarray
    rows: Mapping[str, int]
    settings: FitSettings

    @classmethod
    def of(
        cls, rule: ForecastRule, stats: WindowStats, series: HistoryFrame, rows: Mapping[str, int]
    ) -> _Recent | None:
        spec = AggregateSpec(rule.signal, Aggregate.MAX, rule.step_s)
        if spec not in series.values:
            return None
        in_window = series.times_s > stats.at.timestamp() - rule.window_s
        return cls(
            series.times_s[in_window].astype(np.float64),
            series.values[spec][:, in_window],
            rows,
            FitSettings(
                min_samples=rule.min_samples,
                min_span_s=float(rule.min_span_s),
                min_fit_r2=rule.min_fit_r2,
                restart_drop=rule.restart_drop,
            ),
        )

    def row(self, ctx: GpuContext) -> int | None:
        """The GPU's row of samples; None when it has no recent samples."""
        return self.rows.get(ctx.device.device_id) if ctx.device else None

    def fit_rows(self, rows: Sequence[int], threshold: float) -> RowFits:
        """The fits of ``rows`` toward ``threshold``, in their order."""
        return fit_rows(self.times, self.values[list(rows)], threshold, self.settings)

    def fits(self, contexts: Sequence[GpuContext], threshold: float) -> list[GrowthFit | None]:
        """Each GPU's fit toward ``threshold``; None where it has no recent samples."""
        rows = [self.row(c) for c in contexts]
        fitted = self.fit_rows([r for r in rows if r is not None], threshold)
        order = iter(range(len(fitted)))
        return [None if r is None else fitted[next(order)] for r in rows]


class _RecentSamples:
    """The recent samples of each forecast rule, the series' GPUs indexed once."""

    def __init__(self, stats: WindowStats, series: HistoryFrame | None) -> None:
        self.stats, self.series = stats, series
        self.rows: dict[str, int] | None = None

    def of(self, rule: ForecastRule | None) -> _Recent | None:
        if rule is None or self.series is None:
            return None
        if self.rows is None:
            self.rows = {d.device_id: i for i, d in enumerate(self.series.devices)}
        return _Recent.of(rule, self.stats, self.series, self.rows)
