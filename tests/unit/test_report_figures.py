"""The weekly report's figures, charts and HTML, from small hand-built tables.

Every money figure is checked to the cent (to the micro-unit, in fact) against sums the
test recomputes from the same tables with pyarrow, independently of the code under test.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from gpuwatch.config.settings import ReportSettings
from gpuwatch.report import charts
from gpuwatch.report.data import NearOom, ReportData, empty_tables
from gpuwatch.report.figures import (
    NO_TEAM,
    compute_figures,
    heatmap,
)
from gpuwatch.report.html import ReportTemplateError, render_html
from tests.report_tables import (
    NEAR_OOM,
    PERIOD,
    SHIPPED,
    action_row,
    assert_money_matches,
    expected_money,
    finding_row,
    gap_row,
    hourly_row,
    hourly_table,
    money_elements,
    realistic_report,
    saving_row,
    tables_of,
)

# --------------------------------------------------------------------------- figures


def test_headline_is_exact_to_the_cent():
    rows = [
        hourly_row(0, util=0.5, price="2.500000"),  # idle 1.25
        hourly_row(1, util=0.2, price="2.500000"),  # idle 2.00
        hourly_row(2, util=None, coverage=0.0, fb_ratio=None, price="2.500000"),  # gap
        hourly_row(3, util=1.0, coverage=0.5, price="2.500000"),  # idle 0
    ]
    figures = compute_figures(
        ReportData(
            "c",
            PERIOD,
            tables_of(
                rows,
                savings=[saving_row("spot", "100.10"), saving_row("sharing", "0.01")],
                actions=[action_row(1, "done"), action_row(2, "done"), action_row(3, "refused")],
            ),
        )
    )
    h = figures.headline
    assert h.gpu_hours == 4
    assert h.covered_gpu_hours == pytest.approx(2.5)
    assert h.cost == {"USD": Decimal("10.000000")}
    assert h.idle_cost == {"USD": Decimal("3.250000")}
    # Weighted by coverage: (0.5 + 0.2 + 1.0 x 0.5) / (1 + 1 + 0.5); the gap not at all.
    assert h.mean_util_ratio == pytest.approx(1.2 / 2.5)
    assert h.net_savings_monthly == {"USD": Decimal("100.110000")}
    assert (h.actions_taken, h.actions_refused) == (2, 1)
    assert figures.previous is None


def test_two_currencies_are_never_added():
    rows = [
        hourly_row(0, gpu="g1", team="a", price="2.000000", currency="USD"),
        hourly_row(0, gpu="g2", node="node-b", team="a", price="10.000000", currency="CNY"),
        hourly_row(1, gpu="g2", node="node-b", team="b", price="10.000000", currency="CNY"),
    ]
    savings = [saving_row("spot", "5", "USD"), saving_row("spot", "50", "CNY")]
    figures = compute_figures(ReportData("c", PERIOD, tables_of(rows, savings=savings)))
    assert figures.headline.cost == {"CNY": Decimal("20.000000"), "USD": Decimal("2.000000")}
    assert figures.headline.net_savings_monthly == {"CNY": Decimal(50), "USD": Decimal(5)}
    team_a = {(r.key, r.currency): r.cost for r in figures.cost_by_team if r.key == "a"}
    assert team_a == {("a", "CNY"): Decimal("10.000000"), ("a", "USD"): Decimal("2.000000")}
    # Shares are within a currency: team a is all of USD and half of CNY.
    shares = {(r.key, r.currency): r.share_ratio for r in figures.cost_by_team}
    assert shares == {("a", "USD"): 1.0, ("a", "CNY"): 0.5, ("b", "CNY"): 0.5}
    assert figures.currencies == ("CNY", "USD")


def test_tables_are_ordered_by_money():
    rows = [
        hourly_row(0, gpu="g1", team="small", pool="p1", util=0.9, price="1.000000"),
        hourly_row(0, gpu="g2", team="large", pool="p2", util=0.9, price="9.000000"),
        hourly_row(0, gpu="g3", team="middle", pool="p3", util=0.0, price="3.000000"),
        hourly_row(1, gpu="g3", team="middle", pool="p3", util=0.0, price="3.000000"),
    ]
    savings = [saving_row("a", "10"), saving_row("b", "300"), saving_row("c", "20")]
    figures = compute_figures(ReportData("c", PERIOD, tables_of(rows, savings=savings)))
    assert [r.key for r in figures.cost_by_team] == ["large", "middle", "small"]
    assert [r.key for r in figures.cost_by_pool] == ["p2", "p3", "p1"]
    # Idle: middle is fully idle (6.00), large 0.90, small 0.10.
    assert [r.key for r in figures.idle_by_team] == ["middle", "large", "small"]
    assert figures.idle_by_team[0].idle_ratio == 1.0
    assert [(s.kind, s.index) for s in figures.savings] == [("b", 1), ("c", 2), ("a", 0)]
    assert figures.savings[0].inputs["gpus"] == 4
    assert figures.savings[0].assumptions == (
        "spot capacity is available",
        "checkpoints every 5 min",
    )


def test_a_gap_is_a_gap_not_idle_time():
    rows = [
        hourly_row(0, util=0.0),
        gap_row(1),
        hourly_row(2, util=0.6, coverage=0.5),
    ]
    figures = compute_figures(ReportData("c", PERIOD, tables_of(rows)))
    values = figures.heatmap.values
    assert values.shape == (1, 168)
    assert values[0, 0] == 0.0  # idle, measured
    assert math.isnan(values[0, 1])  # the gap
    assert values[0, 2] == pytest.approx(0.6)
    assert np.isnan(values[0, 3:]).all()  # no rows at all
    q = figures.quality
    assert (q.gap_gpu_hours, q.incomplete_gpu_hours, q.gpu_hours) == (1, 2, 3)
    assert [(g.node, g.gpu_hours, g.hours) for g in q.node_gaps] == [("node-a", 1, 1)]
    assert q.node_gaps[0].first == PERIOD.start + timedelta(hours=1)
    # The gap is billed, but it is not idle cost; nor are the unseen minutes of the hour
    # half covered: 2.5 x 0.5 x (1 - 0.6).
    assert figures.headline.idle_cost == {"USD": Decimal("2.500000") + Decimal("0.500000")}
    assert figures.idle_by_team[0].measured_cost == pytest.approx(2.5 + 2.5 * 0.5)
    assert figures.idle_by_team[0].idle_ratio == pytest.approx(3.0 / 3.75)


def test_the_heatmap_draws_a_gap_grey_and_idle_dark():
    values = np.array([[0.0, np.nan, 1.0]])
    image = charts.heatmap_pixels(values, cell_w=6, cell_h=6)
    idle, gap, busy = image[:, 0:6], image[:, 6:12], image[:, 12:18]
    assert {tuple(p) for p in idle.reshape(-1, 3)} == {(0x44, 0x01, 0x54)}
    assert {tuple(p) for p in busy.reshape(-1, 3)} == {(0xFD, 0xE7, 0x25)}
    assert {tuple(p) for p in gap.reshape(-1, 3)} == {charts.GAP_LIGHT, charts.GAP_DARK}
    assert decode_up_filtered_png(charts.encode_png(image)).tolist() == image.tolist()


def test_heatmap_rows_are_grouped_when_gpus_exceed_the_maximum():
    rows = []
    for pool, nodes in (("pool-a", 3), ("pool-b", 2)):
        for n in range(nodes):
            for i in range(4):
                gpu = f"{pool}-n{n}-{i}"
                util = 0.25 * i  # GPUs 0..3 of a node at 0, 25, 50, 75 %
                node = f"{pool}-n{n}"
                rows.append(hourly_row(0, gpu=gpu, node=node, index=i, pool=pool, util=util))
                if i % 2:
                    rows.append(gap_row(1, gpu=gpu, node=node, index=i, pool=pool))
                else:
                    rows.append(
                        hourly_row(
                            1, gpu=gpu, node=node, index=i, pool=pool, util=1.0, coverage=0.5
                        )
                    )
    table = hourly_table(rows)
    ungrouped = heatmap(table, PERIOD, max_rows=20)
    assert (ungrouped.gpus, ungrouped.gpus_per_row, ungrouped.values.shape[0]) == (20, 1, 20)
    assert ungrouped.row_labels[:2] == ("pool-a-n0/0", "pool-a-n0/1")

    grouped = heatmap(table, PERIOD, max_rows=8)
    # 12 + 8 GPUs, 8 rows: groups of 3 fit (4 + 3 rows); groups never span a pool.
    assert grouped.gpus_per_row == 3
    assert grouped.row_pools == ("pool-a",) * 4 + ("pool-b",) * 3
    assert grouped.row_labels[0] == "pool-a-n0 (3 GPUs)"
    assert grouped.row_labels[1] == "pool-a-n0 … pool-a-n1 (3 GPUs)"
    # Row 0 = GPUs 0, 1, 2 of pool-a-n0: hour 0 mean of 0, .25, .5; hour 1 GPU 1 is a gap,
    # GPUs 0 and 2 are at 100 % (coverage-weighted: the gap weighs nothing).
    assert grouped.values[0, 0] == pytest.approx(0.25)
    assert grouped.values[0, 1] == pytest.approx(1.0)
    # The last pool-b row holds 2 GPUs (8 = 3 + 3 + 2): GPUs 2 and 3 of pool-b-n1.
    assert grouped.values[6, 0] == pytest.approx((0.5 + 0.75) / 2)
    assert grouped.row_labels[6] == "pool-b-n1 (2 GPUs)"


def test_heatmap_groups_span_pools_only_when_there_are_more_pools_than_rows():
    rows = [hourly_row(0, gpu=f"g{i:02}", pool=f"pool-{i:02}", util=i / 10) for i in range(12)]
    grouped = heatmap(hourly_table(rows), PERIOD, max_rows=8)
    assert (grouped.gpus_per_row, len(grouped.row_labels)) == (2, 6)
    assert grouped.values[1, 0] == pytest.approx((0.2 + 0.3) / 2)
    # 9 GPUs in 8 pools, 8 rows: one row per pool still fits.
    nine = [*rows[:8], hourly_row(0, gpu="g99", pool="pool-00")]
    exactly = heatmap(hourly_table(nine), PERIOD, max_rows=8)
    assert exactly.row_pools == tuple(f"pool-{i:02}" for i in range(8))
    assert exactly.row_labels[0] == "node-a (2 GPUs)"


def test_a_heatmap_row_whose_gpus_all_have_a_gap_stays_nan():
    rows = [gap_row(0, gpu=f"g{i}", index=i) for i in range(10)]
    grouped = heatmap(hourly_table(rows), PERIOD, max_rows=8)
    assert grouped.gpus_per_row == 2
    assert np.isnan(grouped.values).all()


def test_memory_headroom_bins_and_near_oom():
    ratios = [0.0, 0.04, 0.05, 0.051, 0.5, 0.95, 0.951, 0.99, 1.0, None]
    rows = [hourly_row(h, fb_ratio=r) for h, r in enumerate(ratios)]
    findings = [
        finding_row("node-a", "GPU-a-0", 0.97, 3, 1),
        finding_row("node-a", "GPU-a-0", 0.99, 7, 2),
    ]
    tables = tables_of(rows, findings=findings)
    figures = compute_figures(ReportData("c", PERIOD, tables, near_oom=NEAR_OOM))
    m = figures.memory
    assert len(m.edges) == 21 and len(m.counts) == 20
    assert m.measured_gpu_hours == 9
    assert m.counts[0] == 3  # 0, 0.04, 0.05 (bins are (lo, hi], the first includes 0)
    assert m.counts[1] == 1  # 0.051
    assert m.counts[9] == 1  # 0.5
    assert m.counts[18] == 1  # 0.95 exactly is not near OOM
    assert m.counts[19] == m.near_oom_gpu_hours == 3
    assert [f.worst_value for f in m.findings] == [0.99, 0.97]


def test_memory_headroom_follows_the_near_oom_rule_by_role():
    ratios = [0.5, 0.85, 0.9, 0.95, 0.99]
    rows = [hourly_row(h, fb_ratio=r) for h, r in enumerate(ratios)]
    findings = [finding_row("node-a", "GPU-a-0", 0.99, 4, 1)]
    tables = tables_of(rows, findings=findings)
    # The rule renamed and its threshold lowered: the report follows it.
    renamed = compute_figures(ReportData("c", PERIOD, tables, near_oom=NearOom("hbm-full", 0.85)))
    assert renamed.memory.near_oom_gpu_hours == 3  # 0.9, 0.95, 0.99: above 0.85
    assert renamed.memory.near_oom_ratio == 0.85
    assert renamed.memory.findings == ()  # the findings table names gpu-near-oom, not it
    inclusive = NearOom("hbm-full", 0.85, inclusive=True)
    assert (
        compute_figures(
            ReportData("c", PERIOD, tables, near_oom=inclusive)
        ).memory.near_oom_gpu_hours
        == 4
    )
    # No rule with the role: no near-OOM figures, the histogram stays.
    none = compute_figures(ReportData("c", PERIOD, tables)).memory
    assert none.near_oom_gpu_hours is None and none.near_oom_ratio is None
    assert none.findings == () and none.measured_gpu_hours == 5


def test_actions_newest_first_and_counted_by_status():
    actions = [action_row(5, "done"), action_row(50, "refused"), action_row(9, "planned")]
    figures = compute_figures(ReportData("c", PERIOD, tables_of(actions=actions)))
    assert [a.status for a in figures.actions] == ["refused", "planned", "done"]
    assert figures.action_counts == {"done": 1, "planned": 1, "refused": 1}
    assert figures.actions[0].details == {"gpus": 8}


def test_a_saving_with_bad_json_is_shown_and_noted():
    savings = [saving_row("spot", "1", inputs="{not json", assumptions='"one"')]
    figures = compute_figures(ReportData("c", PERIOD, tables_of(savings=savings)))
    assert figures.savings[0].inputs == {"text": "{not json"}
    assert figures.savings[0].assumptions == ("one",)
    assert [n.kind for n in figures.quality.notes] == ["report", "report"]


def test_previous_week_figures():
    figures = compute_figures(realistic_report())
    assert figures.previous is not None
    assert figures.previous.gpu_hours == 168
    assert figures.previous.cost == {"USD": Decimal("336.000000")}
    assert figures.previous.net_savings_monthly == {"USD": Decimal("900.000000")}
    only_hourly = realistic_report(
        previous={"gpu_hourly": realistic_report().previous["gpu_hourly"]}
    )
    previous = compute_figures(only_hourly).previous
    assert previous is not None and previous.net_savings_monthly is None
    assert previous.actions_taken is None


# --------------------------------------------------------------------------- html


def test_every_money_figure_on_the_page_equals_the_parquet_sum():
    data = realistic_report()
    page = render_html(data, SHIPPED)
    found = assert_money_matches(data, page)
    ids = {figure for figure, _, _ in found}
    assert {"cost.team.ml-research", "cost.team.vision", f"cost.team.{NO_TEAM}"} <= ids
    assert {"idle.workload.Deployment/vision/serve", "saving.1", "previous.cost"} <= ids
    # Shown to the cent: the spot saving of 1520.40.
    assert "USD 1,520.40" in page
    assert "no previous week" not in page


def test_money_in_two_currencies_on_the_page():
    rows = [
        hourly_row(0, gpu="g1", team="a", price="2.004000", currency="USD"),
        hourly_row(0, gpu="g2", node="node-b", team="a", price="10.125000", currency="CNY"),
    ]
    data = ReportData("c", PERIOD, tables_of(rows, savings=[saving_row("spot", "7", "EUR")]))
    page = render_html(data, SHIPPED)
    found = assert_money_matches(data, page)
    headline = {(c, v) for figure, c, v in found if figure == "headline.cost"}
    assert headline == {("USD", Decimal("2.004000")), ("CNY", Decimal("10.125000"))}
    assert "no previous week" in page


def test_the_page_loads_nothing_from_anywhere():
    page = render_html(realistic_report(), SHIPPED)
    assert_self_contained(page)
    assert page.count('src="data:image/png;base64,') == 0  # the PNG is inside the SVG
    assert page.count('href="data:image/png;base64,') == 1
    assert "<script" not in page.lower()


def assert_self_contained(page: str) -> None:
    lowered = page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", lowered)
    for needle in ("<script src", "<link", "@import", "url(http", "url(//"):
        assert needle not in lowered, needle
    assert "http://" not in lowered and "https://" not in lowered


def test_the_page_is_deterministic():
    data = realistic_report()
    assert render_html(data, SHIPPED) == render_html(data, SHIPPED)


def test_an_empty_report_renders_and_says_there_is_no_data():
    data = ReportData("empty-cluster", PERIOD, empty_tables())
    page = render_html(data, SHIPPED)
    assert "No data for this period." in page
    assert "no previous week" in page
    assert money_elements(page) == []
    assert_self_contained(page)


def test_text_is_escaped():
    rows = [hourly_row(0, team="<script>alert(1)</script>", workload="a&b")]
    page = render_html(ReportData("<c>", PERIOD, tables_of(rows)), SHIPPED)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<c>" not in page


def test_a_user_template_folder_overrides_the_shipped_one(tmp_path: Path):
    (tmp_path / "weekly.html.j2").write_text(
        '{% from "_macros.html.j2" import money_map %}'
        "<p>Our GPUs cost {{ money_map('headline.cost', f.headline.cost) }}"
        " in {{ period.label }}</p>\n"
    )
    data = realistic_report()
    page = render_html(data, ReportSettings(templates=tmp_path))
    assert page.startswith("<p>Our GPUs cost <span")  # the shipped partial, the user's page
    assert "2026-W48" in page
    assert_money_matches_subset(data, page)


def assert_money_matches_subset(data: ReportData, page: str) -> None:
    expected = expected_money(data)
    found = money_elements(page)
    assert found
    for figure, currency, value in found:
        assert value == expected[(figure, currency)]


def test_a_broken_user_template_names_the_file_and_line(tmp_path: Path):
    template = tmp_path / "weekly.html.j2"
    template.write_text("<h1>{{ f.cluster }}</h1>\n<p>{% if f.empty %}</p>\n")
    with pytest.raises(ReportTemplateError) as caught:
        render_html(realistic_report(), ReportSettings(templates=tmp_path))
    message = str(caught.value)
    assert str(template) in message and "line 2" in message, message


def test_an_unknown_name_in_a_user_template_names_the_file_and_line(tmp_path: Path):
    template = tmp_path / "weekly.html.j2"
    template.write_text("<h1>{{ f.cluster }}</h1>\n\n<p>{{ f.headline.gpu_hourz }}</p>\n")
    with pytest.raises(ReportTemplateError) as caught:
        render_html(realistic_report(), ReportSettings(templates=tmp_path))
    message = str(caught.value)
    assert str(template) in message and "line 3" in message and "gpu_hourz" in message, message


def test_a_template_folder_without_the_page_is_refused(tmp_path: Path):
    with pytest.raises(ReportTemplateError, match=r"weekly\.html\.j2"):
        render_html(realistic_report(), ReportSettings(templates=tmp_path))


# --------------------------------------------------------------------------- helpers


def decode_up_filtered_png(png: bytes) -> np.ndarray:
    """Decode an 8-bit RGB PNG whose scanlines all use the Up filter (what
    ``charts.encode_png`` writes), checking the chunk CRCs on the way."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, defaultdict(bytes)
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = png[position + 4 : position + 8]
        body = png[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", png[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] += body
        position += 12 + length
    width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour) == (8, 2)
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + width * 3)
    assert (raw[:, 0] == 2).all()
    rows = np.cumsum(raw[:, 1:], axis=0, dtype=np.uint8)  # Up: add the row above, mod 256
    return rows.reshape(height, width, 3)
