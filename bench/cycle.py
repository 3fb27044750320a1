"""Benchmark: one cycle of a simulated fleet, its analysis apart from its source.

Three measurements, each in its own process so that peak RSS is its own:

(a) gather: the cycle's reads from the simulator (window statistics, the week of hourly
    history the savings look back over, the cluster): wall time, peak RSS, and how many
    sample times the simulator generated against the distinct ones among them (1.0: each
    sample generated once in the cycle);
(b) analysis: the gathered inputs loaded from a pickle (window statistics and cluster
    in hand), then ``analyse`` (attribution, rules, cost, savings, plans) -> result:
    wall time, peak RSS, and the RSS before it started;
(c) the whole cycle (``run_cycle``: gather, analyse, effects recorded) as ``gpuwatch
    once`` runs it, and optionally ``gpuwatch demo`` (the cycle and the simulated week's
    report) as a command, its peak RSS read from the kernel's accounting of children.

Targets at 10,000 GPUs: analysis within 3 s and 1 GiB; the demo within a 4 GiB pod. Run:

    .venv/bin/python bench/cycle.py --gpus 10000 [--demo]

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peak_memory import peak_rss_mib
from gpuwatch.config.settings import Settings, SimulatorSettings
from gpuwatch.sources.simulator import SimulatedCluster
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from gpuwatch.util.memory import use_system_allocator
from tests.builders import simulated_components

GIB = 1024.0


def rss_now_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def components(gpus: int, counter: list[np.ndarray] | None = None):
    """The simulated fleet and a cycle's parts over it; ``counter``: told the sample
    times of every generation."""
    cluster = SimulatedCluster(SimulatorSettings(gpus=gpus), end=SHOWCASE_AT)
    if counter is not None:
        generate = cluster.generator.generate

        def counted(times, history_start_s):
            counter.append(np.array(times, copy=True))
            return generate(times, history_start_s)

        cluster.generator.generate = counted  # type: ignore[method-assign]
    return cluster, simulated_components(cluster)


def run_gather(gpus: int, out: Path) -> dict:
    from gpuwatch.pipeline import gather

    generated: list[np.ndarray] = []
    _, parts = components(gpus, generated)
    settings = Settings()
    started = time.perf_counter()
    gathered = gather(parts, settings, SHOWCASE_AT)
    wall_s = time.perf_counter() - started
    times = np.concatenate(generated) if generated else np.empty(0, dtype=np.int64)
    with open(out, "wb") as handle:
        pickle.dump(gathered, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return {
        "wall_s": wall_s,
        "peak_rss_mib": peak_rss_mib(),
        "generated_per_distinct": round(times.size / max(np.unique(times).size, 1), 3),
        "generate_calls": len(generated),
    }


def run_analysis(gpus: int, path: Path) -> dict:
    from gpuwatch.pipeline import analyse

    _, parts = components(gpus)
    settings = Settings()
    with open(path, "rb") as handle:
        gathered = pickle.load(handle)
    before = rss_now_mib()
    started = time.perf_counter()
    analysis = analyse(gathered, parts.rules, parts.price_book, settings)
    return {
        "wall_s": time.perf_counter() - started,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_mib": before,
        "findings": len(analysis.findings),
        "savings": len(analysis.savings.savings),
    }


def run_cycle_side(gpus: int) -> dict:
    from gpuwatch.pipeline import run_cycle

    _, parts = components(gpus)
    started = time.perf_counter()
    result = run_cycle(parts, Settings(), SHOWCASE_AT)
    return {
        "wall_s": time.perf_counter() - started,
        "peak_rss_mib": peak_rss_mib(),
        "findings": len(result.findings),
    }


def child(*args: str) -> dict:
    command = [sys.executable, __file__, *args]
    run = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
    if run.returncode != 0:
        raise SystemExit(f"{args[:2]} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def demo(gpus: int) -> dict:
    """``gpuwatch demo --gpus N`` as a user runs it; its peak RSS from the kernel."""
    with tempfile.TemporaryDirectory(prefix="gpuwatch-bench-demo-") as tmp:
        started = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", "gpuwatch", "demo", "--gpus", str(gpus)],
            cwd=tmp,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        wall_s = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"demo failed:\n{run.stderr[-3000:]}")
    return {
        "wall_s": wall_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=10000)
    parser.add_argument("--demo", action="store_true", help="Also run `gpuwatch demo`.")
    parser.add_argument("--side", choices=("gather", "analysis", "cycle"), help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        use_system_allocator()  # Arrow's allocator, as the command line chooses it
    if args.side == "gather":
        print(json.dumps(run_gather(args.gpus, args.path)))
        return
    if args.side == "analysis":
        print(json.dumps(run_analysis(args.gpus, args.path)))
        return
    if args.side == "cycle":
        print(json.dumps(run_cycle_side(args.gpus)))
        return

    gpus = str(args.gpus)
    with tempfile.TemporaryDirectory(prefix="gpuwatch-bench-cycle-") as tmp:
        path = Path(tmp) / "gathered.pickle"
        gathered = child("--side", "gather", "--gpus", gpus, "--path", str(path))
        analysis = child("--side", "analysis", "--gpus", gpus, "--path", str(path))
    cycle = child("--side", "cycle", "--gpus", gpus)
    print(f"{args.gpus} GPUs, one cycle at {SHOWCASE_AT:%Y-%m-%dT%H:%MZ}")
    print(
        f"gather    {gathered['wall_s']:6.2f} s  {gathered['peak_rss_mib']:6.0f} MiB  "
        f"samples generated per distinct sample {gathered['generated_per_distinct']}"
    )
    print(
        f"analysis  {analysis['wall_s']:6.2f} s  {analysis['peak_rss_mib']:6.0f} MiB  "
        f"({analysis['rss_before_mib']:.0f} MiB before; target 3 s, {GIB:.0f} MiB)"
    )
    print(f"cycle     {cycle['wall_s']:6.2f} s  {cycle['peak_rss_mib']:6.0f} MiB")
    result = {
        "bench": "cycle",
        "gpus": args.gpus,
        "gather_s": round(gathered["wall_s"], 2),
        "gather_peak_rss_mib": round(gathered["peak_rss_mib"]),
        "generated_per_distinct": gathered["generated_per_distinct"],
        "analysis_s": round(analysis["wall_s"], 2),
        "analysis_peak_rss_mib": round(analysis["peak_rss_mib"]),
        "analysis_within_target": analysis["wall_s"] <= 3.0 and analysis["peak_rss_mib"] <= GIB,
        "cycle_s": round(cycle["wall_s"], 2),
        "cycle_peak_rss_mib": round(cycle["peak_rss_mib"]),
        "demo_s": None,
        "demo_peak_rss_mib": None,
    }
    if args.demo:
        shown = demo(args.gpus)
        print(f"demo      {shown['wall_s']:6.2f} s  {shown['peak_rss_mib']:6.0f} MiB  (4 GiB pod)")
        result.update(
            demo_s=round(shown["wall_s"], 1), demo_peak_rss_mib=round(shown["peak_rss_mib"])
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
