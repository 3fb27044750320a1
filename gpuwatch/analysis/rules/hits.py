"""Where each rule fires, as masks over arrays: one value per GPU (a cycle) or one per
GPU and hour (the weekly report, every hour of the week at once).

Each rule kind's condition is written once, here, on arrays of any shape, so that a
cycle's evaluation and the report's are the same code: a week of findings is what hourly
cycles would have found, computed in a few array operations per rule over a GPU x hour
grid rather than one evaluation per hour. Per-GPU facts (the rule's pools, a GPU pool,
a pod ended inside the look-back) are (GPUs,) arrays; on a grid they apply to every
hour. Whether a GPU is allocated may change from hour to hour, so it has the grid's
shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.rules.schema import (
    DataGapRule,
    Rule,
    ThresholdRule,
    UnallocatedRule,
    XidRule,
)
from gpuwatch.model.metrics import SIGNAL_UNITS, Aggregate, AggregateSpec, FloatArray, Signal

BoolArray = npt.NDArray[np.bool_]
OPS: Mapping[str, Callable[[FloatArray, float], BoolArray]] = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}


@dataclass(frozen=True)
class Grid:
    """Aggregates of n GPUs at one instant (arrays of shape (n,), ``at_s`` a number) or
    at h instants (arrays (n, h), ``at_s`` the (h,) instants)."""

    values: Mapping[AggregateSpec, FloatArray]
    shape: tuple[int, ...]
    at_s: float | FloatArray
    sample_interval_s: float

    def get(self, spec: AggregateSpec) -> FloatArray:
        """The array for ``spec``; all NaN when the source could not compute it."""
        found = self.values.get(spec)
        return np.full(self.shape, np.nan) if found is None else found

    def coverage_ratio(self, signal: Signal, window_s: int) -> FloatArray:
        """Fraction of the window that has samples of ``signal``, in 0..1."""
        count = self.get(AggregateSpec(signal, Aggregate.COUNT, window_s))
        expected = max(window_s / self.sample_interval_s, 1.0)
        return np.clip(np.where(np.isnan(count), 0.0, count) / expected, 0.0, 1.0)

    def per_gpu(self, mask: BoolArray) -> BoolArray:
        """A (n,) fact about each GPU, shaped to broadcast over the grid."""
        return mask.reshape(mask.shape + (1,) * (len(self.shape) - 1))


@dataclass(frozen=True)
class Hits:
    """Where one rule fires, and what its findings there say. Arrays have the grid's
    shape; ``value`` is NaN where a finding has no value."""

    fired: BoolArray
    value: FloatArray
    coverage: FloatArray
    threshold: float | None
    unit: str
    unjudged: BoolArray | None = None
    """In the rule's scope but with too little data to judge (threshold, unallocated)."""
    critical: BoolArray | None = None
    """Severity raised to critical (XID codes the rule calls critical)."""
    since_s: FloatArray | None = None
    """Data gap: the newest sample's time where the metrics went stale (NaN elsewhere)."""


def in_pools(rule: Rule, contexts: Sequence[GpuContext]) -> BoolArray:
    """GPUs in the rule's pools (every GPU when it names none)."""
    if rule.pools is None:
        return np.ones(len(contexts), dtype=bool)
    pools = set(rule.pools)
    return np.fromiter((c.pool in pools for c in contexts), dtype=bool, count=len(contexts))


def _eligible(contexts: Sequence[GpuContext]) -> BoolArray:
    """In a GPU pool (asked once per node: its GPUs share the answer) and not released
    within the look-back."""
    pooled: dict[str, bool] = {}
    out = np.empty(len(contexts), dtype=bool)
    for i, ctx in enumerate(contexts):
        known = pooled.get(ctx.node_name)
        if known is None:
            known = pooled[ctx.node_name] = ctx.in_gpu_pool
        out[i] = known and not ctx.recently_released
    return out


def on_grid(rule: Rule) -> bool:
    """The rule is judged on window aggregates, so on a grid. A forecast fits a line to
    recent samples and a budget reads the month's spend: neither is."""
    return isinstance(rule, ThresholdRule | UnallocatedRule | XidRule | DataGapRule)


