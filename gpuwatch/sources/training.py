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
STEP_QUERY = "max by (namespace, pod) (gpuwatch_train_step)"
CHECKPOINT_STEP_QUERY = "max by (namespace, pod) (gpuwatch_train_last_checkpoint_step)"


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

    def progress(self, at: datetime) -> dict[tuple[str, str], tuple[int, int]]:
        """(namespace, pod) -> (current step, step of the newest checkpoint)."""
        steps = {_key(s.labels): int(s.value) for s in self.client.instant(STEP_QUERY, at)}
        saved = {
            _key(s.labels): int(s.value) for s in self.client.instant(CHECKPOINT_STEP_QUERY, at)
        }
        return {key: (step, saved[key]) for key, step in steps.items() if key in saved}


def _key(labels: dict[str, str]) -> tuple[str, str]:
    return (labels.get("namespace", ""), labels.get("pod", ""))
