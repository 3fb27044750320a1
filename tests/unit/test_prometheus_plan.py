"""Pure parts of the Prometheus source: PromQL, shards, the chunk planner, errors."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuwatch.config.settings import DcgmLabels, DcgmMetricNames, PrometheusSettings
from gpuwatch.model.errors import (
    ConfigError,
    SourceAuthRefused,
    SourceBadQuery,
    SourceTooLarge,
    SourceUnreachable,
)
from gpuwatch.model.metrics import Aggregate, AggregateSpec, Signal
from gpuwatch.promql import QueryBuilder, Shard, shards
from gpuwatch.sources.prometheus.client import Connection, _error_text, _from_status
from gpuwatch.sources.prometheus.planner import instant_shard_count, plan_range, points_in

BUILDER = QueryBuilder(DcgmMetricNames(), DcgmLabels(), 30, "exported_pod")


ALL = Shard()


def _render(spec: AggregateSpec, shard: Shard = ALL) -> list[str]:
    return [p.render(shard, "UUID") for p in BUILDER.parts(spec)]


def test_idle_mean_prefers_gr_engine_and_skips_gaps():
    gr, util = _render(AggregateSpec(Signal.UTIL_RATIO, Aggregate.AVG, 1800))
    assert gr == (
        "sum by (UUID, GPU_I_ID) (sum_over_time(DCGM_FI_PROF_GR_ENGINE_ACTIVE[1799999ms])) / "
        "sum by (UUID, GPU_I_ID) (count_over_time(DCGM_FI_PROF_GR_ENGINE_ACTIVE[1799999ms]))"
    )
    assert "DCGM_FI_DEV_GPU_UTIL" in util
    assert [
        p.scale for p in BUILDER.parts(AggregateSpec(Signal.UTIL_RATIO, Aggregate.AVG, 60))
    ] == [
        1.0,
        0.01,
    ]


def test_memory_ratio_is_used_over_total_with_optional_reserved():
    (query,) = _render(AggregateSpec(Signal.FB_USED_RATIO, Aggregate.MAX, 300))
    # max(used / total) is max(used) / total: a card's framebuffer does not change size.
    assert query.startswith(
        "(max by (UUID, GPU_I_ID) (max_over_time(DCGM_FI_DEV_FB_USED[299999ms]))) / ("
    )
    assert "DCGM_FI_DEV_FB_RESERVED" in query and " or " in query
    assert ":30s]" not in query  # no subquery
    # The denominator is the whole framebuffer, never FB_FREE alone (that ratio passes
    # 0.95 at 49 % use).
    denominator = query.split(" / ", 1)[1]
    assert "DCGM_FI_DEV_FB_USED" in denominator and "DCGM_FI_DEV_FB_FREE" in denominator


def test_shard_matcher_goes_into_every_selector():
    shard = Shard(("a", "b"))
    for query in _render(AggregateSpec(Signal.FB_USED_RATIO, Aggregate.AVG, 300), shard):
        selectors = re.findall(r"DCGM_\w+\{[^}]*\}", query)
        assert selectors and all('UUID=~"(?i)GPU-(a|b).*"' in s for s in selectors)


def test_pod_attached_uses_the_chosen_pod_label():
    (query,) = _render(AggregateSpec(Signal.POD_ATTACHED, Aggregate.MAX, 1800))
    assert 'exported_pod!=""' in query


def _matches(shard: Shard, gpu_uuid: str) -> bool:
    matcher = shard.matcher("UUID")
    if not matcher:
        return True
    pattern = matcher.split("=~", 1)[1].strip('"')
    return re.fullmatch(pattern, gpu_uuid) is not None


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 6), st.lists(st.uuids(), min_size=1, max_size=50))
def test_shards_partition_the_fleet(depth, uuids):
    parts = shards(2**depth)
    assert len(parts) == 2**depth
    for u in uuids:
        gpu_uuid = f"GPU-{u}".upper() if u.int % 2 else f"GPU-{u}"
        assert sum(_matches(p, gpu_uuid) for p in parts) == 1


def test_split_halves_are_disjoint_and_cover():
    left, right = Shard(("3",)).split()
    for i in range(200):
        u = f"GPU-3{uuid.UUID(int=i * 7919).hex[1:]}"
        assert _matches(left, u) != _matches(right, u)


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(1_700_000_000, 1_800_000_000),
    span=st.integers(0, 90 * 86400),
    step=st.sampled_from([15, 30, 60, 300, 3600]),
    series=st.integers(0, 200_000),
    scrape=st.sampled_from([1.0, 10.0, 30.0, 60.0]),
    window=st.sampled_from([60, 300, 3600, 86400]),
    max_points=st.integers(100, 11_000),
    budget=st.integers(10_000, 50_000_000),
)
def test_range_plan_respects_both_limits(
    start, span, step, series, scrape, window, max_points, budget
):
    end = start + span
    plan = plan_range(
        start, end, step, series=series, scrape_interval_s=scrape, window_s=window,
        max_points=max_points, sample_budget=budget,
    )  # fmt: skip
    # Chunks tile [start, last point] exactly, on the step grid, without overlap.
    assert plan.chunks[0].start_s == start
    assert all((c.start_s - start) % step == 0 for c in plan.chunks)
    for before, after in zip(plan.chunks, plan.chunks[1:], strict=False):
        assert after.start_s == before.end_s + step
    assert sum(points_in(c.start_s, c.end_s, step) for c in plan.chunks) == points_in(
        start, end, step
    )
    assert all(points_in(c.start_s, c.end_s, step) <= max_points for c in plan.chunks)
    # The sample budget holds unless even one point per 4096th of the fleet exceeds it.
    if plan.shard_count < 4096:
        assert plan.samples_per_request <= budget


def test_small_range_is_one_request():
    plan = plan_range(0, 7 * 86400, 3600, series=64, scrape_interval_s=60, window_s=3600)
    assert len(plan.chunks) == 1 and plan.shard_count == 1


def test_raw_week_at_scrape_resolution_is_split_by_time():
    plan = plan_range(0, 14 * 86400, 30, series=10, scrape_interval_s=30, window_s=30)
    assert len(plan.chunks) == 4  # 40,321 points, at most 11,000 per request


def test_instant_shard_count():
    assert instant_shard_count(64, 1800, 30, 5_000_000) == 1
    assert instant_shard_count(10_000, 7 * 86400, 30, 5_000_000) == 64


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, SourceAuthRefused),
        (403, SourceAuthRefused),
        (422, SourceTooLarge),
        (503, SourceTooLarge),
        (400, SourceBadQuery),
        (500, SourceUnreachable),
        (429, SourceUnreachable),
    ],
)
def test_status_to_error(status, kind):
    body = repr(b'{"status":"error","error":"went \\"wrong\\""}')
    error = _from_status("http://p", f"HTTP Status Code {status} ({body})", "up")
    assert isinstance(error, kind)
    assert 'went "wrong"' in str(error) and f"HTTP {status}" in str(error)


def test_duplicate_labelset_is_a_bad_query_not_a_size_to_split():
    """An engine that cannot run a query says so with a 422; halving it would not help."""
    body = repr(
        b'{"status":"error","error":"vector cannot contain metrics with the same labelset"}'
    )
    error = _from_status("http://p", f"HTTP Status Code 422 ({body})", "count(x)")
    assert isinstance(error, SourceBadQuery) and "same labelset" in str(error)


def test_a_long_query_is_quoted_where_the_parse_error_is():
    promql = "sum(a)" + " or sum(b)" * 100 + " or sum(broken{)" + " or sum(c)" * 100
    position = promql.index("broken{") + len("broken{") + 1
    body = repr(f'{{"status":"error","error":"1:{position}: parse error: x"}}'.encode())
    error = str(_from_status("http://p", f"HTTP Status Code 400 ({body})", promql))
    assert "broken{)" in error and error.count("…") == 2
    assert len(error) < 450
    short = str(_from_status("http://p", f"HTTP Status Code 400 ({body})", "sum(broken{)"))
    assert short.endswith("(query: sum(broken{))")


def test_error_text_of_non_json_body():
    assert _error_text(repr(b"<html>\n oops </html>")) == "<html> oops </html>"


def test_connection_headers_and_secrets(tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("abc\n")
    settings = PrometheusSettings(
        url="https://mimir/prometheus/", tenant="t1", bearer_token_file=token, ca_file=tmp_path
    )
    connection = Connection.from_settings(settings, {})
    assert connection.url == "https://mimir/prometheus"
    assert connection.headers == {"X-Scope-OrgID": "t1", "Authorization": "Bearer abc"}
    assert connection.verify == str(tmp_path)


def test_connection_missing_secret_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="PW is unset"):
        Connection.from_settings(
            PrometheusSettings(url="http://p", username="u", password_env="PW"), {}
        )
    with pytest.raises(ConfigError, match="cannot read"):
        Connection.from_settings(
            PrometheusSettings(url="http://p", bearer_token_file=tmp_path / "missing"), {}
        )


def test_insecure_and_client_cert(tmp_path: Path):
    settings = PrometheusSettings(
        url="https://p",
        insecure_skip_verify=True,
        cert_file=tmp_path / "c",
        key_file=tmp_path / "k",
    )
    connection = Connection.from_settings(settings, {})
    assert connection.verify is False
    assert connection.cert == (str(tmp_path / "c"), str(tmp_path / "k"))
