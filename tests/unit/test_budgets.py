"""Budgets: the month in the user's time zone, the spend and projection worked by hand,
currencies never mixed, thresholds, and where a budget's findings go."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest
from pydantic import ValidationError

from gpuwatch.analysis.budgets import (
    BudgetLimits,
    MonthUse,
    budget_findings,
    budget_status,
    month_bounds,
    project,
)
from gpuwatch.config.settings import Settings
from gpuwatch.model.budgets import Budget, RecordedSpend
from gpuwatch.model.cost import Price
from gpuwatch.model.findings import GpuHolder, Severity
from gpuwatch.notify.console import RecordingNotifier
from gpuwatch.notify.routing import route
from gpuwatch.pipeline import run_cycle
from gpuwatch.sources.simulator import (
    SimulatedCluster,
)
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from tests.builders import context, device, finding, simulated_components

APRIL = datetime(2026, 4, 1, tzinfo=UTC)
HOUR = 3600
CNY_32 = Price(Decimal("32.00"), "CNY", "book:A100:on-demand")
TEAM_A = GpuHolder("team-a", "train-0", "PyTorchJob/team-a/train", "team-a")
TEAM_B = GpuHolder("team-b", "eval-0", "PyTorchJob/team-b/eval", "team-b")


class TestMonthBoundary:
    def test_shanghai_is_in_december_at_1600z_on_the_last_day_of_november(self):
        start, end = month_bounds(datetime(2026, 11, 30, 16, 0, tzinfo=UTC), "Asia/Shanghai")
        assert (start, end) == (
            datetime(2026, 11, 30, 16, 0, tzinfo=UTC),
            datetime(2026, 12, 31, 16, 0, tzinfo=UTC),
        )

    def test_a_minute_earlier_it_is_still_november(self):
        start, end = month_bounds(datetime(2026, 11, 30, 15, 59, tzinfo=UTC), "Asia/Shanghai")
        assert (start, end) == (
            datetime(2026, 10, 31, 16, 0, tzinfo=UTC),
            datetime(2026, 11, 30, 16, 0, tzinfo=UTC),
        )

    def test_utc_and_a_half_hour_zone_and_a_year_end(self):
        at = datetime(2026, 12, 31, 20, 0, tzinfo=UTC)
        assert month_bounds(at, "UTC")[1] == datetime(2027, 1, 1, tzinfo=UTC)
        # 01:30 on January 1st in Kolkata (+05:30): the new year's month.
        assert month_bounds(at, "Asia/Kolkata") == (
            datetime(2026, 12, 31, 18, 30, tzinfo=UTC),
            datetime(2027, 1, 31, 18, 30, tzinfo=UTC),
        )

    def test_a_month_across_a_daylight_saving_change_has_its_true_length(self):
        start, end = month_bounds(datetime(2026, 3, 15, tzinfo=UTC), "Europe/Berlin")
        assert (end - start).total_seconds() == (31 * 24 - 1) * HOUR  # clocks go forward


def _april_use(hours: int = 240, weekday_only: bool = True) -> MonthUse:
    """Two GPUs held by team-a on weekdays, nobody at weekends, from April 1st (UTC)."""
    times = int(APRIL.timestamp()) + HOUR * np.arange(1, hours + 1, dtype=np.int64)
    starts = [datetime.fromtimestamp(int(t) - HOUR, tz=UTC) for t in times]
    held = np.array([s.weekday() < 5 or not weekday_only for s in starts])
    codes = np.where(held, 0, -1).astype(np.int32)
    return MonthUse(
        times_s=times,
        covered=np.ones((2, hours), dtype=bool),
        codes=np.vstack([codes, codes]),
        holders=(TEAM_A,),
        held=np.zeros((2, hours)),
    )


BUDGET = Budget("team-a", "team", "team-a", Decimal("30000"), "CNY")
AT_APRIL_11 = datetime(2026, 4, 11, tzinfo=UTC)
CONTEXTS = [context(device(0), allocated=False), context(device(1), allocated=False)]


class TestSpendAndProjectionByHand:
    """April 2026 began on a Wednesday. Team A holds 2 GPUs at 32.00 CNY an hour on
    weekdays, none at weekends: 2 x 32.00 x 24 = 1,536.00 CNY a weekday.

    Spent by April 11th 00:00: 8 weekdays (1-3, 6-10) x 1,536.00 = 12,288.00.
    Left: April 11-30, of which 14 weekdays: 14 x 1,536.00 = 21,504.00.
    Month-end projection: 12,288.00 + 21,504.00 = 33,792.00, 112.64 % of 30,000.00.
    (Ten days' spend times three would say 36,864.00: the weekends matter.)"""

    def test_the_figures(self):
        status = budget_status(
            BUDGET, _april_use(), CONTEXTS, [CNY_32] * 2, AT_APRIL_11, 7 * 86400, "UTC"
        )
        assert status.spent == Decimal("12288.00")
        assert status.projected == Decimal("33792.00")
        assert status.spent_ratio == pytest.approx(0.4096)
        assert status.projected_ratio == pytest.approx(1.1264)
        assert (status.measured_hours, status.elapsed_hours) == (240, 240)
        assert status.top_workloads == (("PyTorchJob/team-a/train", Decimal("12288.00")),)
        assert status.month_end == datetime(2026, 5, 1, tzinfo=UTC)

    def test_only_the_projection_fires_and_says_why(self):
        status = budget_status(
            BUDGET, _april_use(), CONTEXTS, [CNY_32] * 2, AT_APRIL_11, 7 * 86400, "UTC"
        )
        (found,) = budget_findings(
            BudgetLimits("team-budget", Severity.WARNING, (0.8, 1.0), 1.0, 7 * 86400), [status]
        )
        assert found.severity is Severity.WARNING and found.threshold == 1.0
        assert found.team == "team-a" and found.where == "budget team-a"
        assert "12,288.00 CNY spent of the 30,000.00 CNY April 2026 budget (41%)" in found.message
        assert "month-end projection 33,792.00 CNY (113%)" in found.message

    def test_an_unseen_weekday_hour_takes_the_windows_mean(self):
        # One day measured (Wednesday, 64.00 an hour): every hour left is 64.00.
        times = int(APRIL.timestamp()) + HOUR * np.arange(1, 25, dtype=np.int64)
        end = datetime(2026, 4, 3, tzinfo=UTC)  # 24 hours left
        assert project(times, np.full(24, 64.0), end, 7 * 86400, "UTC") == pytest.approx(3072.0)

    def test_no_measured_hour_no_projection(self):
        times = int(APRIL.timestamp()) + HOUR * np.arange(1, 4, dtype=np.int64)
        assert project(times, np.full(3, np.nan), AT_APRIL_11, 86400, "UTC") is None


class TestWhatCounts:
    def test_currencies_never_mix_and_unpriced_gpus_are_named(self):
        usd = Price(Decimal("2.00"), "USD", "override:x")
        status = budget_status(
            BUDGET, _april_use(), CONTEXTS, [usd, None], AT_APRIL_11, 86400, "UTC"
        )
        assert status.spent == Decimal("0.00")
        assert status.other_currency == ("GPU 0 on node-a (NVIDIA-A100-SXM4-80GB) (USD)",)
        assert status.unpriced == ("GPU 1 on node-a (NVIDIA-A100-SXM4-80GB)",)

    def test_another_teams_hours_are_not_counted(self):
        use = _april_use()
        other = MonthUse(use.times_s, use.covered, use.codes, (TEAM_B,), use.held)
        status = budget_status(BUDGET, other, CONTEXTS, [CNY_32] * 2, AT_APRIL_11, 86400, "UTC")
        assert status.spent == Decimal("0.00") and status.projected == Decimal("0.00")

    def test_a_pool_pays_for_its_idle_hours_too(self):
        pool = Budget("training", "pool", "gpu-training", Decimal("50000"), "CNY")
        status = budget_status(
            pool, _april_use(), CONTEXTS, [CNY_32] * 2, AT_APRIL_11, 86400, "UTC"
        )
        assert status.spent == Decimal("15360.00")  # 240 hours x 2 GPUs x 32.00
        assert ("(unallocated)", Decimal("3072.00")) in status.top_workloads

    def test_hours_without_metrics_are_not_counted_and_the_message_says_so(self):
        use = _april_use()
        covered = use.covered.copy()
        covered[:, :48] = False  # April 1st and 2nd: no metrics
        gap = MonthUse(
            use.times_s,
            covered,
            np.where(covered, use.codes, -1).astype(np.int32),
            use.holders,
            use.held,
        )
        status = budget_status(BUDGET, gap, CONTEXTS, [CNY_32] * 2, AT_APRIL_11, 7 * 86400, "UTC")
        assert status.spent == Decimal("9216.00")  # 6 weekdays
        assert status.measured_hours == 192
        (found,) = budget_findings(
            BudgetLimits("b", Severity.WARNING, (0.3,), None, 86400), [status]
        )
        assert "data for 192 of the 240 hours" in found.message

    def test_unlabelled_gpus_count_for_their_current_holders(self):
        use = _april_use()
        cgpu = MonthUse(
            use.times_s, use.covered, np.full_like(use.codes, -1), (), np.full(use.held.shape, 0.5)
        )
        status = budget_status(
            BUDGET,
            cgpu,
            [context(device(0)), context(device(1))],
            [CNY_32] * 2,
            AT_APRIL_11,
            86400,
            "UTC",
        )
        # builders' holders are team-a's: half of each GPU, every hour: 240 x 2 x 16.00.
        assert status.spent == Decimal("7680.00")


class TestThresholds:
    @pytest.mark.parametrize(
        ("spent", "projected", "expected"),
        [
            (0.79, 0.95, None),
            (0.80, 0.95, (0.8, Severity.WARNING)),
            (0.95, 1.20, (0.8, Severity.WARNING)),
            (1.00, 1.30, (1.0, Severity.CRITICAL)),
            (0.50, 1.00, (1.0, Severity.WARNING)),
        ],
    )
    def test_levels(self, spent, projected, expected):
        status = budget_status(BUDGET, _april_use(0), CONTEXTS, [CNY_32] * 2, APRIL, 86400, "UTC")
        status = replace(
            status,
            spent=BUDGET.amount * Decimal(str(spent)),
            projected=BUDGET.amount * Decimal(str(projected)),
        )
        found = budget_findings(
            BudgetLimits("b", Severity.WARNING, (0.8, 1.0), 1.0, 86400), [status]
        )
        got = (found[0].threshold, found[0].severity) if found else None
        assert got == expected


class TestSettings:
    def test_a_budget_with_a_channel_gets_its_own_route(self):
        settings = Settings.model_validate(
            {
                "notify": {
                    "channel": "#gpu",
                    "routes": [{"match": {"team": ["team-a"]}, "channel": "#a"}],
                },
                "budgets": {
                    "time_zone": "Asia/Shanghai",
                    "monthly": [
                        {"team": "team-a", "amount": 100, "currency": "cny", "channel": "#money"},
                        {"pool": "gpu-training", "amount": 100, "currency": "CNY"},
                    ],
                },
            }
        )
        policy = settings.alert_policy()
        budget = finding(0, team="team-a", rule="team-budget", subject="budget team-a")
        assert route(budget, policy) == "#money"
        assert route(finding(0, team="team-a"), policy) == "#a"
        pool = finding(0, team="x", rule="team-budget", subject="budget gpu-training")
        assert route(pool, policy) == "#gpu"
        assert settings.budgets.to_domain()[0].currency == "CNY"

    @pytest.mark.parametrize(
        "item",
        [
            {"amount": 1, "currency": "CNY"},
            {"team": "a", "pool": "p", "amount": 1, "currency": "CNY"},
            {"team": "a", "amount": -1, "currency": "CNY"},
        ],
    )
    def test_refused(self, item):
        with pytest.raises(ValidationError):
            Settings.model_validate({"budgets": {"monthly": [item]}})

    def test_unknown_time_zone_refused(self):
        with pytest.raises(ValidationError, match="unknown time zone"):
            Settings.model_validate({"budgets": {"time_zone": "Mars/Olympus"}})


def test_the_simulated_vision_team_overspends_in_a_cycle():
    """The demo's figures: 8 A100-80GB at 32.00 CNY for the 562 hours of Shanghai's
    November before 02:00Z on the 24th, and for all 720 of its hours at that rate."""
    settings = Settings.model_validate(
        {
            "simulator": {"days": 24},
            "budgets": {
                "time_zone": "Asia/Shanghai",
                "monthly": [
                    {"team": "vision", "amount": 150000, "currency": "CNY", "channel": "#v"},
                    {"team": "llm", "amount": 450000, "currency": "CNY"},
                ],
            },
        }
    )
    cluster = SimulatedCluster(settings.simulator, end=SHOWCASE_AT)
    notifier = RecordingNotifier()
    components = simulated_components(cluster, notifier=notifier)
    result = run_cycle(components, settings, SHOWCASE_AT)
    vision, llm = result.budgets
    assert (vision.spent, vision.projected) == (Decimal("143872.00"), Decimal("184320.00"))
    assert (vision.measured_hours, vision.elapsed_hours) == (562, 562)
    assert (llm.spent, llm.projected) == (Decimal("320115.20"), Decimal("410112.00"))
    (found,) = [f for f in result.findings if f.rule == "team-budget"]
    assert found.team == "vision" and found.threshold == 0.8
    assert "PyTorchJob/vision/detector-train 71,936.00 CNY" in found.message
    assert any(n.channel == "#v" for n in result.notifications)


def test_hours_the_metrics_lack_come_from_the_recorded_dataset():
    """April 1st and 2nd are gone from the metrics; the report's dataset recorded them:
    team-a 64.00 an hour (its 2 GPUs), team-b 10.00 and a USD row that are not its."""
    use = _april_use()
    covered = use.covered.copy()
    covered[:, :48] = False
    gap = MonthUse(
        use.times_s,
        covered,
        np.where(covered, use.codes, -1).astype(np.int32),
        use.holders,
        use.held,
    )
    hours = use.times_s[:48]
    recorded = RecordedSpend(
        hour_end_s=np.concatenate([hours, hours, hours[:1]]),
        cost=np.concatenate([np.full(48, 64.0), np.full(48, 10.0), [99.0]]),
        currency=("CNY",) * 96 + ("USD",),
        team=("team-a",) * 48 + ("team-b",) * 48 + ("team-a",),
        namespace=("team-a",) * 48 + ("team-b",) * 48 + ("team-a",),
        pool=("gpu-training",) * 97,
        workload=("PyTorchJob/team-a/train",) * 48 + (None,) * 49,
    )
    status = budget_status(
        BUDGET, gap, CONTEXTS, [CNY_32] * 2, AT_APRIL_11, 7 * 86400, "UTC", recorded=recorded
    )
    assert status.spent == Decimal("12288.00")  # as if the metrics had held them
    assert (status.measured_hours, status.elapsed_hours) == (240, 240)
    assert status.top_workloads == (("PyTorchJob/team-a/train", Decimal("12288.00")),)
    assert status.other_currency == ("recorded spend in USD",)
    # Hours the metrics hold are never replaced by the record.
    full = budget_status(
        BUDGET, use, CONTEXTS, [CNY_32] * 2, AT_APRIL_11, 7 * 86400, "UTC", recorded=recorded
    )
    assert full.spent == Decimal("12288.00") and full.other_currency == ()