def rule_hits(rule: Rule, grid: Grid, contexts: Sequence[GpuContext], allocated: BoolArray) -> Hits:
    """Where ``rule`` fires on ``grid``; ``contexts[i]`` describes GPU i (exactly n of
    them) and ``allocated`` (the grid's shape) says whether a pod held it. Only for a
    rule ``on_grid``."""
    if isinstance(rule, ThresholdRule):
        return _threshold(rule, grid, contexts, allocated)
    if isinstance(rule, UnallocatedRule):
        return _unallocated(rule, grid, contexts, allocated)
    if isinstance(rule, XidRule):
        return _xid(rule, grid, contexts)
    if isinstance(rule, DataGapRule):
        return _data_gap(rule, grid, contexts)
    raise TypeError(f"rule {rule.id} ({type(rule).__name__}) is not judged on a grid")


def _threshold(
    rule: ThresholdRule, grid: Grid, contexts: Sequence[GpuContext], allocated: BoolArray
) -> Hits:
    values = grid.get(AggregateSpec(rule.signal, Aggregate(rule.aggregate), rule.window_s))
    coverage = grid.coverage_ratio(rule.signal, rule.window_s)
    scope = grid.per_gpu(in_pools(rule, contexts))
    if rule.scope == "allocated":
        scope = scope & allocated
    elif rule.scope == "unallocated":
        scope = scope & ~allocated
    judged = coverage >= rule.min_coverage
    with np.errstate(invalid="ignore"):
        fired = scope & judged & ~np.isnan(values) & OPS[rule.op](values, rule.threshold)
    unit = SIGNAL_UNITS[rule.signal]
    return Hits(fired, values, coverage, rule.threshold, unit, unjudged=scope & ~judged)


def _unallocated(
    rule: UnallocatedRule, grid: Grid, contexts: Sequence[GpuContext], allocated: BoolArray
) -> Hits:
    w = rule.window_s
    attached = grid.get(AggregateSpec(Signal.POD_ATTACHED, Aggregate.MAX, w))
    util = grid.get(AggregateSpec(Signal.UTIL_RATIO, Aggregate.AVG, w))
    coverage = grid.coverage_ratio(Signal.UTIL_RATIO, w)
    scope = grid.per_gpu(_eligible(contexts) & in_pools(rule, contexts)) & ~allocated
    judged = coverage >= rule.min_coverage
    # Any sample in the window carrying a pod label means a pod held the GPU then.
    fired = scope & judged & ~(attached > 0)  # NaN (no sample) is not attached
    return Hits(fired, util, coverage, None, "ratio", unjudged=scope & ~judged)


def _xid(rule: XidRule, grid: Grid, contexts: Sequence[GpuContext]) -> Hits:
    w = rule.window_s
    changes = grid.get(AggregateSpec(Signal.XID, Aggregate.CHANGES, w))
    highest = grid.get(AggregateSpec(Signal.XID, Aggregate.MAX, w))
    last = grid.get(AggregateSpec(Signal.XID, Aggregate.LAST, w))
    with np.errstate(invalid="ignore"):
        changed = grid.per_gpu(in_pools(rule, contexts)) & (changes >= 1)  # NaN: no change
        # The newest code when it is an error, else the worst seen in the window.
        code = np.where(last > 0, last, highest)
        known = code > 0
    whole = np.trunc(np.where(known, code, 0.0))
    fired = changed & known & ~np.isin(whole, rule.ignore_codes)
    critical = np.isin(whole, rule.critical_codes)
    coverage = grid.coverage_ratio(Signal.XID, w)
    return Hits(fired, code, coverage, None, "code", critical=critical)


def _data_gap(rule: DataGapRule, grid: Grid, contexts: Sequence[GpuContext]) -> Hits:
    w = rule.window_s
    coverage = grid.coverage_ratio(Signal.UTIL_RATIO, w)
    last_ts = grid.get(AggregateSpec(Signal.UTIL_RATIO, Aggregate.LAST_TS, w))
    with np.errstate(invalid="ignore"):
        age = np.where(np.isnan(last_ts), np.inf, grid.at_s - last_ts)
    stale = age > rule.stale_after_s
    fired = grid.per_gpu(in_pools(rule, contexts)) & ((coverage < rule.min_coverage) | stale)
    since = np.where(stale & np.isfinite(age), last_ts, np.nan)
    return Hits(fired, coverage, coverage, rule.min_coverage, "ratio", since_s=since)
