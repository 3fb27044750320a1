"""The weekly HTML report in a real browser: Debian's headless Chromium.

What a reader opening the Slack attachment gets: a page that draws (the screenshot is
not blank, the heatmap is on it), loads nothing from anywhere, and logs nothing to the
console. A negative control proves the harness would see a console error and a request.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpuwatch.config.settings import ReportSettings
from gpuwatch.report import charts
from gpuwatch.report.data import ReportData, empty_tables
from gpuwatch.report.html import render_html
from tests.integration.browser import PageLoad, load_page
from tests.report_tables import PERIOD, SHIPPED, realistic_report

pytestmark = pytest.mark.integration

WHITE = (255, 255, 255)


def _render(tmp_path: Path, data: ReportData) -> PageLoad:
    page = tmp_path / "report.html"
    page.write_text(render_html(data, SHIPPED), encoding="utf-8")
    return load_page(page)


def _assert_clean(load: PageLoad) -> None:
    assert load.console == (), f"console messages: {load.console}"
    assert load.requests == (), f"the page made requests: {load.requests}"


def _colour_count(image: np.ndarray) -> int:
    packed = image.astype(np.uint32)
    return int(np.unique(packed[..., 0] << 16 | packed[..., 1] << 8 | packed[..., 2]).size)


def _has_colour(image: np.ndarray, rgb: tuple[int, int, int]) -> bool:
    return bool((image == np.array(rgb, np.uint8)).all(axis=2).any())


def test_the_report_draws_loads_nothing_and_logs_nothing(tmp_path: Path):
    load = _render(tmp_path, realistic_report())
    _assert_clean(load)
    image = load.screenshot
    assert image.shape == (2400, 1280, 3)
    # Not blank: many colours, and a good part of the page is not background.
    assert _colour_count(image) > 100
    assert (image != np.array(WHITE, np.uint8)).any(axis=2).mean() > 0.05
    # The heatmap PNG is on the screen, drawn 1:1: the idle GPU's dark cells and the
    # gap's hatching are there in their exact colours.
    assert _has_colour(image, tuple(charts.utilization_colours(np.array([0.0]))[0]))
    assert _has_colour(image, charts.GAP_DARK)
    assert _has_colour(image, charts.GAP_LIGHT)


def test_the_empty_report_draws_loads_nothing_and_logs_nothing(tmp_path: Path):
    load = _render(tmp_path, ReportData("empty-cluster", PERIOD, empty_tables()))
    _assert_clean(load)
    image = load.screenshot
    assert _colour_count(image) > 10  # text and the callout, on white
    assert (image != np.array(WHITE, np.uint8)).any(axis=2).mean() > 0.01


def test_the_harness_sees_a_console_error_and_a_request(tmp_path: Path):
    page = tmp_path / "negative.html"
    page.write_text(
        "<!doctype html><html><body><h1>negative control</h1>"
        '<script>console.error("gpuwatch-negative-control")</script>'
        '<img src="http://127.0.0.1:9/x.png" alt="">'
        "</body></html>",
        encoding="utf-8",
    )
    load = load_page(page)
    assert [m.message for m in load.console] == ["gpuwatch-negative-control"]
    assert load.console[0].source == page.resolve().as_uri()
    assert load.requests == ("http://127.0.0.1:9/x.png",)
    # Chromium's own background requests, if any, are not the page's.
    assert "http://127.0.0.1:9/x.png" not in load.browser_requests
    assert _colour_count(load.screenshot) > 1  # the heading drew


def test_a_template_with_an_external_resource_is_caught(tmp_path: Path):
    """The shipped page's Content-Security-Policy blocks a remote image a user template
    adds, and the browser says so on the console."""
    (tmp_path / "templates").mkdir()
    shipped = (Path(__file__).resolve().parents[2] / "reports" / "weekly.html.j2").read_text()
    (tmp_path / "templates" / "weekly.html.j2").write_text(
        shipped.replace("</header>", '<img src="http://127.0.0.1:9/logo.png" alt=""></header>')
    )
    html = render_html(realistic_report(), ReportSettings(templates=tmp_path / "templates"))
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    load = load_page(page)
    assert load.requests == ()  # blocked before it left the browser
    assert any("Content Security Policy" in m.message for m in load.console), load.console
