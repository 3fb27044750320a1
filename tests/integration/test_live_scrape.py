"""A real Prometheus scraping ``gpuwatch simulate serve`` live, as it scrapes dcgm-exporter."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime

import pytest

from gpuwatch.config.settings import PrometheusSettings
from gpuwatch.model.metrics import Aggregate, AggregateSpec, Signal, WindowRequest
from gpuwatch.sources.prometheus import PrometheusClient, PrometheusMetricsSource
from gpuwatch.sources.prometheus.client import Connection
from tests.integration.prometheus_server import PrometheusServer

pytestmark = pytest.mark.integration


@pytest.fixture
def exporter():
    process = subprocess.Popen(
        [sys.executable, "-m", "gpuwatch", "simulate", "serve", "--port", "0", "--gpus", "8",
         "--days", "0.01", "--step", "1", "--duration", "90", "--max-requests", "500"],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    line = process.stderr.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
    assert match, line
    yield f"127.0.0.1:{match.group(1)}"
    process.terminate()
    process.wait(timeout=10)


def _series_count(url: str) -> int:
    query = urllib.parse.urlencode({"query": "count(count_over_time(DCGM_FI_DEV_GPU_UTIL[1m]))"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=5) as answer:
        body = answer.read().decode()
    match = re.search(r'"value":\[[0-9.]+,"(\d+)"\]', body)
    return int(match.group(1)) if match else 0


def test_scraped_simulator_reads_back_through_the_source(exporter, tmp_path):
    with urllib.request.urlopen(f"http://{exporter}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    assert 'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-' in text
    assert 'pod="llm-pretrain-worker-0",namespace="llm",container="main"' in text

    server = PrometheusServer(tmp_path / "data", scrape_targets=[exporter]).start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _series_count(server.url) < 8:
            time.sleep(0.5)
        time.sleep(5)  # a few scrapes' worth of samples
        settings = PrometheusSettings(url=server.url, scrape_interval_s=1)
        source = PrometheusMetricsSource(
            PrometheusClient(Connection.from_settings(settings, {})), settings
        )
        specs = frozenset(
            {
                AggregateSpec(Signal.UTIL_RATIO, Aggregate.AVG, 5),
                AggregateSpec(Signal.UTIL_RATIO, Aggregate.COUNT, 5),
                AggregateSpec(Signal.FB_USED_RATIO, Aggregate.MAX, 5),
                AggregateSpec(Signal.POD_ATTACHED, Aggregate.MAX, 5),
            }
        )
        stats = source.window_stats(WindowRequest(datetime.now(UTC), specs))
    finally:
        server.stop()
    assert len(stats.devices) == 8
    assert {d.node for d in stats.devices} == {"train-a100-0"}
    assert all(d.pod is not None and d.pod.name == "llm-pretrain-worker-0" for d in stats.devices)
    util = stats.get(AggregateSpec(Signal.UTIL_RATIO, Aggregate.AVG, 5))
    assert ((util > 0.8) & (util <= 1.0)).all()  # the pretraining job keeps them busy
    assert (stats.coverage_ratio(Signal.UTIL_RATIO, 5) > 0.5).all()
    assert set(stats.get(AggregateSpec(Signal.POD_ATTACHED, Aggregate.MAX, 5))) == {1.0}
