"""Benchmark: collecting a week of GPU history from a real Prometheus.

The analysis: for every GPU and every hour of a week, the mean utilization and the
highest framebuffer used ratio (what the weekly report's per-GPU-hour table holds).
Three ways, side by side against one Prometheus holding the same data:

(a) baseline: what a user writes with prometheus-api-client: ``custom_query_range`` of
    the raw DCGM metrics at scrape resolution, ``MetricRangeDataFrame``, then a pandas
    aggregation to the same result;
(b) gpuwatch: ``PrometheusMetricsSource.history`` (aggregation on the server, answers
    parsed straight into numpy arrays);
(c) floor: downloading and ``json.loads``-ing exactly the answers gpuwatch asks for,
    with the same concurrency (4 requests in flight).

Each runs in its own process so that peak RSS is its own. The TSDB is built once with
``--gpus/--days`` and cached under ``.bench-cache/``. Run:

    .venv/bin/python bench/collect.py            # 64 GPUs x 7 days at 60 s

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
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpuwatch.config.settings import PrometheusSettings, SimulatorSettings
from gpuwatch.model.metrics import Aggregate, AggregateSpec, HistoryRequest, Signal
from gpuwatch.sources.prometheus import PrometheusClient, PrometheusMetricsSource
from gpuwatch.sources.prometheus.client import Connection
from gpuwatch.sources.simulator import SimulatedCluster
from gpuwatch.sources.simulator.exposition import write_openmetrics
from gpuwatch.sources.simulator.layout import SHOWCASE_AT

END = SHOWCASE_AT.replace(hour=0)  # a whole number of days, ending at midnight
FAMILIES = (
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_RESERVED",
)
UTIL = AggregateSpec(Signal.UTIL_RATIO, Aggregate.AVG, 3600)
MEMORY = AggregateSpec(Signal.FB_USED_RATIO, Aggregate.MAX, 3600)


def build_tsdb(gpus: int, days: float, step_s: int) -> Path:
    from tests.integration.prometheus_server import backfill

    cache = REPO / ".bench-cache" / f"collect-{gpus}gpus-{days:g}d-{step_s}s"
    if (cache / "complete").exists():
        return cache / "data"
    cache.mkdir(parents=True, exist_ok=True)
    cluster = SimulatedCluster(SimulatorSettings(gpus=gpus, days=days, step_s=step_s), END)
    # promtool reads its whole input once per 2-hour block it writes, so a week in one
    # file costs quadratic time: backfill one day per file instead.
    exported = 0
    export_s = backfill_s = 0.0
    start = cluster.history_start
    while start < END:
        stop = min(start + timedelta(days=1), END)
        openmetrics = cache / f"day-{int(start.timestamp())}.om"
        began = time.perf_counter()
        with openmetrics.open("w") as handle:
            exported += write_openmetrics(
                handle, [cluster.samples(start, stop)], cluster.layout.gpus, families=FAMILIES
            )
        export_s += time.perf_counter() - began
        began = time.perf_counter()
        backfill(openmetrics, cache / "data")
        backfill_s += time.perf_counter() - began
        openmetrics.unlink()
        start = stop
    print(f"exported {exported:,} samples in {export_s:.0f} s, backfilled in {backfill_s:.0f} s")
    (cache / "complete").write_text("ok\n")
    return cache / "data"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_baseline(url: str, start: datetime, end: datetime, scrape_s: int) -> dict:
    import pandas as pd
    from prometheus_api_client import MetricRangeDataFrame, PrometheusConnect

    prom = PrometheusConnect(url=url)
    received = {"bytes": 0}
    prom._session.hooks["response"].append(
        lambda r, *a, **k: received.__setitem__("bytes", received["bytes"] + len(r.content))
    )
    began = time.perf_counter()
    frames, samples = {}, 0
    for family in FAMILIES:
        data = prom.custom_query_range(family, start, end, step=f"{scrape_s}s")
        samples += sum(len(series["values"]) for series in data)
        if data:
            frame = MetricRangeDataFrame(data)
            frames[family] = frame.reset_index().pivot_table(
                index="timestamp", columns="UUID", values="value", aggfunc="max"
            )
    util = frames["DCGM_FI_DEV_GPU_UTIL"] / 100.0
    active = frames["DCGM_FI_PROF_GR_ENGINE_ACTIVE"].reindex_like(util)
    util = active.where(active.notna(), util)  # GR_ENGINE_ACTIVE where the GPU has it
    used, free = frames["DCGM_FI_DEV_FB_USED"], frames["DCGM_FI_DEV_FB_FREE"]
    reserved = frames["DCGM_FI_DEV_FB_RESERVED"].reindex_like(used).fillna(0.0)
    ratio = used / (used + free + reserved)

    # Hour t covers (t - 1h, t]: label each sample with the end of its hour.
    def hourly(frame: pd.DataFrame, how: str) -> pd.DataFrame:
        hours = frame.index.ceil("h")
        return getattr(frame.groupby(hours), how)()

    result = {"util": hourly(util, "mean"), "memory": hourly(ratio, "max")}
    elapsed = time.perf_counter() - began
    return {
        "wall_s": elapsed,
        "peak_rss_mb": peak_rss_mb(),
        "bytes": received["bytes"],
        "samples": samples,
        "values": {
            name: {str(col): frame[col].tolist() for col in frame.columns}
            for name, frame in result.items()
        },
        "hours": [int(t.timestamp()) for t in result["util"].index],
    }


def run_gpuwatch(url: str, start: datetime, end: datetime, scrape_s: int, record: str) -> dict:
    settings = PrometheusSettings(url=url, scrape_interval_s=scrape_s)
    client = PrometheusClient(Connection.from_settings(settings, {}))
    client.recorded = []
    source = PrometheusMetricsSource(client, settings)
    began = time.perf_counter()
    frame = source.history(HistoryRequest(start, end, 3600, frozenset({UTIL, MEMORY})))
    elapsed = time.perf_counter() - began
    Path(record).write_text(json.dumps(client.recorded))
    return {
        "wall_s": elapsed,
        "peak_rss_mb": peak_rss_mb(),
        "bytes": client.bytes_received,
        "samples": client.samples_received,
        "requests": client.requests_made,
        "values": {
            "util": {d.uuid: frame.values[UTIL][i].tolist() for i, d in enumerate(frame.devices)},
            "memory": {
                d.uuid: frame.values[MEMORY][i].tolist() for i, d in enumerate(frame.devices)
            },
        },
        "hours": frame.times_s.tolist(),
    }


def run_floor(url: str, record: str, concurrency: int = 4) -> dict:
    """The same requests, with the same concurrency as gpuwatch, and nothing else."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    requests_made = json.loads(Path(record).read_text())
    session = requests.Session()

    def fetch(request: list) -> tuple[int, int]:
        path, params = request
        answer = session.get(url + path, params=params, timeout=300)
        samples = sum(
            len(series.get("values", [series.get("value")]))
            for series in json.loads(answer.content)["data"]["result"]
        )
        return len(answer.content), samples

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(fetch, requests_made))
    return {
        "wall_s": time.perf_counter() - began,
        "peak_rss_mb": peak_rss_mb(),
        "bytes": sum(r[0] for r in results),
        "samples": sum(r[1] for r in results),
    }


