"""Benchmark: the weekly report of a simulated fleet, against a straightforward pandas one.

Two ways to get a week's per-GPU-hour table (utilization mean and p95, memory, power,
energy, holder, team, cost, idle cost) and the figures a report shows (cost and idle
cost by team and by pool, the utilization heatmap), side by side in one run:

(a) baseline: what a user writes with pandas: the week's samples in one DataFrame, a
    ``groupby`` per GPU and hour, pods and nodes merged in, the price looked up per row
    with ``apply``, the figures by ``groupby`` and ``pivot_table``, Parquet by pandas;
(b) gpuwatch: the whole report (``gpuwatch report`` without the command line): hourly
    aggregates a day at a time, columnar tables, the findings of every rule at every
    hour, the savings, Parquet and the HTML page.

The baseline does less than gpuwatch (no findings, savings or page), so the speedup is a
floor. Each runs in its own process, so that peak RSS is its own; both read the same
simulated samples. Run:

    .venv/bin/python bench/report.py --gpus 10000        # 7 days, samples every 300 s

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpuwatch.config.settings import Settings, SimulatorSettings
from gpuwatch.sources.simulator import SimulatedCluster
from gpuwatch.sources.simulator.layout import SHOWCASE_AT

END = SHOWCASE_AT.replace(hour=0)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def simulator(gpus: int, days: float, step_s: int) -> SimulatorSettings:
    # One more day than the report: the savings look back a week from its end.
    return SimulatorSettings(gpus=gpus, days=days + 1, step_s=step_s)


def run_gpuwatch(gpus: int, days: float, step_s: int, out: Path) -> dict:
    from gpuwatch.analysis.pricing import load_price_book
    from gpuwatch.analysis.rules.loader import load_rules
    from gpuwatch.config.settings import ReportSettings
    from gpuwatch.notify.console import RecordingNotifier
    from gpuwatch.pipeline import Components
    from gpuwatch.report.data import ReportPeriod
    from gpuwatch.report.html import render_html
    from gpuwatch.report.store import ReportStore
    from gpuwatch.sources.simulator import SimulatorClusterSource, SimulatorMetricsSource
    from gpuwatch.state.base import MemoryState
    from gpuwatch.weekly.build import build_report

    started = time.perf_counter()
    cluster = SimulatedCluster(simulator(gpus, days, step_s), end=END)
    components = Components(
        metrics=SimulatorMetricsSource(cluster),
        cluster=SimulatorClusterSource(cluster),
        rules=tuple(load_rules()),
        state=MemoryState(),
        notifier=RecordingNotifier(),
        price_book=load_price_book(),
    )
    period = ReportPeriod.between(END - timedelta(days=days), END)
    stages: dict[str, float] = {}
    last = [time.perf_counter(), "setup"]

    def stage(name: str) -> None:
        now = time.perf_counter()
        stages[str(last[1])] = round(now - float(last[0]), 2)
        last[:] = [now, name]

    data = build_report(components, Settings(), period, float(step_s), stage=stage)
    stage("write")
    settings = ReportSettings(location=str(out))
    ReportStore.from_settings(settings).write_tables(data)
    html = render_html(data, settings)
    stage("done")
    hourly = data.tables["gpu_hourly"]
    return {
        "wall_s": time.perf_counter() - started,
        "peak_rss_mib": peak_rss_mib(),
        "rows": hourly.num_rows,
        "cost": float(sum(v for v in hourly["cost"].to_pylist() if v is not None)),
        "findings": data.tables["findings"].num_rows,
        "html_bytes": len(html),
        "stages_s": stages,
    }


def run_baseline(gpus: int, days: float, step_s: int, out: Path) -> dict:
    import numpy as np
    import pandas as pd

    from gpuwatch.analysis.attribution import attribute
    from gpuwatch.analysis.pricing import load_price_book
    from gpuwatch.model.metrics import Signal

    started = time.perf_counter()
    cluster = SimulatedCluster(simulator(gpus, days, step_s), end=END)
    state = cluster.state()
    start = END - timedelta(days=days)
    # The week's samples, as a user gets them: one long DataFrame.
    block = cluster.samples(start, END)
    n, t = len(block.devices), block.times_s.size
    samples = pd.DataFrame(
        {
            "device": np.repeat(np.arange(n), t),
            "time": pd.to_datetime(np.tile(block.times_s, n), unit="s", utc=True),
            "util": block.values[Signal.UTIL_RATIO].reshape(-1),
            "fb_used": block.values[Signal.FB_USED_MIB].reshape(-1),
            "fb_ratio": block.values[Signal.FB_USED_RATIO].reshape(-1),
            "power": block.values[Signal.POWER_W].reshape(-1),
        }
    )
    del block
    # Samples in (h, h + 1h] belong to the hour that starts at h, as in gpuwatch.
    samples["hour"] = (samples["time"] - pd.Timedelta(seconds=1)).dt.floor("h")
    groups = samples.groupby(["device", "hour"])
    hourly = groups.agg(
        util_mean=("util", "mean"),
        fb_used_max=("fb_used", "max"),
        fb_ratio_max=("fb_ratio", "max"),
        power_mean=("power", "mean"),
        samples=("util", "count"),
    )
    hourly["util_p95"] = groups["util"].quantile(0.95)
    hourly = hourly.reset_index()
    del samples
    # Who held each GPU, on which node and pool: merged in from the cluster.
    contexts = attribute(block_devices := cluster.devices, state, Settings().attribution, END, 0)
    devices = pd.DataFrame(
        {
            "device": range(len(block_devices)),
            "node": [d.node for d in block_devices],
            "pool": [c.pool for c in contexts.contexts[: len(block_devices)]],
            "model": [c.model for c in contexts.contexts[: len(block_devices)]],
            "capacity_type": [c.capacity_type for c in contexts.contexts[: len(block_devices)]],
            "namespace": [d.pod.namespace if d.pod else None for d in block_devices],
            "pod": [d.pod.name if d.pod else None for d in block_devices],
        }
    )
    teams = {ns.name: ns.name for ns in state.namespaces}
    hourly = hourly.merge(devices, on="device", how="left")
    hourly["team"] = hourly["namespace"].map(teams)
    book = load_price_book()

    def price(row: pd.Series) -> float:
        found, _ = book.price(row["model"], row["capacity_type"], row["pool"])
        return float(found.per_gpu_hour) if found is not None else np.nan

    hourly["price"] = hourly.apply(price, axis=1)
    hourly["cost"] = hourly["price"]
    hourly["idle_cost"] = hourly["cost"] * (1 - hourly["util_mean"].clip(0, 1))
    hourly["energy_kwh"] = hourly["power_mean"] * hourly["samples"] * step_s / 3600 / 1000
    by_team = hourly.groupby("team", dropna=False)[["cost", "idle_cost"]].sum()
    by_pool = hourly.groupby("pool", dropna=False)[["cost", "idle_cost"]].sum()
    heatmap = hourly.pivot_table(index="device", columns="hour", values="util_mean")
    out.mkdir(parents=True, exist_ok=True)
    hourly.to_parquet(out / "gpu_hourly.parquet")
    return {
        "wall_s": time.perf_counter() - started,
        "peak_rss_mib": peak_rss_mib(),
        "rows": len(hourly),
        "cost": float(hourly["cost"].sum()),
        "teams": len(by_team),
        "pools": len(by_pool),
        "heatmap_cells": int(heatmap.size),
    }


def child(side: str, gpus: int, days: float, step_s: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"gpuwatch-bench-{side}-") as tmp:
        command = [
            sys.executable,
            __file__,
            "--side",
            side,
            "--gpus",
            str(gpus),
            "--days",
            str(days),
            "--step",
            str(step_s),
            "--out",
            tmp,
        ]
        run = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
        if run.returncode != 0:
            raise SystemExit(f"{side} failed:\n{run.stderr[-3000:]}")
        return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=1024)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--step", type=int, default=300, help="Seconds between samples.")
    parser.add_argument("--no-baseline", action="store_true", help="Measure gpuwatch only.")
    parser.add_argument("--side", choices=("gpuwatch", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run = run_gpuwatch if args.side == "gpuwatch" else run_baseline
        print(json.dumps(run(args.gpus, args.days, args.step, args.out)))
        return

    ours = child("gpuwatch", args.gpus, args.days, args.step)
    gpu_hours = ours["rows"]
    print(f"{args.gpus} GPUs x {args.days:g} days, samples every {args.step} s")
    print(
        f"gpuwatch  {ours['wall_s']:7.1f} s  {ours['peak_rss_mib']:7.0f} MiB  "
        f"{gpu_hours / ours['wall_s']:9.0f} GPU-hours/s  (stages {ours['stages_s']})"
    )
    result = {
        "bench": "report",
        "gpus": args.gpus,
        "days": args.days,
        "wall_s": round(ours["wall_s"], 2),
        "peak_rss_mib": round(ours["peak_rss_mib"]),
        "baseline_s": None,
        "speedup": None,
    }
    if not args.no_baseline:
        theirs = child("baseline", args.gpus, args.days, args.step)
        print(
            f"baseline  {theirs['wall_s']:7.1f} s  {theirs['peak_rss_mib']:7.0f} MiB  "
            f"{theirs['rows'] / theirs['wall_s']:9.0f} GPU-hours/s"
        )
        print(
            f"same GPU-hours: {theirs['rows'] == gpu_hours}; cost differs by "
            f"{abs(theirs['cost'] - ours['cost']) / max(ours['cost'], 1):.2e} (relative)"
        )
        result.update(
            baseline_s=round(theirs["wall_s"], 2),
            baseline_peak_rss_mib=round(theirs["peak_rss_mib"]),
            speedup=round(theirs["wall_s"] / ours["wall_s"], 2),
            memory_ratio=round(theirs["peak_rss_mib"] / ours["peak_rss_mib"], 2),
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
