"""Small, valid report tables (every schema of ``gpuwatch.report.schema``), for tests of
anything that writes, reads or renders the weekly report.

The values are plausible rather than realistic: a few GPUs over a few hours, one finding,
one saving and one action, money in USD. ``util`` changes every utilization figure, so a
test can tell two writes of the same week apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from gpuwatch.config.settings import ReportSettings
from gpuwatch.model.findings import DataQualityNote
from gpuwatch.report.data import NearOom, ReportData, ReportPeriod
from gpuwatch.report.figures import NO_POOL, NO_TEAM, NO_WORKLOAD
from gpuwatch.report.schema import (
    ACTIONS,
    FINDINGS,
    GPU_HOURLY,
    HOLDER_HOURLY,
    REALIZED,
    SAVINGS,
    SCHEMAS,
)
from gpuwatch.weekly.teams import team_weekly_table

WEEK = ReportPeriod.iso_week("2026-W48")
PRICE_PER_GPU_HOUR = Decimal("2.500000")


NEAR_OOM = NearOom("gpu-near-oom", 0.95)
"""The shipped near-OOM rule, as the report draws it."""


def report_tables(
    start: datetime | None = None, *, gpus: int = 2, hours: int = 3, util: float = 0.5
) -> dict[str, pa.Table]:
    """``gpus`` x ``hours`` rows of ``gpu_hourly`` from ``start`` (the week's start by
    default), and one row in each other table."""
    start = start or WEEK.start
    hourly: dict[str, list[object]] = {field.name: [] for field in SCHEMAS["gpu_hourly"]}
    for hour in range(hours):
        for index in range(gpus):
            uuid = f"GPU-{index:04d}"
            idle = (PRICE_PER_GPU_HOUR * Decimal(str(1 - util))).quantize(Decimal("0.000001"))
            row = {
                "hour": start + timedelta(hours=hour),
                "gpu_uuid": uuid,
                "device_id": uuid,
                "gpu_index": index,
                "mig_profile": None,
                "node": f"node-{index // 8}",
                "pool": "gpu-training",
                "model": "NVIDIA A100-SXM4-80GB",
                "capacity_type": "on-demand",
                "namespace": "team-a",
                "pod": f"train-worker-{index}",
                "workload": "PyTorchJob/team-a/train",
                "team": "team-a",
                "util_mean_ratio": util,
                "util_p95_ratio": min(1.0, util + 0.2),
                "fb_used_max_mib": 40_960.0,
                "fb_used_max_ratio": 0.5,
                "power_mean_w": 300.0,
                "energy_kwh": 0.3,
                "coverage_ratio": 1.0,
                "cost": PRICE_PER_GPU_HOUR,
                "idle_cost": idle,
                "currency": "USD",
                "allocated_ratio": 1.0,
            }
            for name, value in row.items():
                hourly[name].append(value)
    end = start + timedelta(hours=hours)
    findings = {
        "rule": ["gpu-idle"],
        "severity": ["warning"],
        "gpu_uuid": ["GPU-0000"],
        "device_id": ["GPU-0000"],
        "node": ["node-0"],
        "pool": ["gpu-training"],
        "namespace": ["team-a"],
        "pod": ["train-worker-0"],
        "workload": ["PyTorchJob/team-a/train"],
        "team": ["team-a"],
        "start": [start + timedelta(hours=1)],
        "end": [end],
        "hours": [hours - 1],
        "worst_value": [util],
        "threshold": [0.1],
        "unit": ["ratio"],
        "message": ["GPU-0000 idle"],
    }
    savings = {
        "kind": ["rightsize"],
        "scope": [json.dumps({"pool": "gpu-training"})],
        "monthly": [Decimal("1825.000000")],
        "currency": ["USD"],
        "confidence": ["medium"],
        "formula": ["idle_gpus x price x 730"],
        "inputs": [json.dumps({"idle_gpus": 1, "price": "2.5"})],
        "assumptions": [json.dumps(["the pattern holds for a month"])],
        "action": ["scale gpu-training down by 1"],
        "at": [end],
        "net_monthly": [Decimal("1825.000000")],
        "cash": [True],
        "reclaimed_gpu_hours_monthly": [0.0],
        "reclaimed_monthly": [Decimal(0)],
        "gpus": [json.dumps(["GPU-0000"])],
        "nodes": [json.dumps(["node-0"])],
        "blocked": [None],
        "unblock": [None],
        "lookback_s": [604800],
        "hours_counted": [168.0],
        "order": [1],
        "team": [None],
        "pool": ["gpu-training"],
        "workload": [None],
    }
    actions = {
        "at": [end],
        "kind": ["scale_down"],
        "target": ["gpu-training"],
        "pool": ["gpu-training"],
        "status": ["planned"],
        "reason": ["1 GPU idle"],
        "dry_run": [True],
        "key": ["scale_down/gpu-training"],
        "details": [json.dumps({"from": gpus, "to": gpus - 1})],
        "decision": [None],
        "decided_by": [None],
        "decided_at": [None],
    }
    columns = {"gpu_hourly": hourly, "findings": findings, "savings": savings, "actions": actions}
    tables = {name: pa.Table.from_pydict(columns[name], schema=SCHEMAS[name]) for name in columns}
    tables["holder_hourly"] = holders_of(tables["gpu_hourly"])
    tables["realized"] = REALIZED.empty_table()
    tables["team_weekly"] = team_weekly_table(tables["holder_hourly"])
    tables["budgets"] = SCHEMAS["budgets"].empty_table()
    tables["forecasts"] = SCHEMAS["forecasts"].empty_table()
    return {name: tables[name] for name in SCHEMAS}


def report_data(
    cluster: str = "prod-a",
    period: ReportPeriod = WEEK,
    *,
    gpus: int = 2,
    hours: int = 3,
    util: float = 0.5,
) -> ReportData:
    """A ``ReportData`` for ``cluster`` and ``period`` with ``report_tables``'s tables."""
    tables = report_tables(period.start, gpus=gpus, hours=hours, util=util)
    return ReportData(cluster=cluster, period=period, tables=tables, near_oom=NEAR_OOM)


