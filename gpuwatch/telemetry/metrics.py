"""gpuwatch's own metrics: what each cycle found, what idle GPUs cost, what was done.

A cycle's JSON document says all this once; these metrics say it over time, so that
Prometheus can graph idle cost per team, alert when gpuwatch stops succeeding, and
show how often notifications fail. ``SelfMetrics.observe`` is called once per cycle
with its ``CycleResult``; the daemon serves the registry on ``/metrics`` and the
CronJob pushes it to a Pushgateway.

Two kinds of series, with different rules:

* Counters and the duration histogram count every cycle, errored or not:
  ``gpuwatch_cycles_total{outcome}``, ``gpuwatch_actions_total{kind,status}``,
  ``gpuwatch_notifications_total{status}``, ``gpuwatch_cycle_duration_seconds``.
* Gauges describe the last cycle that judged the cluster (an ok cycle). An errored
  cycle judged nothing (the pipeline keeps its state for the same reason: a finding
  does not resolve because Prometheus was down), so it leaves them as they were.
  A label set that a later ok cycle no longer reports (a rule with no findings left,
  a team with no GPUs) reads 0, which is true, rather than vanishing, which Prometheus
  cannot tell from a failed scrape; alerts on ``> 0`` then resolve cleanly. Every
  label takes values from a finite set (rules, severities, teams, saving kinds,
  currencies), so remembering the label sets seen is bounded.

The gauges are published as one snapshot per cycle, swapped in whole, so a scrape
that lands mid-``observe`` sees one cycle's values, never half of two.

Money is a float in the currency's units (the ``currency`` label); the cycle result
keeps the exact ``Decimal`` amounts.

Every metric lives in the ``registry`` passed in: tests build a fresh
``CollectorRegistry`` and read samples back with ``get_sample_value``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gpuwatch.model.result import CycleResult

CYCLE_DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Seconds. A cycle is a few range queries and one cluster listing: seconds on a small
cluster, tens of seconds on a large one; past a minute something is slow."""

NOTIFICATION_STATUSES = ("composed", "printed", "sent", "failed")
OUTCOMES = ("ok", "error")

Labels = tuple[str, ...]


@dataclass(frozen=True)
class _GaugeSpec:
    name: str
    documentation: str
    labels: tuple[str, ...] = ()


FINDINGS = _GaugeSpec(
    "gpuwatch_findings",
    "Findings of the last successful cycle, by rule and severity (0: none any more).",
    ("rule", "severity"),
)
IDLE_COST = _GaugeSpec(
    "gpuwatch_idle_cost_per_hour",
    "Idle GPU cost per hour by team, averaged over the cost window of the last successful "
    "cycle: idle_cost over the window x 3600 / cost.window_s, in the currency's units.",
    ("team", "currency"),
)
SAVINGS = _GaugeSpec(
    "gpuwatch_savings_per_month",
    "Net cash savings per 30 days by lever from the last successful cycle's savings plan "
    "(each GPU-hour and node counted once; reclaimed capacity and blocked levers are 0).",
    ("kind", "currency"),
)
SAVINGS_NET = _GaugeSpec(
    "gpuwatch_savings_net_per_month",
    "Net cash savings per 30 days from the last successful cycle: the sum of the plan's items.",
    ("currency",),
)
UNDELIVERED = _GaugeSpec(
    "gpuwatch_notifications_undelivered",
    "Notifications of the last successful cycle that failed to be delivered.",
)
GPUS = _GaugeSpec(
    "gpuwatch_gpus",
    "GPUs the last successful cycle saw: in the metrics source, and in the cluster.",
    ("source",),
)
LAST_SUCCESS = _GaugeSpec(
    "gpuwatch_last_success_timestamp_seconds",
    "Unix time at which the last successful cycle finished (absent until one has).",
)
CYCLE_GAUGES = (FINDINGS, IDLE_COST, SAVINGS, SAVINGS_NET, UNDELIVERED, GPUS, LAST_SUCCESS)


