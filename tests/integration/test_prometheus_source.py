"""The Prometheus metrics source against a real Prometheus holding the simulator's history.

The simulator and Prometheus hold the same samples, so both sources of the metrics
seam must give the same window aggregates: one contract, two implementations.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from gpuwatch.analysis.forecast import FitSettings, FitVerdict, fit_growth
from gpuwatch.analysis.pricing import load_price_book
from gpuwatch.analysis.rules.evaluate import required_specs, series_request
from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.analysis.rules.schema import ForecastRule
from gpuwatch.config.settings import PrometheusSettings, Settings
from gpuwatch.model.metrics import (
    Aggregate,
    AggregateSpec,
    HistoryRequest,
    Signal,
    WindowRequest,
)
from gpuwatch.notify.console import RecordingNotifier
from gpuwatch.pipeline import Components, analyse, gather
from gpuwatch.promql import QueryBuilder, Shard
from gpuwatch.sources.prometheus import PrometheusClient, PrometheusMetricsSource
from gpuwatch.sources.prometheus.client import Connection
from gpuwatch.sources.simulator import SimulatorClusterSource, SimulatorMetricsSource
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from gpuwatch.state.base import MemoryState
from tests.integration.conftest import HISTORY_END
from tests.integration.prometheus_server import PrometheusServer, backfill

pytestmark = pytest.mark.integration

# Signals the server computes from several metrics use subqueries, whose 5-minute
# lookback repeats the last value into a gap: their means differ inside gaps only.
_DERIVED = {Signal.FB_USED_RATIO, Signal.FB_TOTAL_MIB, Signal.POD_ATTACHED}


def prometheus_source(url: str, **overrides) -> PrometheusMetricsSource:
    settings = PrometheusSettings(url=url, scrape_interval_s=60, **overrides)
    return PrometheusMetricsSource(
        PrometheusClient(Connection.from_settings(settings, {})), settings
    )


def every_spec(windows=(300, 1800)) -> frozenset[AggregateSpec]:
    return frozenset(
        AggregateSpec(signal, aggregate, w)
        for signal in Signal
        for aggregate in Aggregate
        for w in windows
    )


def assert_same_stats(expected, actual, specs):
    """Same devices (in any order), same labels, same aggregates."""
    position = {d.device_id: i for i, d in enumerate(actual.devices)}
    assert sorted(position) == sorted(d.device_id for d in expected.devices)
    order = np.array([position[d.device_id] for d in expected.devices], dtype=np.int64)
    for mine, theirs in zip([actual.devices[i] for i in order], expected.devices, strict=True):
        assert (mine.node, mine.index, mine.model_name, mine.pod, mine.container) == (
            theirs.node,
            theirs.index,
            theirs.model_name,
            theirs.pod,
            theirs.container,
        )
    for spec in sorted(specs):
        want, got = expected.get(spec), actual.get(spec)[order]
        rows = np.ones(len(want), dtype=bool)
        if spec.signal in _DERIVED and spec.aggregate is Aggregate.AVG:
            full = expected.coverage_ratio(Signal.UTIL_RATIO, spec.window_s) >= 1.0
            rows = full
        np.testing.assert_allclose(
            got[rows], want[rows], rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=str(spec)
        )


@pytest.mark.parametrize(
    "offset",
    [timedelta(0), timedelta(hours=-3, minutes=-17), timedelta(minutes=-8), timedelta(hours=2)],
    ids=["showcase", "3h17m-before", "inside-gap", "end-of-history"],
)
def test_same_aggregates_as_the_simulator(history_prometheus, offset):
    server, cluster = history_prometheus
    at = SHOWCASE_AT + offset
    request = WindowRequest(at, every_spec())
    expected = SimulatorMetricsSource(cluster).window_stats(request)
    actual = prometheus_source(server.url).window_stats(request)
    assert len(actual.devices) >= 56  # the exporter gap hides a node in some windows
    assert_same_stats(expected, actual, request.specs)


def test_gpu_whose_series_stops_mid_window(history_prometheus):
    server, _ = history_prometheus
    spec_count = AggregateSpec(Signal.UTIL_RATIO, Aggregate.COUNT, 1800)
    spec_last = AggregateSpec(Signal.UTIL_RATIO, Aggregate.LAST_TS, 1800)
    stats = prometheus_source(server.url).window_stats(
        WindowRequest(SHOWCASE_AT, frozenset({spec_count, spec_last}))
    )
    rows = [i for i, d in enumerate(stats.devices) if d.node == "spot-a100-1"]
    assert len(rows) == 8
    # Exporter down from 01:38: samples 01:31..01:37 only, the newest at 01:37.
    assert set(stats.get(spec_count)[rows]) == {7.0}
    last = (SHOWCASE_AT - timedelta(minutes=23)).timestamp()
    assert set(stats.get(spec_last)[rows]) == {last}


def test_inventory_times_only_the_silent_gpus_with_the_stepped_query(history_prometheus):
    """The cheap inventory (the window's series, then each one's newest sample within
    the lookback) finds the devices the one-hour stepped subquery finds, pods included;
    the subquery runs for the GPUs silent since (spot-a100-1's exporter, down from
    01:38) and names those alone."""
    server, _ = history_prometheus
    metrics = prometheus_source(server.url)
    metrics.client.recorded = []
    probe = QueryBuilder(metrics.settings.metrics, metrics.labels, 60, "pod")
    cheap = metrics._inventory(3600, SHOWCASE_AT, timed=True)
    stepped = metrics._sharded(probe.inventory_stepped(3600), [Shard()], SHOWCASE_AT)

    def devices(series):
        pods = metrics._pod_labels(series)
        return metrics._devices(series, pods)

    assert devices(cheap) == devices(stepped)
    silent = {d.uuid for d in devices(cheap) if d.node == "spot-a100-1"}
    queries = [params["query"] for _, params in metrics.client.recorded]
    assert len(queries) == 4 and "[3599999ms:300s]" in queries[2]
    named = {u for u in silent if u[4:] in queries[2]}
    assert len(silent) == 8 and named == silent
    others = [d.uuid for d in devices(cheap) if d.node != "spot-a100-1"]
    assert not any(u[4:] in queries[2] for u in others)


def test_inventory_dates_a_gpu_by_its_newest_family(tmp_path):
    """A family that stopped two scrapes before the others (the framebuffer here,
    whose name sorts first) does not date the GPU: its newest sample is the graphics
    engine's, four minutes after the hour, not the framebuffer's two."""
    start = int(SHOWCASE_AT.timestamp()) - 3600
    labels = 'UUID="GPU-0a1b",gpu="0",modelName="NVIDIA A100",Hostname="n1"'
    lines = ["# TYPE DCGM_FI_DEV_FB_USED gauge"]
    lines += [f"DCGM_FI_DEV_FB_USED{{{labels}}} 100 {start + 60 * k}" for k in range(3)]
    lines += ["# TYPE DCGM_FI_PROF_GR_ENGINE_ACTIVE gauge"]
    lines += [f"DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{labels}}} 0.5 {start + 60 * k}" for k in range(5)]
    history = tmp_path / "history.om"
    history.write_text("\n".join([*lines, "# EOF", ""]))
    backfill(history, tmp_path / "data")
    server = PrometheusServer(tmp_path / "data").start()
    try:
        metrics = prometheus_source(server.url)
        at = SHOWCASE_AT.replace(minute=0) - timedelta(minutes=55)
        (series,) = metrics._inventory(3600, at, timed=True)
    finally:
        server.stop()
    assert series.labels["UUID"] == "GPU-0a1b"
    assert series.value == start + 240


def test_rules_see_the_same_cycle(history_prometheus):
    server, cluster = history_prometheus
    request = WindowRequest(SHOWCASE_AT, required_specs(load_rules()))
    expected = SimulatorMetricsSource(cluster).window_stats(request)
    assert_same_stats(expected, prometheus_source(server.url).window_stats(request), request.specs)


def test_exported_pod_labels_win(exported_prometheus):
    server, cluster = exported_prometheus
    request = WindowRequest(SHOWCASE_AT, every_spec(windows=(1800,)))
    expected = SimulatorMetricsSource(cluster).window_stats(request)
    actual = prometheus_source(server.url).window_stats(request)
    # Behind a ServiceMonitor every series has pod=<the exporter>: the workload's pod is
    # in exported_pod, and GPUs nobody holds must not look held by the exporter.
    assert_same_stats(expected, actual, request.specs)
    assert not any(d.pod and d.pod.name.startswith("nvidia-dcgm-exporter") for d in actual.devices)


def test_plain_mode_forced_on_exported_labels_attributes_to_the_exporter(exported_prometheus):
    server, _ = exported_prometheus
    source = prometheus_source(server.url, labels={"pod_labels": "plain"})
    spec = AggregateSpec(Signal.POD_ATTACHED, Aggregate.MAX, 1800)
    stats = source.window_stats(WindowRequest(SHOWCASE_AT, frozenset({spec})))
    assert all(d.pod.namespace == "gpu-operator" for d in stats.devices)
    assert set(stats.get(spec)) == {1.0}


def test_sharded_answer_equals_unsharded(history_prometheus):
    server, _ = history_prometheus
    request = WindowRequest(SHOWCASE_AT, required_specs(load_rules()))
    whole = prometheus_source(server.url).window_stats(request)
    # A tiny budget forces the source to ask GPU shard by GPU shard.
    sharded_source = prometheus_source(server.url, sample_budget=500)
    sharded = sharded_source.window_stats(request)
    assert sharded_source.client.requests_made > 2 * len(request.specs)
    assert_same_stats(whole, sharded, request.specs)


def test_history_is_downsampled_on_the_server_and_matches(history_prometheus):
    server, cluster = history_prometheus
    specs = frozenset(
        {
            AggregateSpec(Signal.UTIL_RATIO, Aggregate.AVG, 3600),
            AggregateSpec(Signal.FB_USED_RATIO, Aggregate.MAX, 3600),
            AggregateSpec(Signal.TEMP_C, Aggregate.MAX, 3600),
            AggregateSpec(Signal.UTIL_RATIO, Aggregate.COUNT, 3600),
        }
    )
    request = HistoryRequest(HISTORY_END - timedelta(hours=10), HISTORY_END, 3600, specs)
    expected = SimulatorMetricsSource(cluster).history(request)
    calls: list[tuple[int, int]] = []
    source = prometheus_source(server.url)
    actual = source.history(request, progress=lambda done, total: calls.append((done, total)))
    assert actual.times_s.tolist() == expected.times_s.tolist()
    assert len(actual.times_s) == 10
    position = {d.device_id: i for i, d in enumerate(actual.devices)}
    order = [position[d.device_id] for d in expected.devices]
    assert [(d.node, d.index) for d in (actual.devices[i] for i in order)] == [
        (d.node, d.index) for d in expected.devices
    ]
    for spec in specs:
        np.testing.assert_allclose(
            actual.values[spec][order], expected.values[spec], rtol=1e-9, equal_nan=True,
            err_msg=str(spec),
        )  # fmt: skip
    # One request per part: 10 hourly points per GPU, never raw samples.
    assert calls[-1][0] == calls[-1][1] == 6  # utilization needs 2 parts per aggregate
    assert source.client.requests_made == 1 + 6


@pytest.mark.parametrize("fixture", ["history_prometheus", "exported_prometheus"])
def test_holders_per_hour_are_the_simulators(fixture, request):
    server, cluster = request.getfixturevalue(fixture)
    hours = HistoryRequest(HISTORY_END - timedelta(hours=2), HISTORY_END, 3600, frozenset())
    expected = SimulatorMetricsSource(cluster).holders(hours)
    actual = prometheus_source(server.url).holders(hours)
    assert actual.times_s.tolist() == expected.times_s.tolist()
    want = expected.aligned(expected.device_ids)
    got = actual.aligned(expected.device_ids)
    names = lambda h, codes: [[str(h.pods[c]) if c >= 0 else None for c in r] for r in codes]  # noqa: E731
    assert names(actual, got) == names(expected, want)
    # Some GPUs are held, some are not, and the gap of infer-a10-1 (01:40-01:50) leaves
    # its pods holding for the rest of that hour.
    assert (want >= 0).any() and (want < 0).any()


def test_the_oom_forecast_fits_the_same_minutes_from_prometheus(history_prometheus):
    """The forecast rule's per-minute peaks, asked of Prometheus (range queries of
    max_over_time, one a minute over the rule's window), are the simulator's, and the
    same GPUs are warned of: segmenter-finetune's two, at 91 % and rising at 02:00."""
    server, cluster = history_prometheus
    rules = load_rules()
    (rule,) = [r for r in rules if isinstance(r, ForecastRule)]
    request = series_request(rules, SHOWCASE_AT)
    assert request is not None
    expected = SimulatorMetricsSource(cluster).history(request)
    actual = prometheus_source(server.url).history(request)
    (spec,) = request.specs
    assert actual.times_s.tolist() == expected.times_s.tolist() and len(actual.times_s) == 120
    rows = {d.device_id: i for i, d in enumerate(actual.devices)}
    settings = FitSettings(
        rule.min_samples, float(rule.min_span_s), rule.min_fit_r2, rule.restart_drop
    )
    warned: dict[str, set[str]] = {"simulator": set(), "prometheus": set()}
    for i, device in enumerate(expected.devices):
        mine, theirs = expected.values[spec][i], actual.values[spec][rows[device.device_id]]
        if device.node != "spot-a100-1":  # its exporter gap: subqueries repeat into it
            np.testing.assert_allclose(theirs, mine, rtol=1e-9, equal_nan=True)
        for name, values in (("simulator", mine), ("prometheus", theirs)):
            fit = fit_growth(expected.times_s.astype(float), values, rule.threshold, settings)
            if fit.verdict is FitVerdict.RISING and (fit.eta_s or 0) <= rule.horizon_s:
                warned[name].add(f"{device.node}/gpu{device.index}")
    assert warned["simulator"] == warned["prometheus"] == {"train-a100-2/gpu6", "train-a100-2/gpu7"}


