"""MIG instances, OpenCost prices and TLS against a real Prometheus (and a TLS proxy)."""

from __future__ import annotations

import math
import ssl
from datetime import timedelta
from decimal import Decimal

import pytest
import trustme

from gpuwatch.analysis.pricing import load_price_book
from gpuwatch.config.settings import PrometheusSettings
from gpuwatch.model.cost import Price
from gpuwatch.model.errors import SourceUnreachable
from gpuwatch.model.metrics import Aggregate, AggregateSpec, Signal, WindowRequest
from gpuwatch.sources.opencost import OpenCostPrices
from gpuwatch.sources.prometheus import PrometheusClient, PrometheusMetricsSource
from gpuwatch.sources.prometheus.client import Connection
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from gpuwatch.sources.training import TrainingCheckpoints
from tests.integration.fault_proxy import FaultProxy
from tests.integration.prometheus_server import PrometheusServer, backfill

pytestmark = pytest.mark.integration
AT_S = int(SHOWCASE_AT.timestamp())
UTIL = AggregateSpec(Signal.UTIL_RATIO, Aggregate.AVG, 600)
MEMORY = AggregateSpec(Signal.FB_USED_RATIO, Aggregate.MAX, 600)
ATTACHED = AggregateSpec(Signal.POD_ATTACHED, Aggregate.MAX, 600)


def _mig_history() -> str:
    """An A100 split into two 3g.40gb instances: one held by a pod, one free. As real
    exporters emit it: per instance the graphics engine and the framebuffer, no
    ``DCGM_FI_DEV_GPU_UTIL`` (unsupported on MIG; some versions send a constant 0,
    which gpuwatch must not read as idle); device-level families for the card itself,
    without ``GPU_I_ID``, which must not make a third device."""
    card = (
        'gpu="0",UUID="GPU-5ca1ab1e-0000-4000-8000-000000000001",device="nvidia0",'
        'modelName="NVIDIA A100-SXM4-80GB",Hostname="mig-node"'
    )
    base = card + ',GPU_I_PROFILE="3g.40gb"'
    instances = {
        "1": (base + ',GPU_I_ID="1",pod="infer-0",namespace="serving",container="main"', 0.6),
        "2": (base + ',GPU_I_ID="2"', 0.0),
    }
    lines = []
    for family, value_of in (
        ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", lambda u: u),
        ("DCGM_FI_DEV_GPU_UTIL", lambda u: 0),
        ("DCGM_FI_DEV_FB_USED", lambda u: 30000.0 if u else 0.0),
        ("DCGM_FI_DEV_FB_FREE", lambda u: 10240.0 if u else 40240.0),
    ):
        lines.append(f"# TYPE {family} gauge")
        for labels, util in instances.values():
            for t in range(AT_S - 1800 + 60, AT_S + 1, 60):
                lines.append(f"{family}{{{labels}}} {value_of(util)} {t}")
    for family, value in (("DCGM_FI_DEV_GPU_TEMP", 41), ("DCGM_FI_DEV_POWER_USAGE", 88.5)):
        lines.append(f"# TYPE {family} gauge")
        for t in range(AT_S - 1800 + 60, AT_S + 1, 60):
            lines.append(f"{family}{{{card}}} {value} {t}")
    lines.append("# TYPE gpuwatch_train_last_checkpoint_timestamp_seconds gauge")
    for t in range(AT_S - 1800 + 60, AT_S + 1, 60):
        lines.append(
            "gpuwatch_train_last_checkpoint_timestamp_seconds"
            f'{{namespace="llm",pod="pretrain-worker-0"}} {AT_S - 120} {t}'
        )
    for family, value in (
        ("gpuwatch_train_step", 140),
        ("gpuwatch_train_last_checkpoint_step", 125),
    ):
        lines.append(f"# TYPE {family} gauge")
        for t in range(AT_S - 1800 + 60, AT_S + 1, 60):
            lines.append(f'{family}{{namespace="llm",pod="pretrain-worker-0"}} {value} {t}')
    lines.append("# TYPE node_gpu_hourly_cost gauge")
    for t in range(AT_S - 1800 + 60, AT_S + 1, 60):
        lines.append(f'node_gpu_hourly_cost{{node="mig-node",instance_type="gn7e"}} 2.93 {t}')
    return "\n".join(lines) + "\n# EOF\n"