class SelfMetrics:
    """gpuwatch's own metrics in ``registry``; feed it each cycle's result."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        last_success_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``last_success_s``: when the last successful cycle finished (Unix time), as
        a previous process recorded it; a CronJob run that errors then still reports
        the last success instead of none. ``clock``: wall-clock time, for tests."""
        self.registry = registry
        self._clock = clock
        self._gauges = _CycleGauges()
        self._values: dict[str, dict[Labels, float]] = {spec.name: {} for spec in CYCLE_GAUGES}
        if last_success_s is not None:
            self._values[LAST_SUCCESS.name][()] = last_success_s
            self._gauges.publish(self._values)

        self.cycles = Counter(
            "gpuwatch_cycles",
            "Cycles run, by outcome: ok, or error (a source failed; nothing was judged).",
            ["outcome"],
            registry=registry,
        )
        self.actions = Counter(
            "gpuwatch_actions",
            "Actions recorded by cycles, by kind and status (planned, done, refused, failed).",
            ["kind", "status"],
            registry=registry,
        )
        self.notifications = Counter(
            "gpuwatch_notifications",
            "Notifications by delivery status: composed, printed (console), sent, failed.",
            ["status"],
            registry=registry,
        )
        self.duration = Histogram(
            "gpuwatch_cycle_duration_seconds",
            "Wall-clock seconds per cycle, errored cycles included.",
            buckets=CYCLE_DURATION_BUCKETS,
            registry=registry,
        )
        registry.register(self._gauges)
        # Known label values start at 0, so that rate() and increase() see the first one.
        for outcome in OUTCOMES:
            self.cycles.labels(outcome)
        for status in NOTIFICATION_STATUSES:
            self.notifications.labels(status)

    @property
    def last_success_s(self) -> float | None:
        """Unix time at which the last successful cycle finished; None before one has."""
        return self._values[LAST_SUCCESS.name].get(())

    def observe(self, result: CycleResult) -> None:
        """Record one finished cycle: once per cycle, right after it ends, from one thread
        (scrapes may run concurrently on others)."""
        self.cycles.labels("ok" if result.ok else "error").inc()
        self.duration.observe(result.duration_s)
        for action in result.actions:
            self.actions.labels(action.kind, str(action.status)).inc()
        for notification in result.notifications:
            self.notifications.labels(notification.status).inc()
        if not result.ok:
            return

        current = {
            FINDINGS.name: _count((f.rule, str(f.severity)) for f in result.findings),
            IDLE_COST.name: _idle_cost_per_hour(result),
            SAVINGS.name: _sum(((s.kind, s.currency), s.net_monthly) for s in result.savings),
            SAVINGS_NET.name: _sum(((t.currency,), t.net_monthly) for t in result.savings_totals),
            UNDELIVERED.name: {
                (): float(sum(1 for n in result.notifications if n.status == "failed"))
            },
            GPUS.name: {
                ("metrics",): float(result.source.gpus_in_metrics),
                ("cluster",): float(result.source.gpus_in_cluster),
            },
            LAST_SUCCESS.name: {(): self._clock()},
        }
        values: dict[str, dict[Labels, float]] = {}
        for spec in CYCLE_GAUGES:
            new = current[spec.name]
            if spec is IDLE_COST and result.cost is None:
                values[spec.name] = {}  # no cost report: unknown, not zero
            else:
                values[spec.name] = {**dict.fromkeys(self._values[spec.name], 0.0), **new}
        self._values = values
        self._gauges.publish(values)


class _CycleGauges(Collector):
    """The per-cycle gauges, exposed from one immutable snapshot swapped in whole."""

    def __init__(self) -> None:
        self._families: tuple[GaugeMetricFamily, ...] = ()

    def publish(self, values: Mapping[str, Mapping[Labels, float]]) -> None:
        families = []
        for spec in CYCLE_GAUGES:
            family = _family(spec)
            for labels, value in sorted(values.get(spec.name, {}).items()):
                family.add_metric(list(labels), value)
            families.append(family)
        self._families = tuple(families)  # one reference assignment: atomic for readers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._families)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """Names only, so the registry refuses a second collector with the same ones."""
        return iter([_family(spec) for spec in CYCLE_GAUGES])


def _family(spec: _GaugeSpec) -> GaugeMetricFamily:
    if spec.labels:
        return GaugeMetricFamily(spec.name, spec.documentation, labels=list(spec.labels))
    return GaugeMetricFamily(spec.name, spec.documentation)


def _idle_cost_per_hour(result: CycleResult) -> dict[Labels, float]:
    cost = result.cost
    if cost is None or cost.window_s <= 0:
        return {}
    return _sum(
        ((g.key, g.currency), g.idle_cost * 3600 / cost.window_s)
        for g in cost.groups.get("team", ())
    )


def _count(keys: Iterable[Labels]) -> dict[Labels, float]:
    counts: dict[Labels, float] = {}
    for key in keys:
        counts[key] = counts.get(key, 0.0) + 1.0
    return counts


def _sum(amounts: Iterable[tuple[Labels, Decimal]]) -> dict[Labels, float]:
    """Sum exactly in Decimal, then convert once: no float drift across many lines."""
    sums: dict[Labels, Decimal] = {}
    for key, amount in amounts:
        sums[key] = sums.get(key, Decimal(0)) + amount
    return {key: float(total) for key, total in sums.items()}