PERIOD = ReportPeriod.iso_week("2026-W48")  # Mon 2026-11-23 00:00 UTC, 168 hours
SHIPPED = ReportSettings()


def hourly_row(
    hour: int,
    *,
    gpu: str = "GPU-a-0",
    node: str = "node-a",
    index: int | None = 0,
    pool: str | None = "gpu-training",
    team: str | None = "ml-research",
    workload: str | None = "PyTorchJob/ml/train",
    util: float | None = 0.5,
    coverage: float = 1.0,
    fb_ratio: float | None = 0.5,
    price: str | None = "2.500000",
    currency: str | None = "USD",
    period: ReportPeriod = PERIOD,
    **extra: Any,
) -> dict[str, Any]:
    """One ``gpu_hourly`` row at hour ``hour`` of ``period``, with cost = price and
    idle cost = price x coverage x (1 - util), null when util is (as the report writer
    does)."""
    cost = None if price is None else Decimal(price)
    idle = (
        None
        if cost is None or util is None
        else cost * Decimal(str(coverage)) * (1 - Decimal(str(util)))
    )
    row = {
        "hour": period.start + timedelta(hours=hour),
        "gpu_uuid": gpu,
        "device_id": gpu,
        "gpu_index": index,
        "mig_profile": None,
        "node": node,
        "pool": pool,
        "model": "NVIDIA A100-SXM4-80GB",
        "capacity_type": "on-demand",
        "namespace": None if team is None else team,
        "pod": None if workload is None else workload.rsplit("/", 1)[-1] + "-0",
        "workload": workload,
        "team": team,
        "util_mean_ratio": util,
        "util_p95_ratio": util,
        "fb_used_max_mib": None if fb_ratio is None else fb_ratio * 81920,
        "fb_used_max_ratio": fb_ratio,
        "power_mean_w": None if util is None else 100 + 300 * util,
        "energy_kwh": None if util is None else (100 + 300 * util) * coverage / 1000,
        "coverage_ratio": coverage,
        "cost": None if cost is None else cost.quantize(Decimal("0.000001")),
        "idle_cost": None if idle is None else idle.quantize(Decimal("0.000001")),
        "currency": currency if cost is not None else None,
        "allocated_ratio": 0.0 if team is None else 1.0,
    }
    row.update(extra)
    return row


