"""Small, valid report tables (every schema of ``gpuwatch.report.schema``), for tests of
anything that writes, reads or renders the weekly report.

The values are plausible rather than realistic: a few GPUs over a few hours, one finding,
one saving and one action, money in USD. ``util`` changes every utilization figure, so a
test can tell two writes of the same week apart.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal

import pyarrow as pa

from gpuwatch.report.data import ReportData, ReportPeriod
from gpuwatch.report.schema import SCHEMAS

WEEK = ReportPeriod.iso_week("2026-W48")
PRICE_PER_GPU_HOUR = Decimal("2.500000")


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
    }
    columns = {"gpu_hourly": hourly, "findings": findings, "savings": savings, "actions": actions}
    return {
        name: pa.Table.from_pydict(columns[name], schema=schema) for name, schema in SCHEMAS.items()
    }


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
    return ReportData(cluster=cluster, period=period, tables=tables)
