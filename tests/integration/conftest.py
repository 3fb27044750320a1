"""Servers for integration tests: real Prometheus instances on loopback."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gpuwatch.config.settings import SimulatorSettings
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from tests.integration.prometheus_server import PrometheusServer, backfill, export_history

# The backfilled history: 12 hours of the 64-GPU scenario at 60 s, ending 2 h after
# the showcase instant, so that `--at` can be evaluated over hours on both sides of it.
HISTORY_END = SHOWCASE_AT + timedelta(hours=2)
HISTORY = SimulatorSettings(gpus=64, days=0.5, step_s=60)


@pytest.fixture(scope="session")
def history_prometheus(tmp_path_factory):
    root = tmp_path_factory.mktemp("prom-history")
    cluster = export_history(root / "history.om", HISTORY, HISTORY_END)
    backfill(root / "history.om", root / "data")
    server = PrometheusServer(root / "data").start()
    yield server, cluster
    server.stop()


@pytest.fixture(scope="session")
def exported_prometheus(tmp_path_factory):
    """The same history with the labels a ServiceMonitor without honorLabels produces."""
    root = tmp_path_factory.mktemp("prom-exported")
    settings = SimulatorSettings(gpus=64, days=0.1, step_s=60)
    cluster = export_history(root / "history.om", settings, HISTORY_END, exported=True)
    backfill(root / "history.om", root / "data")
    server = PrometheusServer(root / "data").start()
    yield server, cluster
    server.stop()
