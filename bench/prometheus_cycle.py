"""Benchmark: one cycle against a real Prometheus, and how it grows with the fleet.

For each fleet size (500, 1,000 and 2,000 simulated GPUs by default) a TSDB is built
with ``promtool tsdb create-blocks-from openmetrics`` from the simulator's history (one
day, a sample every 300 s, cached under ``.bench-cache/``: promtool backfills about ten
thousand samples a second here, so a week of thousands of GPUs would take hours) and
compacted by a Prometheus before anything is timed (``compact``), then a
real Prometheus (Debian's package) serves it on loopback, and one whole cycle runs in
its own process: ``PrometheusMetricsSource`` for the metrics, the simulated cluster for
the objects, the savings looking back over the day. Reported per size: the cycle's wall
time, the requests it sent, the samples Prometheus answered with, the bytes, and the
cycle process' peak RSS (the fastest of five cycles per size, the sizes taking turns);
then the growth of each from the smallest fleet to the largest against the growth of
the fleet (1.0 = linear; the cycle must grow no worse). The CPU seconds of the server
and of the cycle are given beside the wall time: on a shared machine they move far less
than it. Run:

    .venv/bin/python bench/prometheus_cycle.py [--sizes 500,1000,2000]

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peak_memory import peak_rss_mib
from gpuwatch.config.settings import PrometheusSettings, Settings, SimulatorSettings
from gpuwatch.sources.simulator import SimulatedCluster
from gpuwatch.sources.simulator.exposition import write_openmetrics
from gpuwatch.sources.simulator.layout import SHOWCASE_AT

AT = SHOWCASE_AT
DAYS = 1.0
STEP_S = 300
METRICS = (
    "count",
    "wall_s",
    "server_cpu_s",
    "cycle_cpu_s",
    "requests",
    "samples",
    "bytes",
    "peak_rss_mib",
)


def simulated(gpus: int) -> SimulatedCluster:
    return SimulatedCluster(SimulatorSettings(gpus=gpus, days=DAYS, step_s=STEP_S), end=AT)


def build_tsdb(gpus: int) -> Path:
    from tests.integration.prometheus_server import backfill

    cache = REPO / ".bench-cache" / f"prometheus-cycle-{gpus}gpus-{DAYS:g}d-{STEP_S}s"
    if (cache / "compacted").exists():
        return cache / "data"
    # A TSDB of an earlier bench, which servers may have compacted in part, is built
    # again: every size must start from promtool's blocks.
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    cluster = simulated(gpus)
    began = time.perf_counter()
    openmetrics = cache / "history.om"
    with openmetrics.open("w") as handle:
        exported = write_openmetrics(
            handle, [cluster.samples(cluster.history_start, AT)], cluster.layout.gpus
        )
    backfill(openmetrics, cache / "data")
    openmetrics.unlink()
    print(f"{gpus} GPUs: {exported:,} samples backfilled in {time.perf_counter() - began:.0f} s")
    compact(cache / "data", gpus)
    (cache / "compacted").write_text("ok\n")
    return cache / "data"


def compact(data: Path, gpus: int) -> None:
    """Let Prometheus compact the backfilled two-hour blocks, as it compacts the history
    of a server that has run for a while, before anything is timed.

    promtool writes a block per two hours; a server compacts them into longer ones a
    minute after it starts, and a query then looks series up in fewer indexes. Left to
    the measured runs, the sizes were compared in different states (the smallest had
    been compacted by earlier runs, the largest not: 10 blocks against 13) and a
    compaction could run during a measured cycle, its CPU counted as the cycle's."""
    from tests.integration.prometheus_server import PrometheusServer

    server = PrometheusServer(data).start()
    began = time.monotonic()
    try:
        counts: list[float] = []
        # The compaction loop first runs a minute after the start; then the count of
        # blocks must hold still for 15 s (a compaction in progress changes it).
        while time.monotonic() - began < 600:
            counts.append(_metric(server.url, "prometheus_tsdb_blocks_loaded"))
            if time.monotonic() - began > 75 and len(set(counts[-8:])) == 1:
                break
            time.sleep(2)
        else:  # not marked compacted: the next run tries again
            raise SystemExit(f"{gpus} GPUs: the TSDB's blocks still changed after 600 s")
    finally:
        server.stop()
    took = time.monotonic() - began
    print(f"{gpus} GPUs: TSDB compacted to {counts[-1]:.0f} blocks in {took:.0f} s")


