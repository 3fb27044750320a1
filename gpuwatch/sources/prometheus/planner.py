"""Size requests so that none exceeds the server's limits.

Two limits matter. Prometheus refuses a range query with more than 11,000 points per
series, and one query may load at most ``--query.max-samples`` samples (50,000,000 by
default) into memory; gpuwatch keeps each request to a budget well below that. A range
is split by time until each chunk fits both limits; when even one step's worth of the
whole fleet is over budget, the fleet is split into GPU shards as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RangeChunk:
    start_s: int
    end_s: int
    """Inclusive: the chunk evaluates at start_s, start_s + step, ..., end_s."""


def points_in(start_s: int, end_s: int, step_s: int) -> int:
    """Evaluation points of a range query from ``start_s`` to ``end_s`` inclusive."""
    return (end_s - start_s) // step_s + 1


@dataclass(frozen=True)
class RangePlan:
    chunks: tuple[RangeChunk, ...]
    shard_count: int
    """GPU shards each chunk is asked in (a power of two)."""
    samples_per_request: float
    """The estimated samples one request loads (series x samples each)."""


def plan_range(
    start_s: int,
    end_s: int,
    step_s: int,
    *,
    series: int,
    scrape_interval_s: float,
    window_s: int,
    max_points: int = 11_000,
    sample_budget: int = 5_000_000,
) -> RangePlan:
    """Chunks of ``[start_s, end_s]`` at ``step_s``, and how many GPU shards each needs.

    Each evaluation point of ``f_over_time(m[window_s])`` loads ``window_s /
    scrape_interval_s`` samples per series; consecutive points share samples only when
    the window exceeds the step, so a chunk of P points loads about
    ``series * (window_s + (P - 1) * step_s) / scrape_interval_s`` samples.
    Every chunk starts on the step grid of ``start_s`` and chunks tile the range exactly.
    """
    if step_s <= 0 or end_s < start_s:
        raise ValueError(f"bad range: start={start_s} end={end_s} step={step_s}")
    samples_per_series_at = max(window_s / scrape_interval_s, 1.0)
    per_step = max(step_s / scrape_interval_s, 0.0) if step_s < window_s else samples_per_series_at
    # Points per chunk allowed by the sample budget for the whole fleet in one request.
    shard_count = 1
    while True:
        per_shard = math.ceil(max(series, 1) / shard_count)
        budget_points = 1 + (sample_budget / per_shard - samples_per_series_at) / max(
            per_step, 1e-9
        )
        if budget_points >= 1 or shard_count >= 4096:
            break
        shard_count *= 2
    points_per_chunk = max(1, min(max_points, math.floor(budget_points)))
    total_points = points_in(start_s, end_s, step_s)
    chunks = []
    index = 0
    while index < total_points:
        last = min(index + points_per_chunk, total_points) - 1
        chunks.append(RangeChunk(start_s + index * step_s, start_s + last * step_s))
        index = last + 1
    estimate = per_shard * (samples_per_series_at + (points_per_chunk - 1) * per_step)
    return RangePlan(tuple(chunks), shard_count, estimate)


def instant_shard_count(series: int, window_s: int, scrape_interval_s: float, budget: int) -> int:
    """GPU shards needed so that one instant ``f_over_time(m[window_s])`` fits the budget."""
    samples = max(series, 1) * max(window_s / scrape_interval_s, 1.0)
    count = 1
    while samples / count > budget and count < 4096:
        count *= 2
    return count
