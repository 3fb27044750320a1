"""Benchmark: the weekly report of a fleet from its raw samples, against pandas.

Both sides start from the same raw samples: a Parquet file of DCGM exporter samples
(one row per GPU per scrape, the exporter's labels and metrics, as a user exports them
from Prometheus), written once before anything is timed and cached in
``.bench-cache/``. From it, side by side in one run:

(a) baseline: what a competent pandas user writes: ``read_parquet`` of the period (the
    columns needed, the period pushed down as a filter), utilization and memory ratio
    derived per row, ``groupby`` per GPU and hour (mean, p95, max, count, the pod seen
    most), nodes, pools and prices merged per GPU, cost and idle cost as columns, the
    figures by ``groupby``/``pivot_table``, Parquet by pandas;
(b) gpuwatch: the whole report (``gpuwatch report`` without the command line) over the
    same file (``gpuwatch.sources.samples_file``): hourly aggregates a row group at a
    time, columnar tables, the findings of every rule over the GPU x hour grid, the
    savings of a cycle at the period's end, the Parquet dataset and the HTML page.

The baseline does less than gpuwatch (no findings, savings or page), so the speedup is a
floor. With ``--duckdb`` a third reference runs: DuckDB on every core, the hourly
aggregates alone (mean, 95th percentile and maxima per GPU and hour, the samples and the
pod seen most) from the same file, in one SQL query: what an engine built for this takes
for the first step of the report, not a report.

gpuwatch's command line makes the C library's malloc Arrow's allocator
(``gpuwatch.util.memory``); the baseline runs twice, as pandas is installed and with
``ARROW_DEFAULT_MEMORY_POOL=system``, so that the ratio of the work alone is printed too
(``speedup_same_allocator``).

Each side runs in its own process, so that peak RSS is its own; afterwards the two
``gpu_hourly`` tables are compared cell by cell (utilization mean and p95, memory,
power, samples, cost). Each side's CPU seconds are printed beside its wall time (on a
shared machine the wall time moves with the neighbours; the CPU time much less). Run:

    .venv/bin/python bench/report.py --gpus 10000        # 7 days, samples every 300 s

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peak_memory import peak_rss_mib
from gpuwatch.config.settings import Settings, SimulatorSettings
from gpuwatch.sources.simulator import SimulatedCluster
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from gpuwatch.util.memory import POOL_ENV

END = SHOWCASE_AT.replace(hour=0)
CACHE = REPO / ".bench-cache"
COMPARED = ("util_mean_ratio", "util_p95_ratio", "fb_used_max_mib", "power_mean_w", "cost")


def cpu_s() -> float:
    """The process' user and system CPU seconds (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def simulated(gpus: int, days: float, step_s: int) -> SimulatedCluster:
    # One more day than the report: the savings look back a week from its end.
    return SimulatedCluster(SimulatorSettings(gpus=gpus, days=days + 1, step_s=step_s), end=END)


def samples_file(gpus: int, days: float, step_s: int) -> Path:
    """The raw samples both sides read, written once (a row group per day)."""
    from gpuwatch.sources.simulator.exposition import write_samples_parquet

    path = CACHE / f"report-samples-{gpus}g-{days:g}d-{step_s}s.parquet"
    if path.exists():
        return path
    CACHE.mkdir(exist_ok=True)
    cluster = simulated(gpus, days, step_s)
    start = cluster.history_start
    blocks = (
        cluster.samples(start + timedelta(days=k), start + timedelta(days=k + 1))
        for k in range(int(days + 1))
    )
    partial = path.with_suffix(".partial")
    write_samples_parquet(partial, blocks, cluster.layout.gpus)
    partial.replace(path)
    return path


