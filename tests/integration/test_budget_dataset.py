"""Budgets count the hours of the month the metrics no longer hold from the weekly
report's dataset, read back from a real store (the report command writes it)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gpuwatch.config.settings import ReportSettings, Settings
from gpuwatch.pipeline import analyse, gather
from gpuwatch.report.spend import DatasetSpend
from gpuwatch.sources.simulator import (
    SimulatedCluster,
)
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from tests.builders import run_gpuwatch, simulated_components

pytestmark = pytest.mark.integration


def _budgets(recorded: DatasetSpend | None, settings: Settings):
    cluster = SimulatedCluster(settings.simulator, end=SHOWCASE_AT)
    components = simulated_components(cluster, recorded=recorded)
    gathered = gather(components, settings, SHOWCASE_AT, for_effects=False)
    return analyse(gathered, components.rules, components.price_book, settings).budgets


def test_a_month_longer_than_the_metrics_is_counted_from_the_dataset(tmp_path):
    reports = tmp_path / "reports"
    written = run_gpuwatch(
        "report", "--from", "2026-11-10T02:00:00Z", "--to", "2026-11-17T02:00:00Z",
        "--out", str(reports), cwd=tmp_path,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    # The metrics hold 3 days (72 hours before 02:00 on the 24th); November (UTC) has
    # had 554 hours. The dataset holds the week of the 10th to the 17th: 168 more.
    settings = Settings.model_validate(
        {
            "simulator": {"days": 3},
            "budgets": {"monthly": [{"team": "vision", "amount": 150000, "currency": "CNY"}]},
        }
    )
    (alone,) = _budgets(None, settings)
    assert (alone.measured_hours, alone.spent) == (72, Decimal("18432.00"))  # 72 x 256.00
    recorded = DatasetSpend(ReportSettings(location=str(reports)), "simulated")
    (both,) = _budgets(recorded, settings)
    assert (both.measured_hours, both.elapsed_hours) == (240, 554)
    assert both.spent == Decimal("61440.00")  # 240 x 8 A100s x 32.00
    # A location nothing was ever written to: as if there were no dataset.
    (empty,) = _budgets(
        DatasetSpend(ReportSettings(location=str(tmp_path / "none")), "simulated"), settings
    )
    assert empty.measured_hours == 72
