"""What the weekly page and its Parquet files disclose besides the money itself: whose
prices the money is in, and the savings as the plan computes them (the net cash, the
reclaimed capacity beside it, each lever's gross and net, what blocks a lever)."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq

from gpuwatch.config.settings import ReportSettings
from gpuwatch.model.savings import Saving
from gpuwatch.report.data import PricesUsed
from gpuwatch.report.figures import compute_figures
from gpuwatch.report.html import render_html
from gpuwatch.report.schema import MONEY, SAVINGS, TABLES
from gpuwatch.report.store import ReportStore
from gpuwatch.weekly.build import savings_table
from tests.report_tables import PERIOD, SHIPPED, assert_money_matches, realistic_report

END = PERIOD.end
EXAMPLE_BOOK = PricesUsed("rules/pricing.yaml", examples=True)
OWN_BOOK = PricesUsed("/etc/gpuwatch/pricing.yaml", examples=False)


def _headline_callout(page: str) -> str | None:
    """The text of the example-prices callout, when the page has one before its first
    section (the headline)."""
    start = page.find('id="example-prices"')
    if start < 0:
        return None
    assert start < page.index('<section id="headline">'), "the callout is not on the headline"
    return page[start : page.index("</p>", start)]


def test_example_prices_are_said_on_the_headline():
    data = replace(realistic_report(), prices=EXAMPLE_BOOK)
    page = render_html(data, SHIPPED)
    callout = _headline_callout(page)
    assert callout is not None
    assert "Example prices." in callout and "rules/pricing.yaml" in callout
    assert "example: true" in callout
    assert_money_matches(data, page)


def test_a_book_of_ones_own_and_an_unknown_book_say_nothing():
    for prices in (OWN_BOOK, None):
        page = render_html(replace(realistic_report(), prices=prices), SHIPPED)
        assert _headline_callout(page) is None
        assert "Example prices" not in page


def test_every_parquet_file_names_the_price_book_and_whether_it_is_examples(tmp_path):
    store = ReportStore.from_settings(ReportSettings(location=str(tmp_path)))
    for prices, flag in ((EXAMPLE_BOOK, b"true"), (OWN_BOOK, b"false")):
        data = replace(realistic_report(), prices=prices)
        store.write_tables(data)
        for name in TABLES:
            path = tmp_path / f"table={name}/cluster=prod-gpu/week=2026-W48/part-0.parquet"
            metadata = pq.read_schema(path).metadata
            assert metadata[b"gpuwatch.prices_are_examples"] == flag, name
            assert metadata[b"gpuwatch.price_book"] == prices.book.encode(), name
            assert metadata[b"gpuwatch.table"] == name.encode()
        read = store.read_tables("prod-gpu", "2026-W48")
        assert read is not None and read["gpu_hourly"].equals(data.tables["gpu_hourly"])


# --------------------------------------------------------------------------- savings


def _saving(kind: str, monthly: str, **fields: object) -> Saving:
    values: dict[str, object] = {
        "kind": kind,
        "scope": {"pool": "gpu-training"},
        "monthly": Decimal(monthly),
        "currency": "USD",
        "inputs": {"gpus": 8},
        "formula": "gpus x price x 720",
        "assumptions": ("the week is typical",),
        "confidence": "high",
        "action": f"take {kind}",
        "lookback_s": 604800,
        "hours_counted": 160.5,
    }
    values.update(fields)
    return Saving(**values)  # type: ignore[arg-type]


PLAN = (
    # The plan's order: release a node (cash), share (reclaimed), spot (cash, part of
    # its GPU-hours already claimed by the release), a blocked release.
    _saving(
        "release",
        "1000",
        order=1,
        net_monthly=Decimal("1000"),
        nodes=("train-3",),
        gpu_uuids=("GPU-3a", "GPU-3b"),
    ),
    _saving(
        "sharing",
        "400",
        order=2,
        cash=False,
        reclaimed_gpu_hours_monthly=150.0,
        reclaimed_monthly=Decimal("400"),
    ),
    _saving("spot", "2500.123456789", order=3, net_monthly=Decimal("1900.5")),
    _saving(
        "release",
        "750",
        order=1,
        blocked="a pending pod of research/big-sweep needs the pool",
        unblock="give research/big-sweep room in another pool",
        nodes=("train-4",),
    ),
)


def test_the_savings_table_holds_every_figure_the_plan_computed():
    table = savings_table(PLAN, END)
    rows = table.to_pylist()
    assert [(r["kind"], r["order"], r["monthly"]) for r in rows] == [
        ("release", 1, Decimal("1000.000000")),
        ("release", 1, Decimal("750.000000")),  # blocked: net 0, after the one that is not
        ("sharing", 2, Decimal("400.000000")),
        ("spot", 3, Decimal("2500.123457")),  # to the micro-unit, as the column holds it
    ]
    first, blocked, sharing, spot = rows
    assert (first["net_monthly"], first["cash"]) == (Decimal("1000.000000"), True)
    assert json.loads(first["nodes"]) == ["train-3"]
    assert json.loads(first["gpus"]) == ["GPU-3a", "GPU-3b"]
    assert (first["lookback_s"], first["hours_counted"]) == (604800, 160.5)
    assert blocked["net_monthly"] == Decimal(0) and blocked["blocked"].startswith("a pending")
    assert blocked["unblock"] == "give research/big-sweep room in another pool"
    assert (sharing["cash"], sharing["net_monthly"]) == (False, Decimal(0))
    assert sharing["reclaimed_gpu_hours_monthly"] == 150.0
    assert sharing["reclaimed_monthly"] == Decimal("400.000000")
    assert spot["net_monthly"] == Decimal("1900.500000")


def test_the_headline_is_the_net_cash_with_reclaimed_capacity_beside_it():
    data = replace(
        realistic_report(),
        tables={**realistic_report().tables, "savings": savings_table(PLAN, END)},
    )
    figures = compute_figures(data)
    head = figures.headline
    assert head.net_savings_monthly == {"USD": Decimal("2900.500000")}  # 1000 + 1900.50
    assert head.reclaimed_gpu_hours_monthly == 150.0
    assert head.reclaimed_monthly == {"USD": Decimal("400.000000")}
    assert head.blocked_monthly == {"USD": Decimal("750.000000")}
    page = render_html(data, SHIPPED)
    found = assert_money_matches(data, page)
    shown = {(figure, value) for figure, _, value in found}
    assert ("headline.net_savings", Decimal("2900.500000")) in shown
    assert ("headline.reclaimed", Decimal("400.000000")) in shown
    # Each lever's net beside its gross; the reclaimed one's value, never a net.
    assert {("saving.3", Decimal("2500.123457")), ("saving_net.3", Decimal("1900.500000"))} <= shown
    assert ("saving_reclaimed.2", Decimal("400.000000")) in shown
    assert not any(figure == "saving_net.2" for figure, _ in shown)
    assert "150 GPU-hours" in page
    # The blocked lever: its reason and what would unblock it.
    assert "a pending pod of research/big-sweep needs the pool" in page
    assert "give research/big-sweep room in another pool" in page
    # The net column adds up to the headline.
    nets = sum(v for figure, v in shown if figure.startswith("saving_net."))
    assert nets == Decimal("2900.500000")


def test_a_week_written_before_net_savings_is_not_read_as_zero():
    old = realistic_report()
    previous = dict(old.previous or {})
    savings = previous["savings"]
    nulls = pa.nulls(savings.num_rows, MONEY)
    previous["savings"] = savings.set_column(
        savings.schema.get_field_index("net_monthly"), SAVINGS.field("net_monthly"), nulls
    )
    data = replace(old, previous=previous)
    figures = compute_figures(data)
    assert figures.previous is not None and figures.previous.net_savings_monthly is None
    page = render_html(data, SHIPPED)
    assert "not recorded last week" in page
    assert_money_matches(data, page)