def gap_row(hour: int, **kwargs: Any) -> dict[str, Any]:
    """An hour with no samples: coverage 0, no utilization, no memory, no idle cost.
    The GPU is still billed (the node existed)."""
    return hourly_row(hour, util=None, coverage=0.0, fb_ratio=None, **kwargs)


def hourly_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=GPU_HOURLY)


def holders_of(hourly: pa.Table) -> pa.Table:
    """``holder_hourly`` for GPU-hours each held whole by their ``gpu_hourly`` holder, or
    by nobody where it names none (as the writer makes it for whole GPUs)."""
    rows = []
    for row in hourly.to_pylist():
        held = row["pod"] is not None or row["team"] is not None
        rows.append(
            {
                **{name: row.get(name) for name in HOLDER_HOURLY.names},
                "share_ratio": 1.0,
                "evidence": "exporter" if held else None,
            }
        )
    return pa.Table.from_pylist(rows, schema=HOLDER_HOURLY)


def saving_row(kind: str, monthly: str, currency: str = "USD", **extra: Any) -> dict[str, Any]:
    """A cash lever taken alone (its net is its gross) unless ``extra`` says otherwise."""
    row = {
        "kind": kind,
        "scope": json.dumps({"pool": "gpu-training", "workload": None}),
        "monthly": Decimal(monthly),
        "currency": currency,
        "confidence": "high",
        "formula": "gpus x hours x (on_demand - spot) x 720 / window_hours",
        "inputs": json.dumps({"gpus": 4, "on_demand_usd_per_hour": 2.5, "spot_usd_per_hour": 1.0}),
        "assumptions": json.dumps(["spot capacity is available", "checkpoints every 5 min"]),
        "action": "migrate to spot",
        "at": PERIOD.end - timedelta(hours=1),
        "net_monthly": Decimal(monthly),
        "cash": True,
        "reclaimed_gpu_hours_monthly": 0.0,
        "reclaimed_monthly": Decimal(0),
        "gpus": json.dumps(["GPU-t0", "GPU-t1"]),
        "nodes": json.dumps([]),
        "blocked": None,
        "unblock": None,
        "lookback_s": 604800,
        "hours_counted": 168.0,
        "order": 4,
        "team": None,
        "pool": "gpu-training",
        "workload": None,
    }
    row.update(extra)
    return row


def action_row(hour: int, status: str, target: str = "Node/idle-1", **extra: Any) -> dict:
    row = {
        "at": PERIOD.start + timedelta(hours=hour),
        "kind": "scale_down_node",
        "target": target,
        "pool": "gpu-training",
        "status": status,
        "reason": f"{status}: example",
        "dry_run": status == "planned",
        "key": f"scale_down_node|{target}|{hour}",
        "details": json.dumps({"gpus": 8}),
        "decision": None,
        "decided_by": None,
        "decided_at": None,
    }
    row.update(extra)
    return row


