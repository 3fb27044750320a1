"""What the weekly page and its Parquet files disclose besides the money: whose prices
the money is in."""

from __future__ import annotations

from dataclasses import replace

import pyarrow.parquet as pq

from gpuwatch.config.settings import ReportSettings
from gpuwatch.report.data import PricesUsed
from gpuwatch.report.html import render_html
from gpuwatch.report.schema import TABLES
from gpuwatch.report.store import ReportStore
from tests.report_tables import SHIPPED, assert_money_matches, realistic_report

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