def run_gpuwatch(gpus: int, days: float, step_s: int, path: Path, out: Path) -> dict:
    import pyarrow.compute as pc

    from gpuwatch.analysis.pricing import load_price_book
    from gpuwatch.analysis.rules.loader import load_rules
    from gpuwatch.config.settings import ReportSettings
    from gpuwatch.jobs import write_and_render
    from gpuwatch.notify.console import RecordingNotifier
    from gpuwatch.pipeline import Components
    from gpuwatch.report.data import ReportPeriod
    from gpuwatch.report.store import ReportStore
    from gpuwatch.sources.samples_file import SampleFile, SampleFileMetricsSource
    from gpuwatch.sources.simulator import SimulatorClusterSource
    from gpuwatch.state.base import MemoryState
    from gpuwatch.util.memory import use_system_allocator
    from gpuwatch.weekly.build import build_report

    use_system_allocator()  # as the command line does
    started, cpu_started = time.perf_counter(), cpu_s()
    components = Components(
        metrics=SampleFileMetricsSource(SampleFile(path)),
        cluster=SimulatorClusterSource(simulated(gpus, days, step_s)),
        rules=tuple(load_rules()),
        state=MemoryState(),
        notifier=RecordingNotifier(),
        price_book=load_price_book(),
    )
    period = ReportPeriod.between(END - timedelta(days=days), END)
    stages: dict[str, float] = {}
    peaks: dict[str, int] = {}
    last = [time.perf_counter(), "setup"]

    def stage(name: str) -> None:
        now = time.perf_counter()
        stages[str(last[1])] = round(now - float(last[0]), 2)
        peaks[str(last[1])] = round(peak_rss_mib())
        last[:] = [now, name]

    data = build_report(components, Settings(), period, float(step_s), stage=stage)
    stage("write")
    settings = ReportSettings(location=str(out))
    _, html = write_and_render(ReportStore.from_settings(settings), data, settings)
    stage("done")
    hourly = data.tables["gpu_hourly"]
    return {
        "wall_s": time.perf_counter() - started,
        "cpu_s": cpu_s() - cpu_started,
        "peak_rss_mib": peak_rss_mib(),
        "rows": hourly.num_rows,
        "cost": float(pc.sum(hourly["cost"]).as_py() or 0),
        "findings": data.tables["findings"].num_rows,
        "savings": data.tables["savings"].num_rows,
        "html_bytes": len(html),
        "stages_s": stages,
        "peak_rss_after_stage_mib": peaks,
    }


