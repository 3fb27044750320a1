"""The one place where concrete adapters are built from settings.

Nothing else constructs a source, a notifier or a state store; tests build
``Components`` directly with in-process implementations.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import cache
from typing import TextIO

from gpuwatch.actions.kubernetes import KubernetesActuator
from gpuwatch.actions.lease import LeaseLock
from gpuwatch.analysis.pricing import load_price_book
from gpuwatch.analysis.rules import load_rules
from gpuwatch.config.settings import Settings
from gpuwatch.notify.base import Notifier
from gpuwatch.notify.console import ConsoleNotifier, RecordingNotifier
from gpuwatch.pipeline import Components
from gpuwatch.sources.base import ClusterSource, MetricsSource
from gpuwatch.sources.kubernetes import KubernetesClusterSource, KubernetesOptions
from gpuwatch.sources.opencost import OpenCostPrices
from gpuwatch.sources.prometheus import PrometheusClient, PrometheusMetricsSource
from gpuwatch.sources.prometheus.client import Connection
from gpuwatch.sources.simulator import (
    SimulatedCluster,
    SimulatorClusterSource,
    SimulatorMetricsSource,
)
from gpuwatch.sources.snapshot_file import SnapshotFileClusterSource
from gpuwatch.sources.training import TrainingCheckpoints
from gpuwatch.state.json_file import JsonFileState


def build_metrics_source(
    settings: Settings, env: Mapping[str, str], simulated: Callable[[], SimulatedCluster]
) -> MetricsSource:
    """The configured metrics source; ``simulated`` builds the simulator when it is the one."""
    if settings.metrics.source == "prometheus":
        client = PrometheusClient(Connection.from_settings(settings.prometheus, env))
        return PrometheusMetricsSource(client, settings.prometheus)
    return SimulatorMetricsSource(simulated())


def build_components(
    settings: Settings, at: datetime, console: TextIO, env: Mapping[str, str] | None = None
) -> Components:
    """Adapters for one cycle evaluated at ``at``; ``console`` receives printed messages.

    Secrets (tokens, passwords) are read here, on every cycle, so rotation needs no restart.
    """
    env = os.environ if env is None else env
    rules = load_rules(settings.rules.paths)
    # Built once, and only when a simulator source is configured.
    simulated = cache(lambda: SimulatedCluster(settings.simulator, end=at))
    notifier: Notifier = (
        ConsoleNotifier(console) if settings.notify.console else RecordingNotifier()
    )
    cluster: ClusterSource
    actuator = None
    source = settings.cluster_source
    if source == "kubernetes":
        k = settings.kubernetes
        options = KubernetesOptions(
            in_cluster=k.in_cluster,
            kubeconfig=str(k.kubeconfig) if k.kubeconfig else None,
            context=k.context,
            page_size=k.page_size,
            request_timeout_s=k.request_timeout_s,
            retries=k.retries,
            gpu_aliases=dict(settings.cluster.gpu_resource_aliases),
        )
        kubernetes_source = KubernetesClusterSource.from_options(options)
        cluster = kubernetes_source
        if not settings.dry_run:
            namespace, _, name = settings.actions.lease.partition("/")
            lease = LeaseLock(
                kubernetes_source.api_client,
                namespace,
                name,
                holder=f"{socket.gethostname()}-{os.getpid()}",
            )
            actuator = KubernetesActuator(kubernetes_source.api_client, lease=lease)
    elif source == "snapshot":
        cluster = SnapshotFileClusterSource(
            settings.cluster.snapshot_path or "-",
            gpu_aliases=dict(settings.cluster.gpu_resource_aliases),
        )
    else:
        cluster = SimulatorClusterSource(simulated())
    metrics = build_metrics_source(settings, env, simulated)
    node_prices = None
    checkpoints = None
    if isinstance(metrics, PrometheusMetricsSource):
        checkpoints = TrainingCheckpoints(metrics.client)
        if settings.cost.opencost:
            node_prices = OpenCostPrices(metrics.client, settings.cost.opencost_currency)
    return Components(
        metrics=metrics,
        cluster=cluster,
        rules=rules,
        state=JsonFileState(settings.state_path),
        notifier=notifier,
        price_book=load_price_book(settings.cost.price_book),
        node_prices=node_prices,
        actuator=actuator,
        checkpoints=checkpoints,
    )
