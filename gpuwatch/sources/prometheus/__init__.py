"""DCGM metrics from any PromQL API: Prometheus, Thanos Query, Mimir, VictoriaMetrics.

Gentle at fleet scale: aggregation runs on the server (``*_over_time``, subqueries at
the scrape interval), requests are sized to a sample budget and split by GPU shards and
time, a request refused as too big is halved rather than failing the cycle, and at most
``max_concurrency`` requests are in flight.
"""

from gpuwatch.sources.prometheus.client import PrometheusClient
from gpuwatch.sources.prometheus.source import PrometheusMetricsSource

__all__ = ["PrometheusClient", "PrometheusMetricsSource"]
