"""The weekly report end to end: from a real Prometheus, through the command line, to
object storage, a browser and Slack."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from gpuwatch.analysis.pricing import load_price_book
from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.config.settings import ReportSettings, Settings
from gpuwatch.notify.console import RecordingNotifier
from gpuwatch.pipeline import Components
from gpuwatch.report.data import ReportData, ReportPeriod
from gpuwatch.report.figures import compute_figures
from gpuwatch.report.html import render_html
from gpuwatch.report.store import ReportStore
from gpuwatch.sources.simulator import SimulatorClusterSource, SimulatorMetricsSource
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from gpuwatch.state.base import MemoryState
from gpuwatch.weekly.build import build_report
from tests.builders import run_gpuwatch
from tests.integration.browser import load_page
from tests.integration.conftest import HISTORY_END
from tests.integration.moto_s3 import (
    ACCESS_KEY,
    SECRET_KEY,
    MotoS3,
    moto_s3_fixture,  # noqa: F401
)
from tests.integration.slack_server import TOKEN, SlackServer, slack_server_fixture  # noqa: F401
from tests.integration.test_prometheus_source import prometheus_source
from tests.report_tables import expected_money, money_elements

pytestmark = pytest.mark.integration
SETTINGS = Settings.model_validate({"prometheus": {"scrape_interval_s": 60}})


def components(metrics, cluster) -> Components:
    return Components(
        metrics=metrics,
        cluster=SimulatorClusterSource(cluster),
        rules=tuple(load_rules()),
        state=MemoryState(),
        notifier=RecordingNotifier(),
        price_book=load_price_book(),
    )


def test_a_prometheus_outage_is_a_gap_not_idle_time(history_prometheus):
    server, cluster = history_prometheus
    # Prometheus holds the last 12 hours: the first 2 of these 14 are an outage.
    period = ReportPeriod.between(HISTORY_END - timedelta(hours=14), HISTORY_END)
    report = build_report(
        components(prometheus_source(server.url), cluster), SETTINGS, period, 60.0
    )
    hourly = report.tables["gpu_hourly"].to_pandas()
    outage = hourly[hourly["hour"] < (period.start + timedelta(hours=2))]
    assert len(outage) and (outage["coverage_ratio"] == 0).all()
    assert outage["util_mean_ratio"].isna().all() and outage["idle_cost"].isna().all()
    assert outage["cost"].notna().all()  # the GPUs were there, and paid for
    figures = compute_figures(report)
    assert np.isnan(figures.heatmap.values[:, :2]).all()
    assert not np.isnan(figures.heatmap.values[:, 2:]).all()

    # Where Prometheus has data, the hourly figures are the simulator's own.
    simulated = build_report(
        components(SimulatorMetricsSource(cluster), cluster),
        SETTINGS,
        ReportPeriod.between(period.start + timedelta(hours=2), period.end),
        60.0,
    ).tables["gpu_hourly"]
    measured = report.tables["gpu_hourly"].filter(
        pc.greater_equal(report.tables["gpu_hourly"]["hour"], simulated["hour"][0])
    )
    key = ["device_id", "hour"]
    left = measured.to_pandas().sort_values(key).reset_index(drop=True)
    right = simulated.to_pandas().sort_values(key).reset_index(drop=True)
    for column in ("util_mean_ratio", "util_p95_ratio", "coverage_ratio", "power_mean_w"):
        np.testing.assert_allclose(left[column], right[column], rtol=1e-9, err_msg=column)
    for column in ("pod", "namespace", "team", "cost", "idle_cost"):
        assert left[column].tolist() == right[column].tolist(), column


def test_an_empty_week_gives_a_valid_empty_report(history_prometheus, tmp_path):
    server, cluster = history_prometheus
    period = ReportPeriod.between(
        HISTORY_END - timedelta(days=30), HISTORY_END - timedelta(days=23)
    )
    report = build_report(
        components(prometheus_source(server.url), cluster), SETTINGS, period, 60.0
    )
    assert report.tables["gpu_hourly"].num_rows == 0
    assert report.tables["findings"].num_rows == 0
    store = ReportStore.from_settings(ReportSettings(location=str(tmp_path / "r")))
    store.write_tables(report)
    page = render_html(report, ReportSettings())
    assert "No data for this period" in page
    again = store.read_tables(report.cluster, period.label)
    assert again is not None and again["gpu_hourly"].num_rows == 0


def test_the_demo_writes_a_report_whose_money_is_the_parquet_sums_and_that_opens_clean(
    tmp_path: Path,
):
    run = run_gpuwatch("demo", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "GPU report simulated 2026-11-17T02_2026-11-24T02" in run.stdout
    root = tmp_path / "gpuwatch-demo" / "reports"
    store = ReportStore.from_settings(ReportSettings(location=str(root)))
    period = ReportPeriod.between(SHOWCASE_AT - timedelta(days=7), SHOWCASE_AT)
    tables = store.read_tables("simulated", period.label)
    assert tables is not None
    assert tables["findings"].num_rows > 0 and tables["savings"].num_rows > 0
    # The demo's gpu-training pool is under approval in Slack: its scale-down waits.
    assert {"awaiting_approval", "refused"} <= set(tables["actions"]["status"].to_pylist())
    html = root / "html" / "cluster=simulated" / "latest.html"
    page = html.read_text()
    # The shipped price book is examples: the page and every file say so.
    assert 'id="example-prices"' in page and "Prices are examples" in run.stdout
    for name in tables:
        part = root / f"table={name}/cluster=simulated/week={period.label}/part-0.parquet"
        metadata = pq.read_schema(part).metadata
        assert metadata[b"gpuwatch.prices_are_examples"] == b"true", name
        assert metadata[b"gpuwatch.price_book"].endswith(b"pricing.yaml"), name
    expected = expected_money(ReportData("simulated", period, tables))
    found = [m for m in money_elements(page) if not m[0].startswith("previous.")]
    assert len(found) > 10
    for figure, currency, value in found:
        assert value == expected[(figure, currency)], figure

    load = load_page(html)
    assert load.console == () and load.requests == ()
    assert len(np.unique(load.screenshot.reshape(-1, load.screenshot.shape[-1]), axis=0)) > 100


def test_report_to_s3_and_to_slack_from_the_command_line(
    moto_s3: MotoS3, slack_server: SlackServer, tmp_path: Path
):
    bucket = moto_s3.create_bucket("fleet")
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",
        "GPUWATCH_REPORT__S3_ENDPOINT_URL": moto_s3.endpoint_url,
        "GPUWATCH_REPORT__S3_REGION": "us-east-1",
        "SLACK_BOT_TOKEN": TOKEN,
        "GPUWATCH_NOTIFY__SLACK__BASE_URL": slack_server.base_url,
        "GPUWATCH_REPORT__SLACK_CHANNEL": "#gpu-reports",
    }
    run = run_gpuwatch(
        "report",
        "--from",
        "2026-11-23T00:00:00Z",
        "--to",
        "2026-11-24T00:00:00Z",
        "--out",
        f"s3://{bucket}/gpu",
        cwd=tmp_path,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    keys = {o["Key"] for o in moto_s3.client().list_objects_v2(Bucket=bucket)["Contents"]}
    label = "2026-11-23T00_2026-11-24T00"
    assert f"gpu/table=gpu_hourly/cluster=simulated/week={label}/part-0.parquet" in keys
    assert "gpu/html/cluster=simulated/latest.html" in keys
    store = ReportStore.from_settings(
        moto_s3.settings(f"s3://{bucket}/gpu").model_copy(update={"s3_region": "us-east-1"})
    )
    dataset = store.dataset("gpu_hourly")
    assert isinstance(dataset, ds.Dataset)
    assert dataset.count_rows() == 64 * 24

    (message,) = slack_server.messages("#gpu-reports")
    assert message.text.startswith(f"GPU report simulated {label}: 1,536 GPU-hours")
    (attached,) = slack_server.files.values()
    assert attached.filename == f"gpuwatch-simulated-{label}.html"
    assert attached.content.startswith(b"<!doctype html>") or b"<html" in attached.content[:200]
    assert TOKEN not in run.stdout + run.stderr
    assert json.dumps(env["AWS_SECRET_ACCESS_KEY"]).strip('"') not in run.stdout + run.stderr