def run_baseline(gpus: int, days: float, step_s: int, path: Path, out: Path) -> dict:
    import numpy as np
    import pandas as pd

    from gpuwatch.analysis.attribution import attribute
    from gpuwatch.analysis.pricing import load_price_book
    from gpuwatch.model.metrics import GpuDevice

    started, cpu_started = time.perf_counter(), cpu_s()
    start = pd.Timestamp(END - timedelta(days=days))
    samples = pd.read_parquet(
        path,
        columns=[
            "timestamp",
            "UUID",
            "gpu",
            "modelName",
            "Hostname",
            "pod",
            "namespace",
            "DCGM_FI_DEV_GPU_UTIL",
            "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
            "DCGM_FI_DEV_FB_USED",
            "DCGM_FI_DEV_FB_FREE",
            "DCGM_FI_DEV_FB_RESERVED",
            "DCGM_FI_DEV_POWER_USAGE",
        ],
        filters=[("timestamp", ">", start), ("timestamp", "<=", pd.Timestamp(END))],
    )
    # Utilization: GR_ENGINE_ACTIVE where the GPU has it, else GPU_UTIL / 100.
    samples["util"] = samples["DCGM_FI_PROF_GR_ENGINE_ACTIVE"].fillna(
        samples["DCGM_FI_DEV_GPU_UTIL"] / 100
    )
    used = samples["DCGM_FI_DEV_FB_USED"]
    samples["fb_ratio"] = used / (
        used + samples["DCGM_FI_DEV_FB_FREE"] + samples["DCGM_FI_DEV_FB_RESERVED"].fillna(0)
    )
    # Samples in (h, h + 1h] belong to the hour that starts at h, as in gpuwatch.
    samples["hour"] = (samples["timestamp"] - pd.Timedelta(seconds=1)).dt.floor("h")
    groups = samples.groupby(["UUID", "hour"], observed=True)
    hourly = groups.agg(
        util_mean=("util", "mean"),
        fb_used_max=("DCGM_FI_DEV_FB_USED", "max"),
        fb_ratio_max=("fb_ratio", "max"),
        power_mean=("DCGM_FI_DEV_POWER_USAGE", "mean"),
        samples=("util", "count"),
    )
    hourly["util_p95"] = groups["util"].quantile(0.95)
    hourly = hourly.reset_index()
    # The pod the exporter named most often in each GPU-hour.
    held = (
        samples.dropna(subset=["pod"])
        .groupby(["UUID", "hour", "namespace", "pod"], observed=True)
        .size()
        .reset_index(name="n")
        .sort_values("n", ascending=False)
        .drop_duplicates(["UUID", "hour"])
    )
    hourly = hourly.merge(
        held[["UUID", "hour", "namespace", "pod"]], on=["UUID", "hour"], how="left"
    )
    # Each GPU's node, pool and price: from the labels and the cluster, once per GPU.
    labels = samples.drop_duplicates("UUID", keep="last")
    del samples, groups
    cluster = simulated(gpus, days, step_s)
    state = cluster.state()
    devices = [
        GpuDevice(
            uuid=str(r.UUID), index=int(r.gpu), node=str(r.Hostname), model_name=str(r.modelName)
        )
        for r in labels.itertuples()
    ]
    contexts = attribute(devices, state, Settings().attribution, END, 0).contexts[: len(devices)]
    book = load_price_book()
    per_gpu = pd.DataFrame(
        {
            "UUID": [d.uuid for d in devices],
            "node": [d.node for d in devices],
            "pool": [c.pool for c in contexts],
            "model": [c.model for c in contexts],
            "capacity_type": [c.capacity_type for c in contexts],
        }
    )

    def price(row: pd.Series) -> float:
        found, _ = book.price(row["model"], row["capacity_type"], row["pool"])
        return float(found.per_gpu_hour) if found is not None else np.nan

    per_gpu["price"] = per_gpu.apply(price, axis=1)
    hourly = hourly.merge(per_gpu, on="UUID", how="left")
    teams = {ns.name: ns.labels.get("team", ns.name) for ns in state.namespaces}
    hourly["team"] = hourly["namespace"].map(teams)
    coverage = (hourly["samples"] * step_s / 3600).clip(upper=1)
    hourly["cost"] = hourly["price"]
    hourly["idle_cost"] = hourly["cost"] * coverage * (1 - hourly["util_mean"].clip(0, 1))
    hourly["energy_kwh"] = hourly["power_mean"] * coverage / 1000
    by_team = hourly.groupby("team", dropna=False)[["cost", "idle_cost"]].sum()
    by_pool = hourly.groupby("pool", dropna=False)[["cost", "idle_cost"]].sum()
    heatmap = hourly.pivot_table(index="UUID", columns="hour", values="util_mean")
    out.mkdir(parents=True, exist_ok=True)
    hourly.to_parquet(out / "gpu_hourly.parquet")
    return {
        "wall_s": time.perf_counter() - started,
        "cpu_s": cpu_s() - cpu_started,
        "peak_rss_mib": peak_rss_mib(),
        "rows": len(hourly),
        "cost": float(hourly["cost"].sum()),
        "teams": len(by_team),
        "pools": len(by_pool),
        "heatmap_cells": int(heatmap.size),
    }


DUCKDB_HOURLY = """
SELECT "UUID", time_bucket(INTERVAL 1 hour, "timestamp" - INTERVAL 1 second) AS hour,
  avg(util) AS util_mean, quantile_cont(util, 0.95) AS util_p95,
  max("DCGM_FI_DEV_FB_USED") AS fb_used_max,
  max("DCGM_FI_DEV_FB_USED" / ("DCGM_FI_DEV_FB_USED" + "DCGM_FI_DEV_FB_FREE"
      + coalesce("DCGM_FI_DEV_FB_RESERVED", 0))) AS fb_ratio_max,
  avg("DCGM_FI_DEV_POWER_USAGE") AS power_mean, count(util) AS samples, mode(pod) AS pod
FROM (
  SELECT *, coalesce("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_DEV_GPU_UTIL" / 100) AS util
  FROM read_parquet($path)
  WHERE "timestamp" > $start AND "timestamp" <= $end
)
GROUP BY ALL
"""
"""Samples in (h, h + 1h] belong to the hour that starts at h, as in gpuwatch."""