def realized_row(hour: int, target: str, projected: str | None, **extra: Any) -> dict:
    """A node removed at ``hour``: 20 hours compared, its cost gone after."""
    at = PERIOD.start + timedelta(hours=hour)
    row = {
        "at": at,
        "kind": "scale_down_node",
        "target": target,
        "key": f"scale_down_node:{target}",
        "scope": json.dumps({"node": target.split("/", 1)[-1]}),
        "currency": "USD",
        "projected_monthly": None if projected is None else Decimal(projected),
        "projected_from": "action details.monthly_saving",
        "hours_compared": 20,
        "before_start": at - timedelta(hours=20),
        "before_cost": Decimal("50.000000"),
        "after_start": at,
        "after_cost": Decimal("0.000000"),
        "measured_monthly": Decimal("1800.000000"),
    }
    row.update(extra)
    return row


def finding_row(node: str, gpu: str, worst: float, start_hour: int, hours: int) -> dict:
    return {
        "rule": "gpu-near-oom",
        "severity": "warning",
        "gpu_uuid": gpu,
        "device_id": gpu,
        "node": node,
        "pool": "gpu-training",
        "namespace": "vision",
        "pod": "detector-train-worker-0",
        "workload": "PyTorchJob/vision/detector-train",
        "team": "vision",
        "start": PERIOD.start + timedelta(hours=start_hour),
        "end": PERIOD.start + timedelta(hours=start_hour + hours),
        "hours": hours,
        "worst_value": worst,
        "threshold": 0.95,
        "unit": "ratio",
        "message": f"GPU memory at {worst:.0%}",
    }


def tables_of(
    hourly: Iterable[Mapping[str, Any]] = (),
    savings: Iterable[Mapping[str, Any]] = (),
    actions: Iterable[Mapping[str, Any]] = (),
    findings: Iterable[Mapping[str, Any]] = (),
    holders: Iterable[Mapping[str, Any]] | None = None,
    realized: Iterable[Mapping[str, Any]] = (),
) -> dict[str, pa.Table]:
    """Report tables of these rows; ``holder_hourly`` from ``holders``, else each GPU-hour
    held whole by its ``gpu_hourly`` holder."""
    gpu_hourly = hourly_table(hourly)
    return {
        "gpu_hourly": gpu_hourly,
        "holder_hourly": (
            holders_of(gpu_hourly)
            if holders is None
            else pa.Table.from_pylist(list(holders), schema=HOLDER_HOURLY)
        ),
        "findings": pa.Table.from_pylist(list(findings), schema=FINDINGS),
        "savings": pa.Table.from_pylist(list(savings), schema=SAVINGS),
        "actions": pa.Table.from_pylist(list(actions), schema=ACTIONS),
        "realized": pa.Table.from_pylist(list(realized), schema=REALIZED),
        "team_weekly": SCHEMAS["team_weekly"].empty_table(),
        "budgets": SCHEMAS["budgets"].empty_table(),
        "forecasts": SCHEMAS["forecasts"].empty_table(),
    }


