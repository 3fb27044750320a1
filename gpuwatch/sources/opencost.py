"""Per-node GPU prices from OpenCost's ``node_gpu_hourly_cost`` metric, where it runs.

OpenCost prices each node from the cloud's billing API (spot and reserved included), so
its figure replaces the price book for what a node's GPUs cost now.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from gpuwatch.model.cost import Price
from gpuwatch.sources.prometheus.client import PrometheusClient

QUERY = "avg by (node) (node_gpu_hourly_cost)"


class OpenCostPrices:
    name = "opencost"

    def __init__(self, client: PrometheusClient, currency: str) -> None:
        self.client = client
        self.currency = currency

    def node_prices(self, at: datetime) -> dict[str, Price]:
        """Node -> price per GPU-hour; raises SourceError when the query fails."""
        prices = {}
        for series in self.client.instant(QUERY, at):
            node = series.labels.get("node")
            if node and series.value == series.value and series.value >= 0:  # not NaN
                amount = Decimal(str(round(series.value, 6)))
                prices[node] = Price(amount, self.currency, "opencost:node_gpu_hourly_cost")
        return prices
