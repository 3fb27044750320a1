"""A Prometheus that refuses, fails, lies or dawdles: each gets a clear, typed outcome."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from gpuwatch.analysis.rules.evaluate import required_specs
from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.config.settings import PrometheusSettings
from gpuwatch.model.errors import (
    SourceAuthRefused,
    SourceBadQuery,
    SourceBadResponse,
    SourcePartialData,
    SourceUnreachable,
)
from gpuwatch.model.metrics import WindowRequest
from gpuwatch.sources.prometheus import PrometheusClient, PrometheusMetricsSource
from gpuwatch.sources.prometheus.client import Connection
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from tests.builders import run_gpuwatch
from tests.integration.fault_proxy import Answer, FaultProxy, overloaded, too_many_samples
from tests.integration.prometheus_server import free_port
from tests.integration.test_prometheus_source import assert_same_stats

pytestmark = pytest.mark.integration
REQUEST = WindowRequest(SHOWCASE_AT, required_specs(load_rules()))


def source(url: str, env=None, **overrides) -> PrometheusMetricsSource:
    settings = PrometheusSettings(url=url, scrape_interval_s=60, **overrides)
    client = PrometheusClient(Connection.from_settings(settings, env or {}))
    return PrometheusMetricsSource(client, settings)


def _unsharded(seen) -> bool:
    return seen.path == "/api/v1/query" and "UUID=~" not in seen.query


def test_too_big_query_is_split_not_failed(history_prometheus):
    server, _ = history_prometheus
    expected = source(server.url).window_stats(REQUEST)
    # The proxy refuses any query over the whole fleet, as a server at its
    # max-samples limit would; only GPU-sharded queries get through.
    decide = lambda seen: too_many_samples() if _unsharded(seen) else None  # noqa: E731
    with FaultProxy(server.url, decide) as proxy:
        actual = source(proxy.url).window_stats(REQUEST)
    assert_same_stats(expected, actual, REQUEST.specs)
    refused = [s for s in proxy.seen if _unsharded(s)]
    sharded = [s for s in proxy.seen if "UUID=~" in s.query]
    assert refused and len(sharded) >= 2 * len(refused)


def test_overloaded_server_splits_then_gives_up_as_partial_data(history_prometheus):
    server, _ = history_prometheus
    with (
        FaultProxy(server.url, lambda seen: overloaded()) as proxy,
        pytest.raises(SourcePartialData, match="after 2 splits"),
    ):
        source(proxy.url, max_split_depth=2).window_stats(REQUEST)
    # Fail fast: the first query is halved twice, and its first half still refused ends
    # the cycle; no more load on a server that is already overloaded.
    assert len(proxy.seen) == 3


def test_answer_slower_than_the_timeout(history_prometheus):
    server, _ = history_prometheus
    slow = Answer(delay_s=2.0, passthrough_after_delay=True)
    with FaultProxy(server.url, lambda seen: slow if _unsharded(seen) else None) as proxy:
        stats = source(proxy.url, timeout_s=0.5, max_split_depth=1).window_stats(REQUEST)
    assert len(stats.devices) == 64
    assert any("UUID=~" in s.query for s in proxy.seen)


@pytest.mark.parametrize(
    "body",
    [b"<html>502 Bad Gateway from a proxy</html>", b'{"status":"success","data":{}}', b"[1,2]"],
    ids=["html", "no-result", "wrong-shape"],
)
def test_garbage_answer(history_prometheus, body):
    server, _ = history_prometheus
    with FaultProxy(server.url, lambda seen: Answer(200, body)) as proxy:
        url = proxy.url
        with pytest.raises(SourceBadResponse, match=re.escape(url)):
            source(url).window_stats(REQUEST)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_refused(history_prometheus, status):
    server, _ = history_prometheus
    body = b'{"status":"error","error":"authentication required"}'
    with (
        FaultProxy(server.url, lambda seen: Answer(status, body)) as proxy,
        pytest.raises(SourceAuthRefused, match=f"HTTP {status}.*authentication required"),
    ):
        source(proxy.url).window_stats(REQUEST)


def test_an_engine_that_drops_names_in_last_over_time_gets_the_stepped_inventory(
    history_prometheus,
):
    """An engine whose last_over_time drops the metric name (two families of one GPU
    then collide) refuses the one-pass inventory; the stepped one answers, with the
    same result, and the refusal is not halved as if it were too big."""
    server, _ = history_prometheus
    expected = source(server.url).window_stats(REQUEST)
    collide = Answer(
        422,
        b'{"status":"error","errorType":"execution","error":"vector cannot contain '
        b'metrics with the same labelset"}',
    )
    decide = lambda seen: collide if "last_over_time({__name__" in seen.query else None  # noqa: E731
    with FaultProxy(server.url, decide) as proxy:
        actual = source(proxy.url).window_stats(REQUEST)
    assert_same_stats(expected, actual, REQUEST.specs)
    refused = [s for s in proxy.seen if "last_over_time({__name__" in s.query]
    assert len(refused) == 1


def test_bad_query_names_the_query(history_prometheus):
    """The message quotes the query where the server says it broke, however long."""
    server, _ = history_prometheus
    broken = source(server.url, metrics={"gpu_util": "DCGM_FI_DEV_GPU_UTIL{"})
    with pytest.raises(SourceBadQuery, match=r"HTTP 400.*\(query: .*DCGM_FI_DEV_GPU_UTIL\{"):
        broken.window_stats(REQUEST)


def test_unreachable():
    with pytest.raises(SourceUnreachable, match="cannot connect"):
        source(f"http://127.0.0.1:{free_port()}").window_stats(REQUEST)


def test_tenant_token_and_headers_reach_the_server(history_prometheus, tmp_path):
    server, _ = history_prometheus
    token = tmp_path / "token"
    token.write_text("s3cr3t\n")
    with FaultProxy(server.url) as proxy:
        source(
            proxy.url,
            tenant="team-ml",
            bearer_token_file=token,
            headers={"X-Extra": "1"},
        ).window_stats(REQUEST)
    headers = proxy.seen[0].headers
    assert headers["X-Scope-OrgID"] == "team-ml"
    assert headers["Authorization"] == "Bearer s3cr3t"
    assert headers["X-Extra"] == "1"


def test_basic_auth_from_environment(history_prometheus):
    server, _ = history_prometheus
    with FaultProxy(server.url) as proxy:
        source(
            proxy.url, env={"PROM_PW": "pw"}, username="gpuwatch", password_env="PROM_PW"
        ).window_stats(REQUEST)
    assert proxy.seen[0].headers["Authorization"].startswith("Basic ")


def test_once_against_prometheus_matches_the_demo(history_prometheus, tmp_path):
    server, _ = history_prometheus
    # The Prometheus holds the simulator's metrics: pair them with its cluster objects.
    env = {
        "GPUWATCH_PROMETHEUS__SCRAPE_INTERVAL_S": "60",
        "GPUWATCH_SIMULATOR__DAYS": "0.5",
        "GPUWATCH_CLUSTER__SOURCE": "simulator",
    }
    args = ["--at", "2026-11-24T02:00:00Z", "--output", "json"]
    real = run_gpuwatch(
        "once", "--prometheus-url", server.url, *args, "--out", "a", env=env, cwd=tmp_path
    )
    demo = run_gpuwatch("demo", *args, "--out", "b", env=env, cwd=tmp_path)
    assert real.returncode == 0, real.stderr
    mine, theirs = json.loads(real.stdout), json.loads(demo.stdout)
    assert mine["source"]["metrics"] == "prometheus"

    def key(finding):
        return (finding["rule"], finding["gpu_uuid"], finding["since"], finding["workload"])

    assert sorted(map(key, mine["findings"])) == sorted(map(key, theirs["findings"]))


def test_once_with_prometheus_down_exits_1_and_takes_no_action(tmp_path):
    run = run_gpuwatch(
        "once", "--prometheus-url", f"http://127.0.0.1:{free_port()}", "--out", "o",
        cwd=tmp_path, env={"GPUWATCH_CLUSTER__SOURCE": "simulator"},
    )  # fmt: skip
    assert run.returncode == 1
    assert "metrics (prometheus, unreachable)" in run.stderr
    result = json.loads((tmp_path / "o" / "cycle-latest.json").read_text())
    assert result["ok"] is False and result["findings"] == [] and result["actions"] == []


def test_history_command_from_prometheus_equals_the_simulator(history_prometheus, tmp_path):
    server, _ = history_prometheus
    args = ["history", "--from", "2026-11-23T18:00:00Z", "--to", "2026-11-24T04:00:00Z"]
    env = {"GPUWATCH_PROMETHEUS__SCRAPE_INTERVAL_S": "60", "GPUWATCH_SIMULATOR__DAYS": "0.5"}
    real = run_gpuwatch(*args, "--prometheus-url", server.url, "--out", "p.parquet", env=env,
                     cwd=tmp_path)  # fmt: skip
    simulated = run_gpuwatch(*args, "--out", "s.parquet", env=env, cwd=tmp_path)
    assert real.returncode == 0, real.stderr
    assert simulated.returncode == 0, simulated.stderr
    assert "wrote 640 GPU-steps of 64 GPUs" in real.stderr
    keys = ["gpu_uuid", "time"]
    mine = pq.read_table(tmp_path / "p.parquet").to_pandas().sort_values(keys)
    theirs = pq.read_table(tmp_path / "s.parquet").to_pandas().sort_values(keys)
    assert list(mine.columns) == list(theirs.columns)
    for column in ("util_avg_ratio", "fb_used_max_ratio", "temp_max_c", "samples"):
        assert np.allclose(mine[column], theirs[column], equal_nan=True), column
