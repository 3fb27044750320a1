"""``gpuwatch report --fleet``: one page over every cluster's week, from the dataset.

A fleet of four clusters is written by the weekly report's own writer
(``ReportStore.write_tables``) into a folder and into a bucket on moto's S3 server:
``prod-us`` (USD) and ``prod-cn`` (CNY) report both weeks, ``edge-1`` stopped after
2026-W47 and ``old-1`` after 2026-W45. Every money figure on the page must equal the
sum of the rows written, worked out here from those rows, never across currencies; the
two clusters that did not report must be named with their last week; and the page must
open in headless Chromium with nothing logged and nothing requested.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from gpuwatch.config.settings import ReportSettings
from gpuwatch.report.data import ReportData, ReportPeriod
from gpuwatch.report.fleet import NO_POOL_LEVER, NO_TEAM_LEVER
from gpuwatch.report.fleet_html import write_fleet_report
from gpuwatch.report.fleet_query import QUERIES, previous_week, query_text, run_fleet_queries
from gpuwatch.report.store import ReportStore
from tests.builders import run_gpuwatch
from tests.integration.browser import load_page
from tests.integration.moto_s3 import (
    MotoS3,
    moto_s3_fixture,  # noqa: F401
    s3_env_fixture,  # noqa: F401
)
from tests.report_tables import (
    finding_row,
    holders_of,
    hourly_row,
    hourly_table,
    money_elements,
    saving_row,
    tables_of,
)

pytestmark = pytest.mark.integration

W48, W47 = ReportPeriod.iso_week("2026-W48"), ReportPeriod.iso_week("2026-W47")
W46, W45 = ReportPeriod.iso_week("2026-W46"), ReportPeriod.iso_week("2026-W45")
PRICES = {"USD": "2.500000", "CNY": "17.000000"}


def _week(cluster: str, period: ReportPeriod, currency: str, hours: int) -> dict[str, Any]:
    """One cluster's week: a trained GPU, an unallocated one, a GPU shared by two teams in
    its first hour (holder_hourly splits it), a gap hour, findings and three levers."""
    price = PRICES[currency]
    kw = {"period": period, "price": price, "currency": currency}
    hourly = [hourly_row(h, gpu="G0", util=0.25 + h / 100, **kw) for h in range(hours)]
    hourly += [
        hourly_row(
            h,
            gpu="G1",
            node="node-b",
            pool="gpu-inference",
            team=None,
            workload=None,
            util=0.0,
            **kw,
        )
        for h in range(hours)
    ]
    hourly.append(hourly_row(0, gpu="G2", team="vision", workload="Deployment/v/a", **kw))
    hourly.append(hourly_row(1, gpu="G2", util=None, coverage=0.0, team="vision", **kw))
    holders = [row for row in holders_of(hourly_table(hourly)).to_pylist()]
    shared = next(
        row for row in holders if row["device_id"] == "G2" and row["hour"] == period.start
    )
    holders.remove(shared)
    half_cost, half_idle = shared["cost"] / 2, shared["idle_cost"] / 2
    for team in ("vision", "ml-research"):
        holders.append(
            {**shared, "team": team, "share_ratio": 0.5, "cost": half_cost, "idle_cost": half_idle}
        )
    gross = Decimal(hours * 40)
    savings = [
        saving_row(
            "spot",
            f"{gross}.125",
            currency,
            at=period.end,
            team="ml-research",
            workload="PyTorchJob/ml/pretrain",
        ),
        saving_row(
            "scale_down_node",
            "40.000000",
            currency,
            at=period.end,
            net_monthly=Decimal(0),
            blocked="a PodDisruptionBudget allows no eviction",
            unblock="raise it",
        ),
        saving_row(
            "release_idle",
            "25.250000",
            currency,
            at=period.end,
            cash=False,
            net_monthly=Decimal(0),
            reclaimed_monthly=Decimal("25.250000"),
            reclaimed_gpu_hours_monthly=10.1,
        ),
    ]
    findings = [finding_row("node-a", "G0", 0.97, 1, hours - 1)]
    findings.append(
        {
            **findings[0],
            "rule": "gpu-xid",
            "severity": "critical",
            "hours": 1,
            "team": None,
            "pool": "gpu-inference",
        }
    )
    return tables_of(hourly, savings=savings, findings=findings, holders=holders)


FLEET = {
    ("prod-us", W48): ("USD", 4),
    ("prod-us", W47): ("USD", 3),
    ("prod-cn", W48): ("CNY", 5),
    ("prod-cn", W47): ("CNY", 2),
    ("edge-1", W47): ("USD", 2),
    ("edge-1", W46): ("USD", 2),
    ("old-1", W45): ("USD", 6),
}


@pytest.fixture(scope="module")
def written() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (cluster, period.label): _week(cluster, period, currency, hours)
        for (cluster, period), (currency, hours) in FLEET.items()
    }


def _write(store: ReportStore, written: Mapping[tuple[str, str], Mapping[str, Any]]) -> None:
    for (cluster, label), tables in written.items():
        store.write_tables(ReportData(cluster, ReportPeriod.iso_week(label), tables))


def _sum(
    rows: Iterable[Mapping[str, Any]],
    column: str,
    key: str | None,
    missing: str,
    where: Any = lambda row: True,
) -> dict[tuple[str, str], Decimal]:
    sums: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for row in rows:
        if row[column] is not None and where(row):
            name = "" if key is None else (row[key] if row[key] is not None else missing)
            sums[(name, row["currency"])] += row[column]
    return sums


def expected_money(written: Mapping[tuple[str, str], Mapping[str, Any]]) -> dict:
    """``{(figure id, currency): amount}`` from the rows written, by plain Python sums."""

    def rows(table: str, week: str) -> list[dict[str, Any]]:
        out = []
        for (cluster, label), tables in written.items():
            if label == week:
                out += [{**row, "cluster": cluster} for row in tables[table].to_pylist()]
        return out

    expected: dict[tuple[str, str], Decimal] = {}

    def put(prefix: str, sums: Mapping[tuple[str, str], Decimal]) -> None:
        for (name, currency), amount in sums.items():
            expected[(f"{prefix}.{name}" if name else prefix, currency)] = amount

    for week, tag in (("2026-W48", ""), ("2026-W47", "previous")):
        hourly, holders, plan = (
            rows("gpu_hourly", week),
            rows("holder_hourly", week),
            rows("savings", week),
        )
        if tag:
            put("previous.cost", _sum(hourly, "cost", None, ""))
            put("previous.idle_cost", _sum(hourly, "idle_cost", None, ""))
            put("previous.net_savings", _sum(plan, "net_monthly", None, ""))
            for group, table, source in (
                ("cluster", "cluster", hourly),
                ("pool", "pool", hourly),
                ("team", "team", holders),
            ):
                missing = "(unallocated)" if group == "team" else "(no pool)"
                put(f"{group}.previous", _sum(source, "cost", table, missing))
                if group != "cluster":
                    put(f"{group}.previous_idle", _sum(source, "idle_cost", table, missing))
            put("team_savings.previous_net", _sum(plan, "net_monthly", "team", NO_TEAM_LEVER))
            put("pool_savings.previous_net", _sum(plan, "net_monthly", "pool", NO_POOL_LEVER))
            continue
        put("headline.cost", _sum(hourly, "cost", None, ""))
        put("headline.idle_cost", _sum(hourly, "idle_cost", None, ""))
        put("headline.net_savings", _sum(plan, "net_monthly", None, ""))
        put("headline.reclaimed", _sum(plan, "reclaimed_monthly", None, ""))
        put("headline.blocked", _sum(plan, "monthly", None, "", lambda r: r["blocked"]))
        put("cluster.cost", _sum(hourly, "cost", "cluster", ""))
        put("cluster.idle", _sum(hourly, "idle_cost", "cluster", ""))
        put("cluster.net", _sum(plan, "net_monthly", "cluster", ""))
        put("cluster.reclaimed", _sum(plan, "reclaimed_monthly", "cluster", ""))
        put("cluster.blocked", _sum(plan, "monthly", "cluster", "", lambda r: r["blocked"]))
        put("pool.cost", _sum(hourly, "cost", "pool", "(no pool)"))
        put("pool.idle", _sum(hourly, "idle_cost", "pool", "(no pool)"))
        put("team.cost", _sum(holders, "cost", "team", "(unallocated)"))
        put("team.idle", _sum(holders, "idle_cost", "team", "(unallocated)"))
        put("team_savings.net", _sum(plan, "net_monthly", "team", NO_TEAM_LEVER))
        put("pool_savings.net", _sum(plan, "net_monthly", "pool", NO_POOL_LEVER))
        put("lever.gross", _sum(plan, "monthly", "kind", ""))
        put("lever.net", _sum(plan, "net_monthly", "kind", ""))
        put("lever.blocked", _sum(plan, "monthly", "kind", "", lambda r: r["blocked"]))
    return expected


def _shown(page: str) -> dict[tuple[str, str], Decimal]:
    found = money_elements(page)
    shown = {(figure, currency): value for figure, currency, value in found}
    assert len(shown) == len(found), "a figure id appears twice in one currency"
    return shown


def _check_page(page: str, written: Mapping[tuple[str, str], Mapping[str, Any]]) -> None:
    shown = _shown(page)
    expected = expected_money(written)
    # edge-1 reported last week only: its previous cost is on the page, nothing this week.
    assert shown == expected
    # The same figures worked out by hand. prod-us: 4 h x 2 GPUs + 2 GPU-hours of G2 at
    # 2.50; idle G0 (0.75, 0.74, 0.73, 0.72) + G1 4 x 2.50 + G2 hour 0 at 0.5 util.
    assert shown[("cluster.cost.prod-us", "USD")] == Decimal("25.000000")
    assert shown[("cluster.idle.prod-us", "USD")] == Decimal("7.35") + 10 + Decimal("1.25")
    assert shown[("cluster.cost.prod-cn", "CNY")] == 12 * Decimal(17)
    assert shown[("headline.cost", "USD")] == Decimal(25)  # edge-1 did not report
    assert shown[("previous.cost", "USD")] == 8 * Decimal("2.5") + 6 * Decimal("2.5")
    assert shown[("headline.net_savings", "USD")] == Decimal("160.125")
    assert shown[("headline.blocked", "CNY")] == Decimal(40)
    assert shown[("team.cost.vision", "CNY")] == Decimal("8.5") + 17
    # Currencies are never added together.
    assert {currency for _, currency in shown} == {"USD", "CNY"}


def test_the_fleet_page_sums_every_cluster_and_names_those_that_did_not_report(
    tmp_path: Path, written
):
    store = ReportStore.from_settings(ReportSettings(location=str(tmp_path)))
    _write(store, written)
    result = write_fleet_report(ReportSettings(location=str(tmp_path)))
    assert result.path == f"{tmp_path}/html/fleet/week=2026-W48/report.html"
    page = Path(result.path).read_text()
    _check_page(page, written)
    assert [(row.cluster, row.last_week) for row in result.figures.not_reported] == [
        ("edge-1", "2026-W47"),
        ("old-1", "2026-W45"),
    ]
    assert 'data-cluster="edge-1"' in page and 'data-cluster="old-1"' in page
    assert "2 clusters did not report 2026-W48" in page
    assert result.figures.reporting == ["prod-cn", "prod-us"]
    by_cluster = {row.key: row for row in result.figures.findings_by["cluster"]}
    assert (by_cluster["prod-us"].findings, by_cluster["prod-us"].critical) == (2, 1)
    assert by_cluster["prod-us"].hours == 3 + 1 and by_cluster["prod-us"].previous_findings == 2
    assert by_cluster["edge-1"].findings == 0 and by_cluster["edge-1"].previous_findings == 2
    assert (Path(tmp_path) / "html/fleet/latest.html").read_text() == page

    # An earlier week: edge-1 reported it, old-1 had stopped, nothing after is read.
    earlier = write_fleet_report(ReportSettings(location=str(tmp_path)), "2026-W47")
    assert [row.cluster for row in earlier.figures.not_reported] == ["old-1"]
    assert earlier.figures.reporting == ["edge-1", "prod-cn", "prod-us"]


def test_the_command_line_writes_the_page_of_the_newest_week(tmp_path: Path, written):
    _write(ReportStore.from_settings(ReportSettings(location=str(tmp_path))), written)
    run = run_gpuwatch("report", "--fleet", "--out", str(tmp_path), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Fleet 2026-W48: 2 clusters reported; cost CNY 204.00")
    assert "not reported: edge-1 (last 2026-W47), old-1 (last 2026-W45)" in run.stdout
    _check_page((tmp_path / "html/fleet/week=2026-W48/report.html").read_text(), written)
    refused = run_gpuwatch("report", "--fleet", "--gpus", "8", cwd=tmp_path)
    assert refused.returncode == 2 and "--fleet reads the dataset" in refused.stderr


def test_the_fleet_page_reads_object_storage(s3_env: MotoS3, written):
    bucket = s3_env.create_bucket("fleet")
    settings = s3_env.settings(f"s3://{bucket}/gpuwatch")
    _write(ReportStore.from_settings(settings), written)
    result = write_fleet_report(settings)
    assert result.path == f"s3://{bucket}/gpuwatch/html/fleet/week=2026-W48/report.html"
    assert [row.cluster for row in result.figures.not_reported] == ["edge-1", "old-1"]
    assert result.figures.reporting == ["prod-cn", "prod-us"]
    body = s3_env.client().get_object(
        Bucket=bucket, Key="gpuwatch/html/fleet/week=2026-W48/report.html"
    )
    assert body["ContentType"].startswith("text/html")
    _check_page(body["Body"].read().decode(), written)


def test_the_fleet_page_opens_in_a_browser_loading_and_logging_nothing(tmp_path: Path, written):
    _write(ReportStore.from_settings(ReportSettings(location=str(tmp_path))), written)
    result = write_fleet_report(ReportSettings(location=str(tmp_path)))
    load = load_page(Path(result.path))
    assert load.console == (), f"console messages: {load.console}"
    assert load.requests == (), f"the page made requests: {load.requests}"
    assert (load.screenshot != 255).any(axis=2).mean() > 0.03


@pytest.mark.slow
def test_the_fleet_of_weeks_the_weekly_report_wrote(tmp_path: Path):
    """Two simulated clusters' reports, written by `gpuwatch report` itself: every figure
    of the fleet page is the sum of what those reports wrote."""
    out = tmp_path / "reports"
    for cluster, week in (("east", "2026-W47"), ("west", "2026-W47"), ("east", "2026-W48")):
        done = run_gpuwatch(
            "report",
            "--week",
            week,
            "--out",
            str(out),
            cwd=tmp_path,
            env={"GPUWATCH_CLUSTER__NAME": cluster},
            timeout=240,
        )
        assert done.returncode == 0, done.stderr
    done = run_gpuwatch("report", "--fleet", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Fleet 2026-W48: 1 cluster reported; cost CNY ")
    assert done.stdout.rstrip().endswith("not reported: west (last 2026-W47)")
    store = ReportStore.from_settings(ReportSettings(location=str(out)))
    written = {
        (cluster, week): store.read_tables(cluster, week)
        for cluster, week in (("east", "2026-W47"), ("west", "2026-W47"), ("east", "2026-W48"))
    }
    page = out / "html/fleet/week=2026-W48/report.html"
    shown = _shown(page.read_text())
    assert shown == expected_money(written)
    assert shown[("headline.cost", "CNY")] > 0 and shown[("headline.idle_cost", "CNY")] > 0
    load = load_page(page)
    assert load.console == () and load.requests == ()


def _sqlite_rows(store: ReportStore, name: str, week: str) -> list[dict[str, Any]]:
    """``fleet_sql/<name>.sql`` run unchanged on SQLite over the same dataset."""
    with sqlite3.connect(":memory:") as con:
        for table in ("gpu_hourly", "holder_hourly", "findings", "savings"):
            data = store.dataset(table).to_table()
            columns = ", ".join(f'"{column}"' for column in data.column_names)
            con.execute(f"CREATE TABLE {table} ({columns})")
            rows = [
                tuple(str(v) if isinstance(v, (Decimal, datetime)) else v for v in row.values())
                for row in data.to_pylist()
            ]
            marks = ", ".join("?" * data.num_columns)
            con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        con.execute(
            f"CREATE VIEW fleet_period AS SELECT '{week}' AS week, "
            f"'{previous_week(week)}' AS previous_week"
        )
        cursor = con.execute(query_text(name))
        columns = [column[0] for column in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _comparable(rows: Iterable[Mapping[str, Any]]) -> list[tuple]:
    """Rows as sorted tuples, numbers to 6 places (SQLite sums money as floats)."""
    out = []
    for row in rows:
        out.append(
            tuple(
                None
                if v is None
                else round(float(v), 6)
                if isinstance(v, (int, float, Decimal))
                else v
                for v in row.values()
            )
        )
    return sorted(out, key=repr)


@pytest.mark.parametrize("name", QUERIES)
def test_the_same_sql_runs_unchanged_on_another_engine(tmp_path: Path, written, name):
    """The queries are plain SQL: SQLite (the standard library's) runs each file as it is
    and gets the rows DuckDB gets (in its own order: engines sort nulls differently)."""
    store = ReportStore.from_settings(ReportSettings(location=str(tmp_path)))
    _write(store, written)
    for week in ("2026-W48", "2026-W47"):
        duck = run_fleet_queries(store, week).rows[name]
        assert duck or name in ("not_reported",)
        assert _comparable(_sqlite_rows(store, name, week)) == _comparable(duck)


def test_only_the_fleet_report_loads_duckdb():
    """Every other command, and the daemon, start without importing it."""
    run = subprocess.run(
        [sys.executable, "-c", "import sys, gpuwatch.cli; print('duckdb' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert run.stdout.strip() == "False"


def test_previous_weeks_cross_years_as_iso_weeks_do():
    assert previous_week("2026-W48") == "2026-W47"
    assert previous_week("2027-W01") == "2026-W53"
    assert previous_week("2026-W01") == "2025-W52"


def test_the_queries_read_only_the_documented_tables():
    """What a Trino or Spark user binds: the dataset's tables and fleet_period."""

    for name in QUERIES:
        tables = set(re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", query_text(name)))
        assert tables <= {"gpu_hourly", "holder_hourly", "findings", "savings", "fleet_period"}


def _write_as_1_0(folder: Path, cluster: str, tables: Mapping[str, Any]) -> None:
    """A week as schema 1.0 wrote it: no holder_hourly or realized, none of 1.1's columns."""
    added = {
        "allocated_ratio",
        "net_monthly",
        "cash",
        "reclaimed_gpu_hours_monthly",
        "reclaimed_monthly",
        "gpus",
        "nodes",
        "blocked",
        "unblock",
        "lookback_s",
        "hours_counted",
        "order",
    }
    for name in ("gpu_hourly", "findings", "savings", "actions"):
        table = tables[name]
        table = table.select([c for c in table.column_names if c not in added])
        table = table.replace_schema_metadata(
            {"gpuwatch.table": name, "gpuwatch.schema_version": "1.0"}
        )
        partition = folder / f"table={name}/cluster={cluster}/week=2026-W48"
        partition.mkdir(parents=True)
        pq.write_table(table, partition / "part-0.parquet")


def test_a_week_written_by_schema_1_0_counts_without_the_figures_it_lacks(tmp_path: Path, written):
    store = ReportStore.from_settings(ReportSettings(location=str(tmp_path)))
    _write(store, {key: tables for key, tables in written.items() if key[0] == "prod-us"})
    _write_as_1_0(tmp_path, "legacy", written[("prod-us", "2026-W48")])
    result = write_fleet_report(ReportSettings(location=str(tmp_path)))
    shown = _shown(Path(result.path).read_text())
    assert result.figures.reporting == ["legacy", "prod-us"]
    assert shown[("cluster.cost.legacy", "USD")] == shown[("cluster.cost.prod-us", "USD")]
    assert ("cluster.net.legacy", "USD") not in shown  # 1.0 recorded no net: n/a, not 0
    assert shown[("headline.cost", "USD")] == 2 * Decimal(25)
    # Money by team comes from holder_hourly, which 1.0 did not write.
    assert shown[("team.cost.vision", "USD")] == Decimal("1.25") + Decimal("2.5")