@pytest.fixture(scope="module")
def mig_prometheus(tmp_path_factory):
    root = tmp_path_factory.mktemp("prom-mig")
    (root / "mig.om").write_text(_mig_history())
    backfill(root / "mig.om", root / "data")
    server = PrometheusServer(root / "data").start()
    yield server
    server.stop()


def _source(url: str, **overrides) -> PrometheusMetricsSource:
    settings = PrometheusSettings(url=url, scrape_interval_s=60, **overrides)
    return PrometheusMetricsSource(
        PrometheusClient(Connection.from_settings(settings, {})), settings
    )


def test_mig_instances_are_separate_devices(mig_prometheus):
    request = WindowRequest(SHOWCASE_AT, frozenset({UTIL, MEMORY, ATTACHED}))
    stats = _source(mig_prometheus.url).window_stats(request)
    assert [(d.mig_profile, d.mig_instance_id) for d in stats.devices] == [
        ("3g.40gb", 1),
        ("3g.40gb", 2),
    ]
    held, free = stats.devices
    assert held.pod is not None and held.pod.name == "infer-0" and free.pod is None
    # The graphics engine's activity, never the GPU_UTIL of 0 the exporter sent.
    assert stats.get(UTIL).tolist() == [0.6, 0.0]
    assert stats.get(MEMORY)[0] == pytest.approx(30000 / 40240)
    assert stats.get(ATTACHED).tolist() == [1.0, 0.0]


@pytest.fixture(scope="module")
def certificates():
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    return authority, server_context


def test_tls_with_the_servers_ca(mig_prometheus, certificates, tmp_path):
    authority, server_context = certificates
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    with FaultProxy(mig_prometheus.url, tls=server_context) as proxy:
        assert proxy.url.startswith("https://")
        request = WindowRequest(SHOWCASE_AT, frozenset({UTIL}))
        stats = _source(proxy.url, ca_file=ca_file).window_stats(request)
        assert len(stats.devices) == 2
        # Without the CA the certificate is refused, unless verification is switched off.
        with pytest.raises(SourceUnreachable, match="TLS failed"):
            _source(proxy.url).window_stats(request)
        insecure = _source(proxy.url, insecure_skip_verify=True).window_stats(request)
        assert len(insecure.devices) == 2


def test_opencost_prices_replace_the_book_for_a_nodes_own_capacity(mig_prometheus):
    settings = PrometheusSettings(url=mig_prometheus.url, scrape_interval_s=60)
    prices = OpenCostPrices(PrometheusClient(Connection.from_settings(settings, {})), "USD")
    measured = prices.node_prices(SHOWCASE_AT)
    assert measured == {"mig-node": Price(Decimal("2.93"), "USD", "opencost:node_gpu_hourly_cost")}
    book = load_price_book().with_node_prices(measured)
    own, _ = book.price("NVIDIA A100-SXM4-80GB", "on-demand", node="mig-node")
    what_if, _ = book.price("NVIDIA A100-SXM4-80GB", "spot")
    assert own is not None and own.per_gpu_hour == Decimal("2.93") and own.currency == "USD"
    assert what_if is not None and what_if.source.startswith("book:")


def test_training_jobs_last_checkpoint_from_their_metric(mig_prometheus):
    settings = PrometheusSettings(url=mig_prometheus.url, scrape_interval_s=60)
    checkpoints = TrainingCheckpoints(PrometheusClient(Connection.from_settings(settings, {})))
    assert checkpoints.last_checkpoints(SHOWCASE_AT) == {
        ("llm", "pretrain-worker-0"): SHOWCASE_AT - timedelta(minutes=2)
    }
    assert checkpoints.progress(SHOWCASE_AT) == {("llm", "pretrain-worker-0"): (140, 125)}


def test_mig_instances_without_the_graphics_engine_are_not_judged(mig_prometheus, tmp_path):
    """With DCP metrics off, a MIG instance has no utilization at all: GPU_UTIL's 0 is
    not a measurement of it, so it is unknown, never idle."""
    names = {"gr_engine_active": "DCGM_FI_PROF_NOT_COLLECTED"}
    source = _source(mig_prometheus.url, metrics=names)
    stats = source.window_stats(WindowRequest(SHOWCASE_AT, frozenset({UTIL, ATTACHED})))
    assert [d.mig_instance_id for d in stats.devices] == [1, 2]  # still there (framebuffer)
    assert all(math.isnan(v) for v in stats.get(UTIL))
    assert stats.get(ATTACHED).tolist() == [1.0, 0.0]
