"""How early, how accurately and how falsely the OOM forecast warns, beside predict_linear.

Each series is a GPU's per-minute framebuffer peak (``fb_used_ratio``) over several days.
At every minute both methods look at the last ``window`` of samples, as the shipped
``gpu-oom-forecast`` rule does, and warn when the memory, below the threshold now, is
predicted to reach it within the horizon:

- gpuwatch: the rule's own code (``analysis/forecast.py``): Theil–Sen since the last
  restart, no warning on too few samples or a poor fit;
- ``predict_linear``: PromQL's least-squares line through the whole window, what the
  exported alert (and most hand-written ones) use.

Series: the simulated ``detector-train`` ramp (the simulator's own samples: 55 % to 99 %
every 8 h, then OOM), and held-out shapes the forecast was not tuned on, generated here
from a seed: ``step`` (+6 % every 25-40 min to OOM), ``sawtooth`` (linear ramps of
1-2.5 h to OOM), ``plateau`` (rises to 90-93 % and stays: never OOMs), ``noise`` (88 %
with 1.2 % noise and 4 % spikes: never OOMs) and ``flat`` (60 %: never OOMs).

A crossing is a minute where the series first reaches the threshold. A crossing is
*caught* when a warning came in the hour before it; *lead* is how long before the
crossing the first such warning came; *ETA error* is predicted minus actual time to the
crossing over those warnings. A warning is *false* when no crossing follows within the
horizon plus 10 minutes; consecutive false minutes are one *false alarm* (one message).

It also times one cycle's reads and analysis on the simulator with the shipped rules and
without the forecast rule, side by side: what the forecast adds to a cycle.

    .venv/bin/python bench/forecast.py [--days 3 --seed 20 --cycle-gpus 1024]

The last line is one JSON object: ``{"bench": "forecast", ...}``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np

from gpuwatch.analysis.forecast import FitSettings, FitVerdict, fit_growth
from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.analysis.rules.schema import ForecastRule
from gpuwatch.config.settings import Settings, SimulatorSettings
from gpuwatch.model.metrics import Aggregate, AggregateSpec, HistoryRequest, Signal
from gpuwatch.pipeline import analyse, gather
from gpuwatch.sources.simulator import SimulatedCluster, SimulatorMetricsSource
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from tests.builders import simulated_components

MIN_S = 60
GRACE_S = 600
Method = Callable[[np.ndarray, np.ndarray], float | None]


def detector_train(days: int) -> np.ndarray:
    """The simulator's detector-train GPU 0, per-minute peaks over ``days``."""
    end = SHOWCASE_AT
    cluster = SimulatedCluster(SimulatorSettings(days=days), end=end)
    spec = AggregateSpec(Signal.FB_USED_RATIO, Aggregate.MAX, MIN_S)
    frame = SimulatorMetricsSource(cluster).history(
        HistoryRequest(end - timedelta(days=days), end, MIN_S, frozenset({spec}))
    )
    row = next(i for i, d in enumerate(frame.devices) if d.node == "train-a100-2" and d.index == 0)
    return frame.values[spec][row]


