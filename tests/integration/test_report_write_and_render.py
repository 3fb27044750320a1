"""The report's tables written while its page is rendered (``gpuwatch.jobs.write_and_render``),
against a real folder: the same files and page as one after the other, the tables on a
thread of their own, and a store's failure raised as the store raised it."""

from __future__ import annotations

import threading

import pyarrow.parquet as pq
import pytest

from gpuwatch.config.settings import ReportSettings
from gpuwatch.jobs import write_and_render
from gpuwatch.report.html import render_html
from gpuwatch.report.store import ReportStore, ReportStoreError
from gpuwatch.util.redact import redact
from tests.report_tables import report_data

pytestmark = pytest.mark.integration


def test_the_tables_and_page_are_those_written_one_after_the_other(tmp_path):
    data = report_data("prod-a", gpus=3, hours=5)
    together = ReportSettings(location=str(tmp_path / "together"))
    apart = ReportSettings(location=str(tmp_path / "apart"))

    paths, html = write_and_render(ReportStore.from_settings(together), data, together)
    expected_paths = ReportStore.from_settings(apart).write_tables(data)

    assert html == redact(render_html(data, apart))
    assert [p.replace("together", "apart") for p in paths] == expected_paths
    for mine, theirs in zip(paths, expected_paths, strict=True):
        assert pq.read_table(mine).equals(pq.read_table(theirs))
        assert pq.read_schema(mine).metadata == pq.read_schema(theirs).metadata


class _WatchedStore(ReportStore):
    """A real local store that notes the thread its tables are written on."""

    threads: list[str]

    def write_tables(self, data):  # type: ignore[no-untyped-def]
        self.threads.append(threading.current_thread().name)
        return super().write_tables(data)


def test_the_tables_are_written_beside_the_rendering_not_on_its_thread(tmp_path):
    settings = ReportSettings(location=str(tmp_path / "reports"))
    store = _WatchedStore.from_settings(settings)
    store.threads = []

    write_and_render(store, report_data("prod-a"), settings)

    assert len(store.threads) == 1
    assert store.threads[0] != threading.current_thread().name


def test_a_store_failure_is_the_stores_error_once_the_page_is_rendered(tmp_path):
    settings = ReportSettings(location=str(tmp_path / "reports"))
    store = ReportStore.from_settings(settings)
    (tmp_path / "reports/table=gpu_hourly").write_text("in the way")

    with pytest.raises(ReportStoreError) as caught:
        write_and_render(store, report_data("prod-a"), settings)

    assert caught.value.kind == "not_a_directory"
    assert "table=gpu_hourly/cluster=prod-a" in str(caught.value)
