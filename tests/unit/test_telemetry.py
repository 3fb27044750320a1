"""gpuwatch's own metrics: what one cycle result turns into, and over several cycles."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry

from gpuwatch.model.actions import Action, ActionStatus
from gpuwatch.model.cost import CostGroup, CostReport
from gpuwatch.model.findings import Severity
from gpuwatch.model.result import CycleResult, Notification, SourceInfo
from gpuwatch.model.savings import Saving, SavingsTotal
from gpuwatch.telemetry.metrics import CYCLE_DURATION_BUCKETS, SelfMetrics
from tests.builders import AT, finding

WINDOW_S = 6 * 3600
EMPTY_SOURCE = SourceInfo("simulator", "simulator", 0, 0, 0, 0)


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def team(key: str, idle_cost: str, currency: str = "USD") -> CostGroup:
    return CostGroup(
        dimension="team",
        key=key,
        currency=currency,
        gpu_hours=48.0,
        cost=Decimal(idle_cost) * 2,
        idle_cost=Decimal(idle_cost),
        request_avg=8.0,
        usage_avg=0.5,
    )


def cost_report(*teams: CostGroup, window_s: int = WINDOW_S) -> CostReport:
    pool = CostGroup("pool", "gpu-training", "USD", 48.0, Decimal(100), Decimal(50), 8.0, 0.5)
    return CostReport(
        window_s=window_s, lines=(), totals=(), groups={"team": teams, "pool": (pool,)}
    )


def saving(kind: str, monthly: str, currency: str = "USD") -> Saving:
    return Saving(
        kind=kind,
        scope={"node": "node-a"},
        monthly=Decimal(monthly),
        net_monthly=Decimal(monthly),
        currency=currency,
        inputs={},
        formula="hours x price",
        assumptions=(),
        confidence="high",
        action="scale down",
    )


def action(kind: str, status: ActionStatus, target: str = "Node/node-a") -> Action:
    return Action(kind, target, status, "idle", f"{kind}|{target}", dry_run=True)


def notification(status: str) -> Notification:
    return Notification("idle", "#gpu", "Idle GPUs", "text", status=status)


def cycle(**fields) -> CycleResult:
    base = CycleResult(
        at=AT,
        cluster_name="test",
        source=SourceInfo("prometheus", "kubernetes", 16, 14, 2, 30),
        duration_s=3.2,
    )
    return replace(base, **fields)


FIRST = cycle(
    findings=(
        finding(0, rule="gpu_idle", severity=Severity.WARNING),
        finding(1, rule="gpu_idle", severity=Severity.WARNING),
        finding(2, rule="gpu_idle", severity=Severity.CRITICAL),
        finding(3, rule="memory_hog", severity=Severity.INFO),
    ),
    # 6 h window: 36.60 idle over it is 6.10 per hour.
    cost=cost_report(team("ml-research", "36.60"), team("(unallocated)", "12.00")),
    savings=(
        saving("scale_down", "1000.10"),
        saving("scale_down", "500.20"),
        saving("spot", "300.00"),
        saving("spot", "40.00", "EUR"),
    ),
    savings_totals=(
        SavingsTotal("USD", Decimal("1800.30"), Decimal("300.00"), Decimal("1500.30"), "sum"),
        SavingsTotal("EUR", Decimal("40.00"), Decimal(0), Decimal("40.00"), "sum"),
    ),
    actions=(
        action("scale_down_node", ActionStatus.PLANNED, "Node/a"),
        action("scale_down_node", ActionStatus.PLANNED, "Node/b"),
        action("scale_down_node", ActionStatus.REFUSED, "Node/c"),
    ),
    notifications=(notification("sent"), notification("failed"), notification("failed")),
    duration_s=3.2,
)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics(registry: CollectorRegistry, clock: Clock) -> SelfMetrics:
    return SelfMetrics(registry, clock=clock)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_one_cycle_sets_every_metric(metrics, registry, clock):
    metrics.observe(FIRST)

    assert value(registry, "gpuwatch_findings", rule="gpu_idle", severity="warning") == 2
    assert value(registry, "gpuwatch_findings", rule="gpu_idle", severity="critical") == 1
    assert value(registry, "gpuwatch_findings", rule="memory_hog", severity="info") == 1

    per_hour = value(registry, "gpuwatch_idle_cost_per_hour", team="ml-research", currency="USD")
    assert per_hour == pytest.approx(6.10)
    assert value(
        registry, "gpuwatch_idle_cost_per_hour", team="(unallocated)", currency="USD"
    ) == pytest.approx(2.00)
    # Only the team dimension: pools are not teams.
    assert (
        value(registry, "gpuwatch_idle_cost_per_hour", team="gpu-training", currency="USD") is None
    )

    assert value(
        registry, "gpuwatch_savings_per_month", kind="scale_down", currency="USD"
    ) == pytest.approx(1500.30)
    assert value(registry, "gpuwatch_savings_per_month", kind="spot", currency="USD") == 300.0
    assert value(registry, "gpuwatch_savings_per_month", kind="spot", currency="EUR") == 40.0
    assert value(registry, "gpuwatch_savings_net_per_month", currency="USD") == pytest.approx(
        1500.30
    )
    assert value(registry, "gpuwatch_savings_net_per_month", currency="EUR") == 40.0

    assert value(registry, "gpuwatch_actions_total", kind="scale_down_node", status="planned") == 2
    assert value(registry, "gpuwatch_actions_total", kind="scale_down_node", status="refused") == 1

    assert value(registry, "gpuwatch_cycle_duration_seconds_count") == 1
    assert value(registry, "gpuwatch_cycle_duration_seconds_sum") == pytest.approx(3.2)
    assert value(registry, "gpuwatch_cycle_duration_seconds_bucket", le="2.5") == 0
    assert value(registry, "gpuwatch_cycle_duration_seconds_bucket", le="5.0") == 1

    assert value(registry, "gpuwatch_last_success_timestamp_seconds") == clock.now
    assert value(registry, "gpuwatch_cycles_total", outcome="ok") == 1
    assert value(registry, "gpuwatch_cycles_total", outcome="error") == 0

    assert value(registry, "gpuwatch_notifications_total", status="sent") == 1
    assert value(registry, "gpuwatch_notifications_total", status="failed") == 2
    assert value(registry, "gpuwatch_notifications_total", status="printed") == 0
    assert value(registry, "gpuwatch_notifications_undelivered") == 2

    assert value(registry, "gpuwatch_gpus", source="metrics") == 16
    assert value(registry, "gpuwatch_gpus", source="cluster") == 14
    assert metrics.last_success_s == clock.now


def test_second_cycle_adds_counters_replaces_gauges_and_zeroes_what_vanished(
    metrics, registry, clock
):
    metrics.observe(FIRST)
    clock.now += 300
    second = cycle(
        findings=(finding(0, rule="gpu_idle", severity=Severity.WARNING),),
        cost=cost_report(team("ml-research", "6.00")),
        savings=(saving("scale_down", "100.00"),),
        savings_totals=(
            SavingsTotal("USD", Decimal("100.00"), Decimal(0), Decimal("100.00"), "sum"),
        ),
        actions=(action("scale_down_node", ActionStatus.DONE),),
        notifications=(notification("sent"),),
        source=SourceInfo("prometheus", "kubernetes", 8, 8, 1, 10),
        duration_s=45.0,
    )
    metrics.observe(second)

    # Gauges replace; label sets the second cycle no longer reports read 0.
    assert value(registry, "gpuwatch_findings", rule="gpu_idle", severity="warning") == 1
    assert value(registry, "gpuwatch_findings", rule="gpu_idle", severity="critical") == 0
    assert value(registry, "gpuwatch_findings", rule="memory_hog", severity="info") == 0
    assert value(registry, "gpuwatch_idle_cost_per_hour", team="ml-research", currency="USD") == 1.0
    assert value(registry, "gpuwatch_idle_cost_per_hour", team="(unallocated)", currency="USD") == 0
    assert value(registry, "gpuwatch_savings_per_month", kind="scale_down", currency="USD") == 100
    assert value(registry, "gpuwatch_savings_per_month", kind="spot", currency="EUR") == 0
    assert value(registry, "gpuwatch_savings_net_per_month", currency="USD") == 100
    assert value(registry, "gpuwatch_savings_net_per_month", currency="EUR") == 0
    assert value(registry, "gpuwatch_notifications_undelivered") == 0
    assert value(registry, "gpuwatch_gpus", source="metrics") == 8
    assert value(registry, "gpuwatch_last_success_timestamp_seconds") == clock.now

    # Counters add.
    assert value(registry, "gpuwatch_actions_total", kind="scale_down_node", status="planned") == 2
    assert value(registry, "gpuwatch_actions_total", kind="scale_down_node", status="done") == 1
    assert value(registry, "gpuwatch_notifications_total", status="sent") == 2
    assert value(registry, "gpuwatch_notifications_total", status="failed") == 2
    assert value(registry, "gpuwatch_cycles_total", outcome="ok") == 2
    assert value(registry, "gpuwatch_cycle_duration_seconds_count") == 2
    assert value(registry, "gpuwatch_cycle_duration_seconds_sum") == pytest.approx(48.2)
    assert value(registry, "gpuwatch_cycle_duration_seconds_bucket", le="30.0") == 1
    assert value(registry, "gpuwatch_cycle_duration_seconds_bucket", le="60.0") == 2


def test_errored_cycle_counts_as_error_and_leaves_the_last_judgement(metrics, registry, clock):
    metrics.observe(FIRST)
    succeeded_at = clock.now
    clock.now += 300
    errored = CycleResult(
        at=AT,
        cluster_name="test",
        source=SourceInfo("prometheus", "kubernetes", 0, 0, 0, 0),
        errors=("metrics (prometheus, unreachable): connection refused",),
        duration_s=30.5,
    )
    metrics.observe(errored)

    assert value(registry, "gpuwatch_cycles_total", outcome="error") == 1
    assert value(registry, "gpuwatch_cycles_total", outcome="ok") == 1
    assert value(registry, "gpuwatch_last_success_timestamp_seconds") == succeeded_at
    assert metrics.last_success_s == succeeded_at
    assert value(registry, "gpuwatch_cycle_duration_seconds_count") == 2
    # Nothing was judged: findings do not resolve and GPUs do not vanish because a
    # source was down.
    assert value(registry, "gpuwatch_findings", rule="gpu_idle", severity="warning") == 2
    assert value(registry, "gpuwatch_gpus", source="metrics") == 16
    assert value(registry, "gpuwatch_notifications_undelivered") == 2


def test_errored_first_cycle_reports_no_last_success(metrics, registry):
    metrics.observe(cycle(errors=("cluster (kubernetes, auth_refused): 403",)))

    assert value(registry, "gpuwatch_cycles_total", outcome="error") == 1
    assert value(registry, "gpuwatch_last_success_timestamp_seconds") is None
    assert metrics.last_success_s is None


def test_last_success_restored_from_a_previous_process(registry):
    metrics = SelfMetrics(registry, last_success_s=1_600_000_000.0)
    metrics.observe(cycle(errors=("metrics (prometheus, unreachable): refused",)))

    assert value(registry, "gpuwatch_last_success_timestamp_seconds") == 1_600_000_000.0


def test_empty_cluster(metrics, registry, clock):
    empty = CycleResult(
        at=AT,
        cluster_name="test",
        source=EMPTY_SOURCE,
        cost=cost_report(),
        duration_s=0.1,
    )
    metrics.observe(empty)

    assert value(registry, "gpuwatch_cycles_total", outcome="ok") == 1
    assert value(registry, "gpuwatch_gpus", source="metrics") == 0
    assert value(registry, "gpuwatch_gpus", source="cluster") == 0
    assert value(registry, "gpuwatch_notifications_undelivered") == 0
    assert value(registry, "gpuwatch_last_success_timestamp_seconds") == clock.now
    names = {m.name for m in registry.collect() if m.samples}
    for name in (
        "gpuwatch_findings",
        "gpuwatch_idle_cost_per_hour",
        "gpuwatch_savings_per_month",
        "gpuwatch_savings_net_per_month",
        "gpuwatch_actions",
    ):
        assert name not in names


def test_cycle_without_cost_report_drops_idle_cost_instead_of_claiming_zero(metrics, registry):
    metrics.observe(FIRST)
    metrics.observe(replace(FIRST, cost=None))

    assert (
        value(registry, "gpuwatch_idle_cost_per_hour", team="ml-research", currency="USD") is None
    )
    assert value(registry, "gpuwatch_findings", rule="gpu_idle", severity="warning") == 2


def test_metrics_live_only_in_the_given_registry():
    one, two = CollectorRegistry(), CollectorRegistry()
    SelfMetrics(one).observe(FIRST)
    SelfMetrics(two)

    assert value(one, "gpuwatch_cycles_total", outcome="ok") == 1
    assert value(two, "gpuwatch_cycles_total", outcome="ok") == 0


def test_a_second_instance_on_one_registry_is_refused(registry):
    SelfMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        SelfMetrics(registry)


def test_duration_buckets_are_sorted_and_cover_slow_cycles():
    assert list(CYCLE_DURATION_BUCKETS) == sorted(CYCLE_DURATION_BUCKETS)
    assert CYCLE_DURATION_BUCKETS[-1] >= 300