def held_out(shape: str, minutes: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty(minutes)
    i = 0
    while i < minutes:
        if shape == "step":
            every = int(rng.integers(25, 41))
            levels = np.arange(0.50 + rng.uniform(-0.03, 0.03), 1.0, 0.06)
            run = np.repeat(np.minimum(levels, 0.985), every)[: len(levels) * every]
            run = np.concatenate([run[run < 0.97], np.full(10, 0.985)])  # OOM 10 min on
        elif shape == "sawtooth":
            length = int(rng.integers(60, 151))
            run = np.linspace(0.45, 0.98, length)
        elif shape == "plateau":
            rise, stay = int(rng.integers(60, 91)), int(rng.integers(180, 361))
            top = rng.uniform(0.90, 0.93)
            run = np.concatenate([np.linspace(0.55, top, rise), np.full(stay, top)])
        elif shape == "noise":
            run = np.full(360, 0.88)
            spikes = rng.random(360) < 0.02
            run[spikes] += 0.04
        else:  # flat
            run = np.full(360, 0.60)
        take = min(run.size, minutes - i)
        out[i : i + take] = run[:take]
        i += take
    sigma = {"step": 0.002, "sawtooth": 0.003, "plateau": 0.004, "noise": 0.012}.get(shape, 0.002)
    return np.clip(out + sigma * rng.standard_normal(minutes), 0.0, 0.995)


def gpuwatch_method(rule: ForecastRule) -> Method:
    settings = FitSettings(
        min_samples=rule.min_samples,
        min_span_s=float(rule.min_span_s),
        min_fit_r2=rule.min_fit_r2,
        restart_drop=rule.restart_drop,
    )

    def eta(t: np.ndarray, v: np.ndarray) -> float | None:
        fit = fit_growth(t, v, rule.threshold, settings)
        return fit.eta_s if fit.verdict is FitVerdict.RISING else None

    return eta


def predict_linear_method(rule: ForecastRule) -> Method:
    def eta(t: np.ndarray, v: np.ndarray) -> float | None:
        keep = ~np.isnan(v)
        if keep.sum() < 2 or v[keep][-1] >= rule.threshold:
            return None
        slope, intercept = np.polyfit(t[keep] - t[-1], v[keep], 1)
        if slope <= 0:
            return None
        return max((rule.threshold - intercept) / slope, 0.0)

    return eta


def score(series: np.ndarray, method: Method, rule: ForecastRule) -> dict[str, Any]:
    t_all = np.arange(series.size, dtype=np.float64) * MIN_S
    n_window = rule.window_s // MIN_S
    above = series >= rule.threshold
    crossings = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    crossings = crossings[crossings >= n_window]
    warned_at: list[int] = []
    etas: dict[int, float] = {}
    started = time.perf_counter()
    fits = 0
    for j in range(n_window, series.size):
        if above[j]:
            continue
        eta = method(t_all[j - n_window + 1 : j + 1], series[j - n_window + 1 : j + 1])
        fits += 1
        if eta is not None and eta <= rule.horizon_s:
            warned_at.append(j)
            etas[j] = eta
    fit_us = (time.perf_counter() - started) / max(fits, 1) * 1e6
    warned = np.array(warned_at, dtype=np.int64)
    leads, errors = [], []
    for c in crossings:
        before = warned[(warned >= c - 60) & (warned < c)]
        if before.size:
            leads.append(float(c - before[0]))
            errors.extend(etas[int(j)] / MIN_S - float(c - j) for j in before)
    horizon_min = (rule.horizon_s + GRACE_S) // MIN_S
    false = [j for j in warned_at if not ((crossings > j) & (crossings <= j + horizon_min)).any()]
    episodes = sum(1 for k, j in enumerate(false) if k == 0 or j - false[k - 1] > 1)
    days = series.size / 1440
    return {
        "crossings": int(crossings.size),
        "caught": len(leads),
        "lead_min_median": round(float(np.median(leads)), 1) if leads else None,
        "eta_abs_error_min_median": round(float(np.median(np.abs(errors))), 1) if errors else None,
        "eta_error_min_median": round(float(np.median(errors)), 1) if errors else None,
        "warning_minutes": len(warned_at),
        "false_warning_minutes": len(false),
        "false_alarms_per_day": round(episodes / days, 2),
        "fit_us": round(fit_us, 1),
    }


def cycle_cost(gpus: int, repeats: int = 3) -> dict[str, float]:
    """Seconds of one cycle's reads and analysis on the simulator (``gpus`` GPUs) with the
    shipped rules, and without the forecast rule: what the forecast adds to a cycle."""
    cluster = SimulatedCluster(SimulatorSettings(gpus=gpus, days=1), end=SHOWCASE_AT)
    settings = Settings()
    rules = tuple(load_rules())
    timings: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(repeats):
        for label, chosen in (
            ("with", rules),
            ("without", tuple(r for r in rules if not isinstance(r, ForecastRule))),
        ):
            components = simulated_components(cluster, rules=chosen)
            started = time.perf_counter()
            gathered = gather(components, settings, SHOWCASE_AT, for_effects=False)
            analyse(gathered, chosen, components.price_book, settings)
            timings[label].append(time.perf_counter() - started)
    return {k: float(np.median(v)) for k, v in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument(
        "--cycle-gpus", type=int, default=1024, help="GPUs of the cycle-cost measurement"
    )
    args = parser.parse_args()
    rule = next(r for r in load_rules() if isinstance(r, ForecastRule))
    minutes = args.days * 1440
    rng = np.random.default_rng(args.seed)
    series = {"detector-train": detector_train(args.days)}
    for shape in ("step", "sawtooth", "plateau", "noise", "flat"):
        series[shape] = held_out(shape, minutes, rng)
    methods = {"gpuwatch": gpuwatch_method(rule), "predict_linear": predict_linear_method(rule)}
    results: dict[str, dict[str, Any]] = {}
    header = (
        f"{'series':<15} {'method':<15} {'caught':>9} {'lead min':>9} {'|ETA err|':>10} "
        f"{'ETA bias':>9} {'false/day':>10} {'fit us':>7}"
    )
    print(f"{rule.id}: {rule.threshold:.0%} within {rule.horizon_s // 60} min, {args.days} days")
    print(header)
    for name, values in series.items():
        for label, method in methods.items():
            r = score(values, method, rule)
            results[f"{name}/{label}"] = r
            print(
                f"{name:<15} {label:<15} {r['caught']:>4}/{r['crossings']:<4} "
                f"{r['lead_min_median']!s:>9} {r['eta_abs_error_min_median']!s:>10} "
                f"{r['eta_error_min_median']!s:>9} {r['false_alarms_per_day']:>10} "
                f"{r['fit_us']:>7}"
            )
    flat = ("plateau", "noise", "flat")
    ours = sum(results[f"{s}/gpuwatch"]["false_alarms_per_day"] for s in flat)
    theirs = sum(results[f"{s}/predict_linear"]["false_alarms_per_day"] for s in flat)
    ramps = ("detector-train", "step", "sawtooth")
    caught = {
        m: sum(results[f"{s}/{m}"]["caught"] for s in ramps) for m in ("gpuwatch", "predict_linear")
    }
    crossings = sum(results[f"{s}/gpuwatch"]["crossings"] for s in ramps)
    cost = np.median([results[f"{s}/gpuwatch"]["fit_us"] for s in series]) / np.median(
        [results[f"{s}/predict_linear"]["fit_us"] for s in series]
    )
    print(
        f"on series that never OOM: {ours:.2f} false alarms a day (gpuwatch) against "
        f"{theirs:.2f} (predict_linear); OOMs warned of: {caught['gpuwatch']}/{crossings} "
        f"against {caught['predict_linear']}/{crossings}; a fit costs {cost:.1f}x "
        "predict_linear's"
    )
    cycle = cycle_cost(args.cycle_gpus)
    print(
        f"a cycle on {args.cycle_gpus} simulated GPUs: {cycle['with']:.2f} s with the "
        f"forecast, {cycle['without']:.2f} s without ({cycle['with'] / cycle['without']:.2f}x)"
    )
    print(
        json.dumps(
            {
                "bench": "forecast",
                "rule": rule.id,
                "days": args.days,
                "seed": args.seed,
                "series": results,
                "false_alarms_per_day_never_oom": {
                    "gpuwatch": round(ours, 2),
                    "predict_linear": round(theirs, 2),
                },
                "ooms_caught": {**caught, "of": crossings},
                "ratio_fit_cost_gpuwatch_over_predict_linear": round(float(cost), 2),
                "cycle_gpus": args.cycle_gpus,
                "cycle_s_with_forecast": round(cycle["with"], 3),
                "cycle_s_without_forecast": round(cycle["without"], 3),
                "ratio_cycle_with_over_without": round(cycle["with"] / cycle["without"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