def _metric(url: str, name: str) -> float:
    """A gauge of the server's own ``/metrics``."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise RuntimeError(f"{name} not in {url}/metrics")


def run_cycle_side(gpus: int, url: str, concurrency: int) -> dict:
    from gpuwatch.analysis.pricing import load_price_book
    from gpuwatch.analysis.rules.loader import load_rules
    from gpuwatch.notify.console import RecordingNotifier
    from gpuwatch.pipeline import Components, run_cycle
    from gpuwatch.sources.prometheus import PrometheusClient, PrometheusMetricsSource
    from gpuwatch.sources.prometheus.client import Connection
    from gpuwatch.sources.simulator import SimulatorClusterSource
    from gpuwatch.state.base import MemoryState

    prometheus = PrometheusSettings(url=url, scrape_interval_s=STEP_S, max_concurrency=concurrency)
    client = PrometheusClient(Connection.from_settings(prometheus, {}))
    settings = Settings.model_validate({"savings": {"lookback": f"{int(DAYS * 24)}h"}})
    components = Components(
        metrics=PrometheusMetricsSource(client, prometheus),
        cluster=SimulatorClusterSource(simulated(gpus)),
        rules=tuple(load_rules()),
        state=MemoryState(),
        notifier=RecordingNotifier(),
        price_book=load_price_book(),
    )
    began = time.perf_counter()
    cpu = _own_cpu_s()
    result = run_cycle(components, settings, AT)
    return {
        "wall_s": time.perf_counter() - began,
        "cycle_cpu_s": _own_cpu_s() - cpu,
        "requests": client.requests_made,
        "samples": client.samples_received,
        "bytes": client.bytes_received,
        "peak_rss_mib": peak_rss_mib(),
        "count": result.source.gpus_in_metrics,
        "findings": len(result.findings),
        "errors": list(result.errors),
    }


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu_s(pid: int) -> float:
    """User and system CPU seconds a process has used (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(sizes: list[int], repeat: int, concurrency: int) -> dict[int, dict]:
    """Per fleet size, the fastest of ``repeat`` cycles, each in a fresh process against
    that size's server. The sizes take turns (one cycle of each, ``repeat`` times), all
    servers up: a slower minute on the shared machine then slows every size alike
    instead of the one measured in it."""
    from tests.integration.prometheus_server import PrometheusServer

    servers = {gpus: PrometheusServer(build_tsdb(gpus)) for gpus in sizes}
    runs: dict[int, list[dict]] = {gpus: [] for gpus in sizes}
    try:
        for server in servers.values():
            server.start()
        for _ in range(repeat):
            for gpus, server in servers.items():
                runs[gpus].append(one_cycle(gpus, server, concurrency))
    finally:
        for server in servers.values():
            server.stop()
    return {gpus: _summary(found) for gpus, found in runs.items()}


def one_cycle(gpus: int, server: Any, concurrency: int) -> dict:
    """One cycle in its own process, with the CPU seconds the server spent meanwhile."""
    command = [sys.executable, __file__, "--side", str(gpus), "--url", server.url]
    command += ["--max-concurrency", str(concurrency)]
    assert server.process is not None
    server_cpu = _process_cpu_s(server.process.pid)
    run = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if run.returncode != 0:
        raise SystemExit(f"{gpus} GPUs failed:\n{run.stderr[-3000:]}")
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    answer["server_cpu_s"] = _process_cpu_s(server.process.pid) - server_cpu
    return dict(answer)


def _summary(runs: list[dict]) -> dict:
    fastest = min(runs, key=lambda r: r["wall_s"])
    # CPU seconds are the work done, which a busy machine delays but does not add to:
    # the least of each over the runs.
    least = {key: min(r[key] for r in runs) for key in ("server_cpu_s", "cycle_cpu_s")}
    return {**fastest, **least, "all_wall_s": [round(r["wall_s"], 2) for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="500,1000,2000", help="Fleet sizes, in GPUs.")
    parser.add_argument("--repeat", type=int, default=5, help="Cycles per size (fastest kept).")
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=PrometheusSettings().max_concurrency,
        help="Requests the cycle keeps in flight (prometheus.max_concurrency; its default).",
    )
    parser.add_argument("--side", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_cycle_side(args.side, args.url, args.max_concurrency)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    runs = measure(sizes, args.repeat, args.max_concurrency)
    print(
        f"one cycle at {AT:%Y-%m-%dT%H:%MZ}, {DAYS:g} day of history every {STEP_S} s, "
        f"{args.max_concurrency} request(s) in flight"
    )
    print(
        f"{'GPUs':>6} {'wall s':>8} {'server CPU s':>12} {'cycle CPU s':>11} {'requests':>9} "
        f"{'samples':>11} {'bytes':>13} {'RSS MiB':>8}"
    )
    for run in runs.values():
        print(
            f"{run['count']:6} {run['wall_s']:8.2f} {run['server_cpu_s']:12.2f} "
            f"{run['cycle_cpu_s']:11.2f} {run['requests']:9} {run['samples']:11,} "
            f"{run['bytes']:13,} {run['peak_rss_mib']:8.0f}"
            + f"  (of {run['all_wall_s']})"
            + (f"  errors: {run['errors']}" if run["errors"] else "")
        )
    small, large = runs[sizes[0]], runs[sizes[-1]]
    fleet = large["count"] / small["count"]
    growth = {m: round(large[m] / small[m] / fleet, 2) for m in METRICS[1:] if small[m]}
    print(
        f"growth from {small['count']} to {large['count']} GPUs ({fleet:.1f}x), each over the "
        f"fleet's growth (<= 1.0: linear or better): {growth}"
    )
    print(
        json.dumps(
            {
                "bench": "prometheus_cycle",
                "max_concurrency": args.max_concurrency,
                "gpus": [runs[g]["count"] for g in sizes],
                "wall_s": [round(runs[g]["wall_s"], 2) for g in sizes],
                "server_cpu_s": [round(runs[g]["server_cpu_s"], 2) for g in sizes],
                "cycle_cpu_s": [round(runs[g]["cycle_cpu_s"], 2) for g in sizes],
                "requests": [runs[g]["requests"] for g in sizes],
                "samples": [runs[g]["samples"] for g in sizes],
                "peak_rss_mib": [round(runs[g]["peak_rss_mib"]) for g in sizes],
                "growth_over_linear": growth,
                # What the cycle must not grow faster than the fleet: its time, the work
                # of both processes, its requests, the samples it loads and its memory
                # (bytes also grow with the label values' length: node-999 is longer
                # than node-99).
                "linear_or_better": all(
                    growth[m] <= 1.0 for m in METRICS[1:] if m != "bytes" and m in growth
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
