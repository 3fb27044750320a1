"""The training job's Prometheus metrics, and the endpoint that serves them.

gpuwatch reads ``gpuwatch_train_last_checkpoint_timestamp_seconds`` to judge whether a
job is safe to move: a job whose last durable checkpoint is a few minutes old loses
only those minutes when it is stopped. The timestamp is when the saved state was
captured (what a restart goes back to), published only once the files are durable.

Every metric lives in the ``registry`` passed in, so tests build a fresh
``CollectorRegistry`` and read samples back with ``get_sample_value``.
"""

from __future__ import annotations

import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

log = logging.getLogger(__name__)


class TrainMetrics:
    """The gauges and counters of one training process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.step = Gauge("gpuwatch_train_step", "Optimizer steps completed.", registry=registry)
        self.loss = Gauge(
            "gpuwatch_train_loss",
            "Training loss of the last step, averaged over ranks.",
            registry=registry,
        )
        self.samples_per_second = Gauge(
            "gpuwatch_train_samples_per_second",
            "Training samples per second, all ranks together, over the last log interval.",
            registry=registry,
        )
        self.last_checkpoint_timestamp = Gauge(
            "gpuwatch_train_last_checkpoint_timestamp_seconds",
            "Unix time at which the state in the newest durable checkpoint was captured.",
            registry=registry,
        )
        self.last_checkpoint_step = Gauge(
            "gpuwatch_train_last_checkpoint_step",
            "Step of the newest durable checkpoint.",
            registry=registry,
        )
        self.checkpoint_duration = Gauge(
            "gpuwatch_train_checkpoint_duration_seconds",
            "Seconds from capturing the state to the newest checkpoint being durable.",
            registry=registry,
        )
        self.checkpoint_stall = Gauge(
            "gpuwatch_train_checkpoint_stall_seconds",
            "Seconds training stood still for the newest checkpoint (the copy, if async).",
            registry=registry,
        )
        self.checkpoint_bytes = Gauge(
            "gpuwatch_train_checkpoint_size_bytes",
            "Size of the newest checkpoint file.",
            registry=registry,
        )
        self.checkpoints = Counter(
            "gpuwatch_train_checkpoints",
            "Checkpoints written by this process.",
            registry=registry,
        )
        self.preemption_seconds = Gauge(
            "gpuwatch_train_preemption_checkpoint_seconds",
            "Seconds from SIGTERM to its checkpoint being durable.",
            registry=registry,
        )

    def checkpoint_written(
        self, *, step: int, saved_at_unix: float, duration_s: float, size_bytes: int
    ) -> None:
        """Publish a checkpoint that is now durable."""
        self.last_checkpoint_timestamp.set(saved_at_unix)
        self.last_checkpoint_step.set(step)
        self.checkpoint_duration.set(duration_s)
        self.checkpoint_bytes.set(size_bytes)
        self.checkpoints.inc()


def serve(registry: CollectorRegistry, host: str, port: int) -> WSGIServer:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread.

    Port 0 picks a free port; the bound one is ``server.server_port`` (and logged).
    """
    server, _thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, server.server_port)
    return server