def realistic_report(**changes: Any) -> ReportData:
    """A small week: two teams on two pools (one node with a 3-hour exporter gap), an
    unallocated GPU, a near-OOM GPU, savings, actions of every status, a previous week."""
    rows = []
    for hour in range(PERIOD.hours):
        busy = 0.9 if 9 <= hour % 24 < 19 else 0.1
        rows.append(hourly_row(hour, gpu="GPU-t0", node="train-1", index=0, util=busy))
        near_oom = 0.97 if hour % 8 == 7 else 0.6 + 0.04 * (hour % 8)
        rows.append(
            hourly_row(
                hour,
                gpu="GPU-t1",
                node="train-1",
                index=1,
                team="vision",
                workload="PyTorchJob/vision/detector-train",
                util=0.8,
                fb_ratio=near_oom,
            )
        )
        if 30 <= hour < 33:
            rows.append(gap_row(hour, gpu="GPU-i0", node="infer-1", pool="gpu-inference"))
        else:
            rows.append(
                hourly_row(
                    hour,
                    gpu="GPU-i0",
                    node="infer-1",
                    pool="gpu-inference",
                    team="vision",
                    workload="Deployment/vision/serve",
                    util=0.25,
                    price="1.100000",
                )
            )
        rows.append(
            hourly_row(
                hour,
                gpu="GPU-i1",
                node="infer-1",
                index=1,
                pool="gpu-inference",
                team=None,
                workload=None,
                util=0.0,
                fb_ratio=0.0,
                price="1.100000",
            )
        )
    previous_period = PERIOD.previous()
    previous = tables_of(
        hourly=[
            hourly_row(hour, period=previous_period, util=0.4, price="2.000000")
            for hour in range(previous_period.hours)
        ],
        savings=[saving_row("spot", "900.000000")],
        actions=[action_row(1, "done")],
    )
    values: dict[str, Any] = {
        "cluster": "prod-gpu",
        "period": PERIOD,
        "tables": tables_of(
            hourly=rows,
            savings=[
                saving_row(
                    "sharing",
                    "310.250000",
                    cash=False,
                    net_monthly=Decimal(0),
                    reclaimed_gpu_hours_monthly=124.1,
                    reclaimed_monthly=Decimal("310.250000"),
                    order=2,
                ),
                saving_row(
                    "spot",
                    "1520.400000",
                    scope=json.dumps({"workload": "llm/pretrain"}),
                    net_monthly=Decimal("1402.100000"),
                ),
                saving_row(
                    "release-idle",
                    "88.000000",
                    confidence="medium",
                    net_monthly=Decimal(0),
                    blocked="a pending pod of research/big-sweep needs the pool",
                    unblock="give research/big-sweep room in another pool",
                    nodes=json.dumps(["infer-1"]),
                    order=1,
                ),
            ],
            actions=[
                action_row(20, "done", "Node/train-9"),
                action_row(44, "refused", "Node/infer-1", reason="a pending pod needs the pool"),
                action_row(70, "planned", "Node/train-3"),
                action_row(100, "failed", "Node/train-4", reason="eviction: 429"),
            ],
            findings=[
                finding_row("train-1", "GPU-t1", 0.97, 7, 1),
                finding_row("train-1", "GPU-t1", 0.99, 15, 1),
            ],
            realized=[realized_row(20, "Node/train-9", projected="1800.000000")],
        ),
        "previous": previous,
        "notes": (
            DataQualityNote(kind="data_gap", message="exporter down 06:00-09:00", node="infer-1"),
        ),
        "generated_at": datetime(2026, 11, 30, 6, 0, tzinfo=UTC),
        "near_oom": NEAR_OOM,
    }
    values.update(changes)
    return ReportData(**values)


# --------------------------------------------------------------------------- money check


class _MoneyParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if "data-money" in values:
            self.found.append(
                (
                    values["data-money"] or "",
                    values["data-currency"] or "",
                    values["data-value"] or "",
                )
            )


def money_elements(page: str) -> list[tuple[str, str, Decimal]]:
    """Every ``data-money`` element of the page: (figure id, currency, exact value)."""
    parser = _MoneyParser()
    parser.feed(page)
    return [(figure, currency, Decimal(value)) for figure, currency, value in parser.found]


def _sums(table: pa.Table, value: str, key: str | None, missing: str) -> dict[tuple, Decimal]:
    """``{(key, currency): sum}`` over the rows where ``value`` is not null."""
    rows = table.filter(pc.is_valid(table[value]))
    keys = ["currency"] if key is None else [key, "currency"]
    if key is not None:
        rows = rows.set_column(
            rows.schema.get_field_index(key), key, pc.fill_null(rows[key], missing)
        )
    grouped = rows.group_by(keys).aggregate([(value, "sum")]).to_pylist()
    return {tuple(g[k] for k in keys): g[f"{value}_sum"] for g in grouped}


