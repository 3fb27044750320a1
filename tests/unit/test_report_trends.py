"""Teams week by week from the dataset, and the budgets table, in the weekly report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from gpuwatch.model.budgets import Budget, BudgetStatus
from gpuwatch.report.data import ReportData
from gpuwatch.report.figures import compute_figures
from gpuwatch.report.schema import SCHEMAS
from gpuwatch.weekly.cycles import RecordedCycle
from gpuwatch.weekly.forecasts import forecasts_table
from gpuwatch.weekly.teams import budgets_table, team_weekly_table, trend_weeks
from tests.report_tables import NEAR_OOM, PERIOD, WEEK, hourly_row, hourly_table, report_tables

BEFORE = WEEK.previous()
TWO_BEFORE = BEFORE.previous()


def test_team_weekly_sums_holder_hourly_by_team():
    tables = report_tables(gpus=2, hours=3, util=0.5)  # 6 GPU-hours at 2.50
    (row,) = team_weekly_table(tables["holder_hourly"]).to_pylist()
    assert row["team"] == "team-a" and row["gpu_hours"] == 6.0
    assert row["cost"] == Decimal("15.000000") and row["util_mean_ratio"] == 0.5


def test_trend_reads_earlier_weeks_oldest_first_and_skips_weeks_never_written():
    older = report_tables(TWO_BEFORE.start, gpus=1, hours=2, util=0.2)
    del older["team_weekly"]  # written before 1.2: derived from its holder_hourly
    stored = {TWO_BEFORE.label: older}
    read: list[str] = []

    def reader(label: str):
        read.append(label)
        return stored.get(label)

    found = trend_weeks(reader, WEEK, 4)
    assert read == [BEFORE.label, TWO_BEFORE.label, TWO_BEFORE.previous().label]
    assert [label for label, _ in found] == [TWO_BEFORE.label]
    assert found[0][1].to_pylist()[0]["cost"] == Decimal("5.000000")
    assert trend_weeks(reader, WEEK, 1) == ()


def test_figures_align_every_team_on_every_week():
    earlier = report_tables(BEFORE.start, gpus=1, hours=2, util=0.2)
    tables = report_tables(gpus=2, hours=3, util=0.5)
    data = ReportData(
        "c",
        WEEK,
        tables,
        near_oom=NEAR_OOM,
        trend=(
            ("2026-W40", SCHEMAS["team_weekly"].empty_table()),
            (BEFORE.label, earlier["team_weekly"]),
        ),
    )
    trends = compute_figures(data).trends
    assert trends is not None
    assert trends.labels == ("2026-W40", BEFORE.label, WEEK.label)
    (team,) = trends.teams
    assert [w.cost for w in team.weeks] == [None, Decimal("5.000000"), Decimal("15.000000")]
    assert [w.util_mean_ratio for w in team.weeks] == [None, 0.2, 0.5]


def test_budgets_table_round_trips_the_status():
    budget = Budget("vision", "team", "vision", Decimal("150000"), "CNY")
    status = BudgetStatus(
        budget,
        datetime(2026, 10, 31, 16, tzinfo=UTC),
        datetime(2026, 11, 30, 16, tzinfo=UTC),
        datetime(2026, 11, 24, 2, tzinfo=UTC),
        Decimal("143872.00"),
        Decimal("184320.00"),
        562,
        562,
        (("PyTorchJob/vision/detector-train", Decimal("71936.00")),),
    )
    table = budgets_table([status])
    tables = {**report_tables(), "budgets": table}
    (row,) = compute_figures(ReportData("c", WEEK, tables, near_oom=NEAR_OOM)).trends.budgets
    assert (row.spent, row.projected, row.amount) == (
        Decimal("143872.000000"),
        Decimal("184320.000000"),
        Decimal("150000.000000"),
    )
    assert round(row.spent_ratio, 4) == 0.9591 and round(row.projected_ratio, 4) == 1.2288
    assert '"workload": "PyTorchJob/vision/detector-train"' in table["top_workloads"][0].as_py()


def _cycle(hours: float, *warned: str) -> RecordedCycle:
    at = PERIOD.start + timedelta(hours=hours)
    return RecordedCycle(
        at,
        (),
        (),
        tuple(
            {
                "device_id": d,
                "node": "node-a",
                "gpu_index": 0,
                "eta_s": 1200.0,
                "role": "oom_forecast",
            }
            for d in warned
        ),
    )


def test_forecast_warnings_reached_false_and_pending():
    hourly = hourly_table(
        [
            hourly_row(10, gpu="GPU-a", fb_ratio=0.97),  # reached the hour after the warning
            hourly_row(30, gpu="GPU-b", fb_ratio=0.93),  # never reached: a false alarm
            hourly_row(8, gpu="GPU-c", fb_ratio=0.99),  # the hour before its warning: not counted
        ]
    )
    cycles = [
        _cycle(9.5, "GPU-a", "GPU-c"),
        _cycle(9.75, "GPU-a"),  # within the horizon of the one before: the same warning
        _cycle(30, "GPU-b"),
        _cycle(PERIOD.hours - 0.25, "GPU-a"),  # the period ends within its horizon
        _cycle(PERIOD.hours + 1, "GPU-b"),  # after the period
    ]
    table = forecasts_table(cycles, PERIOD, hourly, 1800, 0.95)
    rows = {(r["device_id"], r["cycles"]): r["outcome"] for r in table.to_pylist()}
    assert rows == {
        ("GPU-a", 2): "reached",
        ("GPU-a", 1): "pending",
        ("GPU-b", 1): "false_alarm",
        ("GPU-c", 1): "false_alarm",
    }
    tables = {**report_tables(), "forecasts": table}
    quality = compute_figures(ReportData("c", WEEK, tables, near_oom=NEAR_OOM)).trends.forecasts
    assert (quality.warnings, quality.reached, quality.false_alarms, quality.pending) == (
        4,
        1,
        2,
        1,
    )