def child(mode: str, url: str, scrape_s: int, record: str, days: float) -> dict:
    command = [
        sys.executable, __file__, "--mode", mode, "--url", url, "--step", str(scrape_s),
        "--record", record, "--days", str(days),
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, check=True, timeout=3600)
    return json.loads(run.stdout.splitlines()[-1])


def compare(baseline: dict, gpuwatch: dict, cluster: SimulatedCluster) -> tuple[float, int, int]:
    """(largest difference where the hour has every sample, GPU-hours that differ, of
    which inside exporter gaps). In a gap the baseline's query_range repeats the last
    sample for up to 5 minutes (the lookback delta); gpuwatch averages only real samples."""
    worst, differing, in_gaps = 0.0, 0, 0
    hours_b = {t: i for i, t in enumerate(baseline["hours"])}
    gaps = {}
    for d, gpu in zip(cluster.devices, cluster.layout.gpus, strict=True):
        gaps[d.uuid] = gpu.gaps
    for name in ("util", "memory"):
        for uuid, series in gpuwatch["values"][name].items():
            theirs = baseline["values"][name].get(uuid)
            assert theirs is not None, f"baseline lacks {uuid}"
            for i, t in enumerate(gpuwatch["hours"]):
                a, b = series[i], theirs[hours_b[t]] if t in hours_b else None
                if b is None or a is None or np.isnan(a) or np.isnan(b):
                    continue
                if abs(a - b) <= 1e-9:
                    continue
                differing += 1
                hour_start = (t - 3600) % 86400
                if any(start < hour_start + 3600 and start + length + 300 > hour_start
                       for start, length in gaps[uuid]):  # fmt: skip
                    in_gaps += 1
                else:
                    worst = max(worst, abs(a - b))
    return worst, differing, in_gaps


