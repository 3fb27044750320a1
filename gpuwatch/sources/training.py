"""When each training job last checkpointed, from the reference job's own metric.

The reference training job exports ``gpuwatch_train_last_checkpoint_timestamp_seconds``
(unix seconds of the state in its newest durable checkpoint); scraped by Prometheus it
carries the pod's ``namespace`` and ``pod`` labels. A job is only moved to spot with a
checkpoint younger than the configured age.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gpuwatch.sources.prometheus.client import PrometheusClient

METRIC = "gpuwatch_train_last_checkpoint_timestamp_seconds"
QUERY = f"max by (namespace, pod) ({METRIC})"


class TrainingCheckpoints:
    name = "training-metrics"

    def __init__(self, client: PrometheusClient) -> None:
        self.client = client

    def last_checkpoints(self, at: datetime) -> dict[tuple[str, str], datetime]:
        """(namespace, pod) -> newest checkpoint; raises SourceError when the query fails."""
        found = {}
        for series in self.client.instant(QUERY, at):
            namespace, pod = series.labels.get("namespace"), series.labels.get("pod")
            if namespace and pod and series.value == series.value and series.value > 0:
                found[(namespace, pod)] = datetime.fromtimestamp(series.value, tz=UTC)
        return found
