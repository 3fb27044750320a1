"""Benchmark: the cycle's costliest range queries, each alone, as the fleet grows.

``bench/prometheus_cycle.py`` finds a whole cycle's wall time growing a little faster
than the fleet, while everything gpuwatch does grows linearly or better. This bench
isolates the server's share: the history queries a cycle sends for its savings (the
hourly utilization, pod attachment and framebuffer aggregates, built by gpuwatch's own
``QueryBuilder`` as the cycle builds them), each timed alone over HTTP against a real
Prometheus (Debian's package) serving the same compacted TSDBs as the cycle bench (one
day, a sample every 300 s, 500 / 1,000 / 2,000 simulated GPUs). Each query runs

- whole: one request for every GPU, as the cycle asks it;
- in shards: split by UUID prefix (``gpuwatch.promql.shards``) into requests of no more
  GPUs than the smallest fleet has, so that every request is the smallest fleet's size.

If the sharded total grew linearly where the whole one does not, the cause would be
the size of one request and the cycle could shard it away; if both grow alike, it is
the server's evaluation over a bigger TSDB, which no client-side split removes. Each
figure is the fastest of ``--repeat`` runs of each query, the sizes' servers all up.
Run:

    .venv/bin/python bench/prometheus_queries.py [--sizes 500,1000,2000]

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.prometheus_cycle import AT, DAYS, STEP_S, build_tsdb, simulated
from gpuwatch.analysis.savings.use import SPECS as SAVINGS_SPECS
from gpuwatch.config.settings import PrometheusSettings
from gpuwatch.promql import QueryBuilder, QueryPart, pod_labels_for, shards

HOUR_S = 3600


def history_queries(seen: set[str]) -> dict[str, QueryPart]:
    """The savings' hourly history queries as a cycle builds them, by aggregate; ``seen``:
    the label names on the server's series (which of them name pods)."""
    settings = PrometheusSettings(scrape_interval_s=STEP_S)
    labels = settings.labels
    pod = pod_labels_for(labels.pod_labels, seen).pod
    identity = (*labels.node, labels.gpu, labels.model)
    builder = QueryBuilder(settings.metrics, labels, float(STEP_S), pod, identity=identity)
    return {
        f"{spec}#{i}": part
        for spec in sorted(SAVINGS_SPECS)
        for i, part in enumerate(builder.parts(spec))
    }


def shard_count(gpus: int, per_request: int) -> int:
    """The power of two that keeps each request at ``per_request`` GPUs or fewer."""
    count = 1
    while gpus / count > per_request:
        count *= 2
    return count


def label_names(url: str) -> set[str]:
    """Every label name the server's series carry."""
    with urllib.request.urlopen(f"{url}/api/v1/labels", timeout=60) as answer:
        return set(json.loads(answer.read())["data"])


def timed(url: str, promql: str) -> float:
    """Seconds for one range query over the day, hourly, answered in full."""
    start = int(AT.timestamp()) - int(DAYS * 86400) + HOUR_S
    query = urllib.parse.urlencode(
        {"query": promql, "start": start, "end": int(AT.timestamp()), "step": HOUR_S}
    )
    began = time.perf_counter()
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{query}", timeout=120) as answer:
        body = json.loads(answer.read())
    took = time.perf_counter() - began
    if body.get("status") != "success":
        raise SystemExit(f"query failed: {body}")
    return took


def measure(sizes: list[int], repeat: int) -> dict[int, dict[str, float]]:
    """Per size: the GPUs simulated, the summed fastest time of every query whole and in
    shards, and the shards."""
    from tests.integration.prometheus_server import PrometheusServer

    uuid = PrometheusSettings().labels.uuid
    gpus_in = {gpus: len(simulated(gpus).layout.gpus) for gpus in sizes}
    count = {gpus: shard_count(gpus_in[gpus], gpus_in[sizes[0]]) for gpus in sizes}
    servers = {gpus: PrometheusServer(build_tsdb(gpus)) for gpus in sizes}
    best: dict[tuple[int, str, str], float] = {}
    try:
        for server in servers.values():
            server.start()
        queries = history_queries(label_names(servers[sizes[0]].url))
        for _ in range(repeat):
            for gpus, server in servers.items():  # the sizes take turns
                for name, part in queries.items():
                    for layout, parts in (("whole", 1), ("sharded", count[gpus])):
                        took = sum(
                            timed(server.url, part.render(shard, uuid)) for shard in shards(parts)
                        )
                        key = (gpus, name, layout)
                        best[key] = min(best.get(key, took), took)
    finally:
        for server in servers.values():
            server.stop()
    return {
        gpus: {
            layout: sum(best[(gpus, name, layout)] for name in queries)
            for layout in ("whole", "sharded")
        }
        | {"gpus": float(gpus_in[gpus]), "shards": float(count[gpus])}
        for gpus in sizes
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="500,1000,2000", help="Fleet sizes, in GPUs.")
    parser.add_argument("--repeat", type=int, default=5, help="Runs of each query (fastest).")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    found = measure(sizes, args.repeat)
    print(f"the savings' history queries, each alone, summed (fastest of {args.repeat})")
    print(f"{'GPUs':>6} {'whole s':>9} {'sharded s':>10} {'shards':>7}")
    for row in found.values():
        print(f"{row['gpus']:6.0f} {row['whole']:9.3f} {row['sharded']:10.3f} {row['shards']:7.0f}")
    small, large = found[sizes[0]], found[sizes[-1]]
    fleet = large["gpus"] / small["gpus"]
    growth = {
        layout: round(large[layout] / small[layout] / fleet, 2) for layout in ("whole", "sharded")
    }
    print(
        f"growth from {small['gpus']:.0f} to {large['gpus']:.0f} GPUs ({fleet:.2f}x), over "
        f"linear (1.0 = linear): {growth}"
    )
    print(
        json.dumps(
            {
                "bench": "prometheus_queries",
                "gpus": [int(found[g]["gpus"]) for g in sizes],
                "whole_s": [round(found[g]["whole"], 3) for g in sizes],
                "sharded_s": [round(found[g]["sharded"], 3) for g in sizes],
                "shards": [int(found[g]["shards"]) for g in sizes],
                "growth_over_linear": growth,
            }
        )
    )


if __name__ == "__main__":
    main()