def expected_money(data: ReportData) -> dict[tuple[str, str], Decimal]:
    """Every money figure the page may show, recomputed from the tables with pyarrow."""
    hourly, savings = data.tables["gpu_hourly"], data.tables["savings"]
    holders = data.tables["holder_hourly"]
    expected: dict[tuple[str, str], Decimal] = {}
    sources: list[tuple[str, Mapping[str, pa.Table]]] = [("headline", data.tables)]
    if data.previous is not None:
        sources.append(("previous", data.previous))
    for prefix, tables in sources:
        savings_table = tables.get("savings")
        blocked = (
            None
            if savings_table is None
            else savings_table.filter(pc.is_valid(savings_table["blocked"]))
        )
        for figure, table, column in (
            ("cost", tables["gpu_hourly"], "cost"),
            ("idle_cost", tables["gpu_hourly"], "idle_cost"),
            ("net_savings", savings_table, "net_monthly"),
            # Last week's reclaimed capacity is shown in GPU-hours, its blocked not at all.
            ("reclaimed", savings_table if prefix == "headline" else None, "reclaimed_monthly"),
            ("blocked", blocked if prefix == "headline" else None, "monthly"),
        ):
            if table is None:
                continue
            for (currency,), total in _sums(table, column, None, "").items():
                expected[(f"{prefix}.{figure}", currency)] = total
    for figure, table, column, key, missing in (
        ("cost.team", holders, "cost", "team", NO_TEAM),
        ("cost.pool", hourly, "cost", "pool", NO_POOL),
        ("idle.team", holders, "idle_cost", "team", NO_TEAM),
        ("idle.workload", holders, "idle_cost", "workload", NO_WORKLOAD),
    ):
        for (name, currency), total in _sums(table, column, key, missing).items():
            expected[(f"{figure}.{name}", currency)] = total
    realized = data.tables["realized"]
    for figure, column in (
        ("realized", "measured_monthly"),
        ("realized_projected", "projected_monthly"),
    ):
        for (currency,), total in _sums(realized, column, None, "").items():
            expected[(f"headline.{figure}", currency)] = total
    for index, row in enumerate(realized.to_pylist()):
        if row["currency"] is None:
            continue
        for figure, column in (
            ("projected", "projected_monthly"),
            ("measured", "measured_monthly"),
        ):
            if row[column] is not None:
                expected[(f"realized.{figure}.{index}", row["currency"])] = row[column]
        if row["hours_compared"]:
            expected[(f"realized.before.{index}", row["currency"])] = row["before_cost"]
            expected[(f"realized.after.{index}", row["currency"])] = row["after_cost"]
    weeks = [*data.trend, (data.period.label, data.tables["team_weekly"])]
    for label, table in weeks:
        for row in table.to_pylist():
            expected[(f"trend.{row['team']}.{label}", row["currency"])] = row["cost"]
    for row in data.tables["budgets"].to_pylist():
        for figure in ("amount", "spent", "projected"):
            if row[figure] is not None:
                expected[(f"budget.{figure}.{row['budget']}", row["currency"])] = row[figure]
    for index, row in enumerate(savings.to_pylist()):
        expected[(f"saving.{index}", row["currency"])] = row["monthly"]
        if row["cash"] is False:
            expected[(f"saving_reclaimed.{index}", row["currency"])] = row["reclaimed_monthly"]
        elif row["net_monthly"] is not None:
            expected[(f"saving_net.{index}", row["currency"])] = row["net_monthly"]
    return expected


def assert_money_matches(data: ReportData, page: str) -> list[tuple[str, str, Decimal]]:
    found = money_elements(page)
    expected = expected_money(data)
    for figure, currency, value in found:
        assert (figure, currency) in expected, f"unexpected money figure {figure} {currency}"
        assert value == expected[(figure, currency)], (figure, currency, value)
    shown = {(figure, currency) for figure, currency, _ in found}
    # The page shows every team, pool, workload and saving, and the headline.
    missing = set(expected) - shown
    assert not missing, f"money figures missing from the page: {sorted(missing)}"
    return found