def run_duckdb(gpus: int, days: float, step_s: int, path: Path, out: Path) -> dict:
    import duckdb
    import pyarrow.parquet as pq

    started, cpu_started = time.perf_counter(), cpu_s()
    connection = duckdb.connect()
    hourly = connection.execute(
        DUCKDB_HOURLY,
        {"path": str(path), "start": END - timedelta(days=days), "end": END},
    ).to_arrow_table()
    took = {"wall_s": time.perf_counter() - started, "cpu_s": cpu_s() - cpu_started}
    out.mkdir(parents=True, exist_ok=True)  # for the comparison, after the timing
    pq.write_table(hourly, out / "gpu_hourly.parquet")
    return took | {
        "peak_rss_mib": peak_rss_mib(),
        "rows": hourly.num_rows,
        "threads": connection.execute("SELECT current_setting('threads')").fetchone()[0],
    }


def child(
    side: str, args: argparse.Namespace, path: Path, out: Path, pool: str | None = None
) -> dict:
    """One side in its own process; ``pool``: Arrow's allocator there, set as a user
    would, by ``ARROW_DEFAULT_MEMORY_POOL`` (None: the process' default)."""
    env = {k: v for k, v in os.environ.items() if k != POOL_ENV}
    if pool:
        env[POOL_ENV] = pool
    command = [
        sys.executable,
        __file__,
        "--side",
        side,
        "--gpus",
        str(args.gpus),
        "--days",
        str(args.days),
        "--step",
        str(args.step),
        "--samples",
        str(path),
        "--out",
        str(out),
    ]
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=3600, check=False, env=env
    )
    if run.returncode != 0:
        raise SystemExit(f"{side} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def compare(ours: Path, theirs: Path, compared: tuple[str, ...] = COMPARED) -> dict[str, float]:
    """The largest difference per compared column between the two ``gpu_hourly``
    tables as each side wrote them, joined on GPU and hour (NaN on one side only counts
    as a difference)."""
    import numpy as np
    import pandas as pd

    names = {
        "UUID": "gpu_uuid",
        "util_mean": "util_mean_ratio",
        "util_p95": "util_p95_ratio",
        "fb_used_max": "fb_used_max_mib",
        "power_mean": "power_mean_w",
        "cost": "cost",
    }
    (part,) = ours.glob("table=gpu_hourly/**/*.parquet")
    a = pd.read_parquet(part, columns=["gpu_uuid", "hour", *compared, "coverage_ratio"])
    b = pd.read_parquet(
        theirs / "gpu_hourly.parquet",
        columns=["hour", *(k for k, v in names.items() if v in ("gpu_uuid", *compared))],
    ).rename(columns=names)
    a["hour"] = pd.to_datetime(a["hour"], utc=True)
    b["hour"] = pd.to_datetime(b["hour"], utc=True)
    a = a[a["coverage_ratio"] > 0]  # gpuwatch lists hours without samples too
    joined = a.merge(b, on=["gpu_uuid", "hour"], how="outer", suffixes=("_a", "_b"), indicator=True)
    result = {"unmatched_rows": float((joined["_merge"] != "both").sum())}
    for column in compared:
        x = joined[f"{column}_a"].astype(float).to_numpy()
        y = joined[f"{column}_b"].astype(float).to_numpy()
        one_side = np.isnan(x) != np.isnan(y)
        diff = np.nan_to_num(np.abs(x - y), nan=0.0)
        result[column] = float(np.inf if one_side.any() else diff.max(initial=0.0))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=1024)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--step", type=int, default=300, help="Seconds between samples.")
    parser.add_argument("--no-baseline", action="store_true", help="Measure gpuwatch only.")
    parser.add_argument(
        "--duckdb", action="store_true", help="Also time DuckDB's hourly aggregates alone."
    )
    parser.add_argument(
        "--side", choices=("gpuwatch", "baseline", "duckdb"), help=argparse.SUPPRESS
    )
    parser.add_argument("--samples", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run = {"gpuwatch": run_gpuwatch, "baseline": run_baseline, "duckdb": run_duckdb}[args.side]
        print(json.dumps(run(args.gpus, args.days, args.step, args.samples, args.out)))
        return

    prepared = time.perf_counter()
    path = samples_file(args.gpus, args.days, args.step)
    print(
        f"{args.gpus} GPUs x {args.days:g} days, samples every {args.step} s: raw samples in "
        f"{path.name} ({path.stat().st_size / 2**20:.0f} MiB, ready in "
        f"{time.perf_counter() - prepared:.1f} s, not timed)"
    )
    with tempfile.TemporaryDirectory(prefix="gpuwatch-bench-report-") as tmp:
        ours = child("gpuwatch", args, path, Path(tmp) / "gpuwatch")
        gpu_hours = ours["rows"]
        print(
            f"gpuwatch  {ours['wall_s']:7.1f} s  (CPU {ours['cpu_s']:5.1f} s)  "
            f"{ours['peak_rss_mib']:7.0f} MiB  "
            f"{gpu_hours / ours['wall_s']:9.0f} GPU-hours/s  (stages {ours['stages_s']})"
        )
        result = {
            "bench": "report",
            "gpus": args.gpus,
            "days": args.days,
            "wall_s": round(ours["wall_s"], 2),
            "cpu_s": round(ours["cpu_s"], 2),
            "peak_rss_mib": round(ours["peak_rss_mib"]),
            "findings": ours["findings"],
            "baseline_s": None,
            "speedup": None,
        }
        if not args.no_baseline:
            theirs = child("baseline", args, path, Path(tmp) / "baseline")
            print(
                f"pandas    {theirs['wall_s']:7.1f} s  (CPU {theirs['cpu_s']:5.1f} s)  "
                f"{theirs['peak_rss_mib']:7.0f} MiB  "
                f"{theirs['rows'] / theirs['wall_s']:9.0f} GPU-hours/s"
            )
            # The same pandas with the allocator gpuwatch chooses: how much of the ratio
            # is that choice, which a pandas user could make too.
            same = child("baseline", args, path, Path(tmp) / "baseline-system", "system")
            print(
                f"pandas, system allocator  {same['wall_s']:7.1f} s  "
                f"(CPU {same['cpu_s']:5.1f} s)  {same['peak_rss_mib']:7.0f} MiB"
            )
            differences = compare(Path(tmp) / "gpuwatch", Path(tmp) / "baseline")
            print(f"largest difference per column (same GPU and hour): {differences}")
            result.update(
                baseline_s=round(theirs["wall_s"], 2),
                baseline_peak_rss_mib=round(theirs["peak_rss_mib"]),
                speedup=round(theirs["wall_s"] / ours["wall_s"], 2),
                cpu_speedup=round(theirs["cpu_s"] / ours["cpu_s"], 2),
                memory_ratio=round(ours["peak_rss_mib"] / theirs["peak_rss_mib"], 3),
                baseline_system_allocator_s=round(same["wall_s"], 2),
                speedup_same_allocator=round(same["wall_s"] / ours["wall_s"], 2),
                cpu_speedup_same_allocator=round(same["cpu_s"] / ours["cpu_s"], 2),
                max_difference=max(differences.values()),
            )
        if args.duckdb:
            engine = child("duckdb", args, path, Path(tmp) / "duckdb")
            print(
                f"duckdb, hourly aggregates alone ({engine['threads']} threads)  "
                f"{engine['wall_s']:7.1f} s  (CPU {engine['cpu_s']:5.1f} s)  "
                f"{engine['peak_rss_mib']:7.0f} MiB  {engine['rows']:,} GPU-hours"
            )
            agreed = compare(Path(tmp) / "gpuwatch", Path(tmp) / "duckdb", COMPARED[:-1])
            print(f"largest difference per column, gpuwatch and DuckDB: {agreed}")
            result.update(
                duckdb_hourly_s=round(engine["wall_s"], 2),
                duckdb_hourly_cpu_s=round(engine["cpu_s"], 2),
                duckdb_hourly_peak_rss_mib=round(engine["peak_rss_mib"]),
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