def main() -> None:
    parser = argparse.ArgumentParser(description="collect-history benchmark")
    parser.add_argument("--gpus", type=int, default=64)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--step", type=int, default=60, help="scrape interval of the data")
    parser.add_argument("--mode", choices=["all", "baseline", "gpuwatch", "floor"], default="all")
    parser.add_argument("--url")
    parser.add_argument("--record")
    args = parser.parse_args()
    start = END - timedelta(days=args.days)

    if args.mode != "all":
        if args.mode == "baseline":
            out = run_baseline(args.url, start, END, args.step)
        elif args.mode == "gpuwatch":
            out = run_gpuwatch(args.url, start, END, args.step, args.record)
        else:
            out = run_floor(args.url, args.record)
        print(json.dumps(out))
        return

    from tests.integration.prometheus_server import PrometheusServer

    data = build_tsdb(args.gpus, args.days, args.step)
    server = PrometheusServer(data).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            record = str(Path(tmp) / "requests.json")
            gpuwatch = child("gpuwatch", server.url, args.step, record, args.days)
            floor = child("floor", server.url, args.step, record, args.days)
            baseline = child("baseline", server.url, args.step, record, args.days)
    finally:
        server.stop()
    cluster = SimulatedCluster(SimulatorSettings(gpus=args.gpus, days=args.days), END)
    difference, differing, in_gaps = compare(baseline, gpuwatch, cluster)
    print(f"{'':10} {'wall s':>9} {'peak RSS MB':>12} {'bytes':>14} {'samples':>12}")
    for name, run in (("baseline", baseline), ("gpuwatch", gpuwatch), ("floor", floor)):
        print(
            f"{name:10} {run['wall_s']:9.2f} {run['peak_rss_mb']:12.0f} "
            f"{run['bytes']:14,} {run['samples']:12,}"
        )
    print(
        f"results: {differing} GPU-hour values differ, {in_gaps} of them in hours with an "
        f"exporter gap (the baseline repeats stale samples there); elsewhere the largest "
        f"difference is {difference:.1e}"
    )
    print(
        json.dumps(
            {
                "bench": "collect",
                "gpus": args.gpus,
                "days": args.days,
                "baseline_s": round(baseline["wall_s"], 3),
                "gpuwatch_s": round(gpuwatch["wall_s"], 3),
                "floor_s": round(floor["wall_s"], 3),
                "speedup": round(baseline["wall_s"] / gpuwatch["wall_s"], 1),
                "samples_ratio": round(baseline["samples"] / gpuwatch["samples"], 1),
                "floor_ratio": round(gpuwatch["wall_s"] / floor["wall_s"], 2),
                "baseline_rss_mb": round(baseline["peak_rss_mb"]),
                "gpuwatch_rss_mb": round(gpuwatch["peak_rss_mb"]),
                "max_difference": difference,
                "differing_gpu_hours": differing,
                "differing_in_gaps": in_gaps,
            }
        )
    )


if __name__ == "__main__":
    main()
