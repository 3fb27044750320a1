"""Benchmark: how fast the simulated cluster generates history and answers a cycle.

Measured side by side in one run (the machine is shared and noisy, so only ratios
within a run mean anything):

- history: a week of every signal for ``--gpus`` GPUs at ``--step`` seconds, generated
  vectorised over all GPUs (gpuwatch) against the same values generated GPU by GPU, the
  loop a user writing a generator would reach for first;
- cycle: one cycle's window aggregates at fleet scale (``--fleet`` GPUs).

Prints one JSON object as its last line. Run: ``.venv/bin/python bench/simulate.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta

import numpy as np

from gpuwatch.analysis.rules.evaluate import required_specs
from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.config.settings import SimulatorSettings
from gpuwatch.model.metrics import Signal, WindowRequest
from gpuwatch.sources.simulator import SimulatedCluster, SimulatorMetricsSource
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from gpuwatch.sources.simulator.signals import SignalGenerator


def _best_of(repeats: int, func) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=64)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--step", type=int, default=60)
    parser.add_argument("--fleet", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    settings = SimulatorSettings(gpus=args.gpus, days=args.days, step_s=args.step)
    cluster = SimulatedCluster(settings, end=SHOWCASE_AT)
    start_s = int((SHOWCASE_AT - timedelta(days=args.days)).timestamp())
    end_s = int(SHOWCASE_AT.timestamp())
    history_start_s = int(cluster.history_start.timestamp())
    times = cluster.generator.grid(start_s, end_s)

    def vectorised() -> None:
        cluster.generator.generate(times, history_start_s)

    singles = [
        SignalGenerator([gpu], settings.seed, settings.step_s) for gpu in cluster.layout.gpus
    ]

    def per_gpu() -> None:
        for generator in singles:
            generator.generate(times, history_start_s)

    vec_s = _best_of(args.repeats, vectorised)
    loop_s = _best_of(max(1, args.repeats - 2), per_gpu)
    samples = len(cluster.devices) * times.size
    print(f"history: {len(cluster.devices)} GPUs x {times.size} samples ({args.days:g} days)")
    print(f"  vectorised {vec_s:8.3f} s  ({samples / vec_s / 1e6:.1f} M samples/s per signal)")
    print(f"  per GPU    {loop_s:8.3f} s  ({loop_s / vec_s:.1f}x slower)")

    fleet = SimulatedCluster(SimulatorSettings(gpus=args.fleet, days=1), end=SHOWCASE_AT)
    source = SimulatorMetricsSource(fleet)
    request = WindowRequest(SHOWCASE_AT, required_specs(load_rules()))
    cycle_s = _best_of(args.repeats, lambda: source.window_stats(request))
    print(f"cycle: {len(fleet.devices)} GPUs, {len(request.specs)} aggregates in {cycle_s:.3f} s")

    # Both paths produce the same values (the loop is a fair alternative, not a strawman).
    np.testing.assert_allclose(
        singles[0].generate(times[:100], history_start_s)[Signal.UTIL_RATIO][0],
        cluster.generator.generate(times[:100], history_start_s)[Signal.UTIL_RATIO][0],
    )
    print(
        json.dumps(
            {
                "bench": "simulate",
                "gpus": len(cluster.devices),
                "days": args.days,
                "step_s": args.step,
                "history_s": round(vec_s, 4),
                "per_gpu_s": round(loop_s, 4),
                "speedup": round(loop_s / vec_s, 1),
                "fleet_gpus": len(fleet.devices),
                "fleet_cycle_s": round(cycle_s, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