def test_budgets_price_the_same_month_from_prometheus(history_prometheus):
    """A budget's month so far, from the hourly history and the exporter's holders as
    Prometheus answers them (two range queries from the month's start), is the
    simulator's: the same spend, hours measured and projection."""
    server, cluster = history_prometheus
    settings = Settings.model_validate(
        {
            "budgets": {
                "monthly": [
                    {"team": "vision", "amount": 150000, "currency": "CNY"},
                    {"pool": "gpu-inference", "amount": 20000, "currency": "CNY"},
                ]
            }
        }
    )
    statuses = {}
    for name, metrics in (
        ("simulator", SimulatorMetricsSource(cluster)),
        ("prometheus", prometheus_source(server.url)),
    ):
        components = Components(
            metrics=metrics,
            cluster=SimulatorClusterSource(cluster),
            rules=load_rules(),
            state=MemoryState(),
            notifier=RecordingNotifier(),
            price_book=load_price_book(),
        )
        gathered = gather(components, settings, SHOWCASE_AT, for_effects=False)
        analysis = analyse(gathered, components.rules, components.price_book, settings)
        statuses[name] = [b.to_dict() for b in analysis.budgets]
    assert statuses["prometheus"] == statuses["simulator"]
    vision, inference = statuses["simulator"]
    # The history holds 12 hours before 04:00 on the 24th: 10 of them by 02:00.
    assert vision["measured_hours"] == 10 and vision["elapsed_hours"] == 554
    assert vision["spent"] == 10 * 8 * 32.0
    assert inference["spent"] > 0
