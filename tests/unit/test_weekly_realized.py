"""Realized savings: for a node removed or a job moved in the middle of a period, the
saving projected when it was taken beside the cost change measured since."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from gpuwatch.config.settings import Settings, SimulatorSettings
from gpuwatch.report.data import ReportData, ReportPeriod
from gpuwatch.report.figures import compute_figures
from gpuwatch.report.html import render_html
from gpuwatch.sources.simulator import (
    SimulatedCluster,
)
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from gpuwatch.weekly.build import build_report
from gpuwatch.weekly.cycles import read_cycles
from gpuwatch.weekly.realized import CostHistory, Taken, realized_table, taken_in
from tests.builders import simulated_components
from tests.report_tables import PERIOD, SHIPPED, assert_money_matches, hourly_row, tables_of

JOB = "PyTorchJob/llm/sft"


def write_cycle(folder: Path, at, actions=(), savings=()) -> None:
    """A cycle result as the cycle job writes it (the fields the report reads)."""
    stamp = at.strftime("%Y%m%dT%H%M%SZ")
    document = {"at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "actions": actions, "savings": savings}
    (folder / f"cycle-{stamp}.json").write_text(json.dumps(document), encoding="utf-8")


def action(kind: str, target: str, status: str = "done", **details: object) -> dict:
    return {
        "kind": kind,
        "target": target,
        "status": status,
        "dry_run": False,
        "key": f"{kind}:{target}",
        "details": details,
    }


def week_of_rows() -> list[dict]:
    """Node train-9 (8 GPUs at 32 CNY) until hour 84, when it goes; job llm/sft on 8
    on-demand GPUs (32) until hour 100, then on 8 spot GPUs (9.60)."""
    rows = []
    for hour in range(PERIOD.hours):
        for gpu in range(8):
            if hour < 84:
                rows.append(
                    hourly_row(
                        hour,
                        gpu=f"GPU-9-{gpu}",
                        node="train-9",
                        team=None,
                        workload=None,
                        price="32",
                        currency="CNY",
                    )
                )
            on_spot = hour >= 100
            rows.append(
                hourly_row(
                    hour,
                    gpu=f"GPU-{'s' if on_spot else 'o'}-{gpu}",
                    node="spot-1" if on_spot else "od-1",
                    team="llm",
                    workload=JOB,
                    price="9.6" if on_spot else "32",
                    currency="CNY",
                    capacity_type="spot" if on_spot else "on-demand",
                )
            )
    return rows


def test_a_node_removed_and_a_job_moved_mid_week(tmp_path: Path):
    removed_at = PERIOD.start + timedelta(hours=84, minutes=5)
    moved_at = PERIOD.start + timedelta(hours=100)
    release = {
        "kind": "scale_down",
        "monthly": 368640.0,
        "currency": "CNY",
        "nodes": ["train-9", "train-10"],
        "scope": {"pool": "gpu-training"},
    }
    write_cycle(
        tmp_path, removed_at, [action("scale_down_node", "Node/train-9", gpus=8)], [release]
    )
    write_cycle(tmp_path, moved_at, [action("migrate_to_spot", JOB, monthly_saving=129024.0)])
    write_cycle(tmp_path, moved_at + timedelta(hours=1), [action("migrate_to_spot_confirmed", JOB)])
    # Planned and refused actions, and one of last week, realize nothing.
    write_cycle(
        tmp_path,
        PERIOD.start + timedelta(hours=3),
        [
            action("scale_down_node", "Node/x", "planned"),
            action("scale_down_node", "Node/y", "refused"),
        ],
    )
    write_cycle(tmp_path, PERIOD.start - timedelta(hours=3), [action("scale_down_node", "Node/z")])

    tables = tables_of(week_of_rows())
    taken = taken_in(read_cycles(tmp_path, []), PERIOD)
    assert [(t.kind, t.target, t.at) for t in taken] == [
        ("scale_down_node", "Node/train-9", removed_at),
        ("migrate_to_spot", JOB, moved_at),
    ]
    table = realized_table(
        taken,
        CostHistory(tables["gpu_hourly"], PERIOD.start),
        CostHistory(tables["holder_hourly"], PERIOD.start),
        PERIOD.end,
    )
    node, job = table.to_pylist()
    # The node: its hour of removal left out; 83 whole hours before, 83 after (none).
    assert node["hours_compared"] == 83
    assert node["before_start"] == PERIOD.start + timedelta(hours=1)
    assert node["after_start"] == PERIOD.start + timedelta(hours=85)
    assert node["before_cost"] == Decimal(83 * 8 * 32)
    assert node["after_cost"] == Decimal(0)
    assert node["measured_monthly"] == Decimal(8 * 32 * 720)
    # Half of a release that removes two nodes, from the cycle's own plan.
    assert node["projected_monthly"] == Decimal(184320)
    assert node["projected_from"].startswith("the scale_down saving of the cycle at")
    assert (node["currency"], json.loads(node["scope"])) == ("CNY", {"node": "train-9"})
    # The job: 68 hours either side of the move (the week ends 68 hours after it).
    assert job["hours_compared"] == 68
    assert job["before_cost"] == Decimal(68 * 8 * 32)
    assert job["after_cost"] == Decimal("5222.4")
    assert job["measured_monthly"] == Decimal(129024)  # 8 x (32 - 9.60) x 720
    assert job["projected_monthly"] == Decimal(129024)
    assert job["projected_from"] == "action details.monthly_saving"

    # On the page: projected beside measured, each the Parquet's figure.
    data = ReportData("c", PERIOD, {**tables, "realized": table})
    figures = compute_figures(data)
    assert figures.realized.measured == {"CNY": Decimal(184320 + 129024)}
    page = render_html(data, SHIPPED)
    found = assert_money_matches(data, page)
    shown = {(figure, value) for figure, _, value in found}
    assert ("realized.measured.0", Decimal(184320)) in shown
    assert ("realized.projected.1", Decimal(129024)) in shown
    assert ("headline.realized", Decimal(313344)) in shown
    assert "83 hours before" in page


def test_a_move_confirmed_this_week_counts_from_the_move(tmp_path: Path):
    moved_at = PERIOD.start - timedelta(hours=10)
    write_cycle(tmp_path, moved_at, [action("migrate_to_spot", JOB, monthly_saving=99.5)])
    write_cycle(
        tmp_path,
        PERIOD.start + timedelta(hours=2),
        [action("migrate_to_spot_confirmed", JOB)],
        [{"kind": "spot", "monthly": 1.0, "currency": "USD", "scope": {"workload": JOB}}],
    )
    (taken,) = taken_in(read_cycles(tmp_path, []), PERIOD)
    assert (taken.at, taken.projected, taken.projected_from) == (
        moved_at,
        Decimal("99.5"),
        "action details.monthly_saving",
    )
    # Without last week's hours there is nothing before the move to compare.
    tables = tables_of(week_of_rows())
    (row,) = realized_table(
        [taken],
        CostHistory(tables["gpu_hourly"], PERIOD.start),
        CostHistory(tables["holder_hourly"], PERIOD.start),
        PERIOD.end,
    ).to_pylist()
    assert (row["hours_compared"], row["measured_monthly"], row["before_cost"]) == (0, None, None)
    assert row["projected_monthly"] == Decimal("99.500000")


# --------------------------------------------------------------------------- simulated


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> tuple[ReportData, ReportPeriod]:
    cluster = SimulatedCluster(SimulatorSettings(gpus=64, days=3), end=SHOWCASE_AT)
    components = simulated_components(cluster)
    period = ReportPeriod.between(SHOWCASE_AT - timedelta(days=2), SHOWCASE_AT)
    cycles = tmp_path_factory.mktemp("cycles")
    release = {
        "kind": "scale_down",
        "monthly": 184320.0,
        "currency": "CNY",
        "nodes": ["train-a100-3"],
        "scope": {"pool": "gpu-training"},
    }
    write_cycle(
        cycles,
        period.start + timedelta(hours=24, minutes=3),
        [action("scale_down_node", "Node/train-a100-3", gpus=8)],
        [release],
    )
    data = build_report(components, Settings(), period, 60.0, cycles_dir=cycles)
    return data, period


def test_a_removal_in_the_middle_of_a_simulated_period(simulated):
    data, period = simulated
    (row,) = data.tables["realized"].to_pylist()
    assert (row["kind"], row["target"], row["hours_compared"]) == (
        "scale_down_node",
        "Node/train-a100-3",
        23,
    )
    assert (row["projected_monthly"], row["currency"]) == (Decimal(184320), "CNY")
    # The simulated node never went: the same cost before and after, nothing realized.
    assert row["before_cost"] == row["after_cost"] == Decimal(23 * 8 * 32)
    assert row["measured_monthly"] == Decimal(0)

    # Had it gone at once, its 8 GPUs at 32 CNY would be the saving measured.
    hourly, holders = data.tables["gpu_hourly"], data.tables["holder_hourly"]
    gone = pc.and_(
        pc.equal(hourly["node"], "train-a100-3"),
        pc.greater_equal(
            hourly["hour"], pa.scalar(period.start + timedelta(hours=24), hourly["hour"].type)
        ),
    )
    without = hourly.filter(pc.invert(gone))
    (measured,) = realized_table(
        [taken_from(row)],
        CostHistory(without, period.start),
        CostHistory(holders, period.start),
        period.end,
    ).to_pylist()
    assert measured["measured_monthly"] == Decimal(8 * 32 * 720)


def taken_from(row: dict) -> Taken:
    """The action a ``realized`` row was made of."""
    return Taken(
        row["at"],
        row["kind"],
        row["target"],
        row["key"],
        json.loads(row["scope"]),
        row["projected_monthly"],
        row["currency"],
        row["projected_from"],
    )
