"""The two jobs gpuwatch runs on a schedule, as the command line and the daemon share them.

The cycle job builds the adapters (``gpuwatch.wiring``), runs one cycle
(``gpuwatch.pipeline``) and writes its result; the report job builds, stores, renders
and publishes the weekly report. Configuration errors raise (the command line turns
them into exit code 2, the daemon into a log line and a failed cycle); a cycle's own
failures are in its result. What the jobs return and write is redacted
(``gpuwatch.util.redact``): an error quoting a client's exception carries no secret.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa

from gpuwatch.config.settings import ReportSettings, Settings
from gpuwatch.model.result import CycleResult
from gpuwatch.notify.interactions import Inbox
from gpuwatch.pipeline import Components, run_cycle
from gpuwatch.report.cycle_json import write_cycle_json
from gpuwatch.report.data import ReportData, ReportPeriod
from gpuwatch.report.figures import Headline, compute_figures
from gpuwatch.report.html import render_html
from gpuwatch.report.store import ReportStore, ReportStoreError
from gpuwatch.util.redact import redact, redact_tree
from gpuwatch.weekly.build import build_report, build_tables
from gpuwatch.weekly.teams import trend_weeks
from gpuwatch.wiring import (
    build_components,
    publish_report,
    push_self_metrics,
    sample_interval_s,
)

Stage = Callable[[str], None]
Step = Callable[[int, int], None]


@dataclass(frozen=True)
class CycleRun:
    result: CycleResult
    path: Path | None
    """Where the result JSON was written; None when it could not be (``write_error``)."""
    write_error: str | None = None


def cycle_job(
    settings: Settings,
    at: datetime,
    console: TextIO,
    *,
    push: bool,
    starting: Callable[[Components], None] | None = None,
    inbox: Inbox | None = None,
) -> CycleRun:
    """One cycle as of ``at``: build the adapters, run it, push the self-metrics when
    ``push`` (CronJob mode: the daemon serves its own), write the result JSON.
    ``starting`` is told the adapters before the cycle runs; ``inbox`` holds the clicks
    a daemon's listeners queued since the last cycle. Raises ``ConfigError``
    before anything is read when the settings or rules cannot be used."""
    with build_components(settings, at, console, inbox=inbox) as components:
        if starting is not None:
            starting(components)
        result = run_cycle(components, settings, at)
        if push:
            result = push_self_metrics(settings, components, result)
    result = redact_tree(result)
    path, error = write_result(result, settings.output.dir)
    return CycleRun(result, path, error)


def write_result(result: CycleResult, folder: Path) -> tuple[Path | None, str | None]:
    """(path, None), or (None, why) when the result could not be written: the cycle
    itself happened, and stays counted."""
    try:
        return write_cycle_json(result, folder), None
    except OSError as exc:
        return None, f"cycle result not written to {folder}: {exc.strerror or exc}"


@dataclass(frozen=True)
class Written:
    data: ReportData
    html: str
    paths: list[str]
    """The tables' files and, last, the HTML page."""
    summary: str
    published: list[str]
    """What happened in Slack, in words (empty without Slack)."""


def simulated_days(period: ReportPeriod) -> float:
    """History the simulator needs: the period and the one before it, and a day."""
    return 2 * (period.end - period.start).total_seconds() / 86400 + 1


def make_report(
    settings: Settings,
    period: ReportPeriod,
    console: TextIO,
    stage: Stage | None = None,
    step: Step | None = None,
) -> Written:
    """Build, store, render and publish one report. Raises ``ConfigError``,
    ``SourceError`` or ``ReportStoreError``."""
    if settings.metrics.source == "simulator":
        days = max(settings.simulator.days, simulated_days(period))
        settings = settings.model_copy(
            update={"simulator": settings.simulator.model_copy(update={"days": days})}
        )
    store = ReportStore.from_settings(settings.report)
    interval = sample_interval_s(settings)
    with build_components(settings, period.end, console) as components:
        previous = _previous(store, settings, period, components, interval, stage, step)
        trend = trend_weeks(
            lambda label: _stored(store, settings.cluster.name, label),
            period,
            settings.report.trend_weeks,
        )
        data = build_report(
            components,
            settings,
            period,
            interval,
            previous=previous,
            trend=trend,
            cycles_dir=settings.output.dir,
            progress=step,
            stage=stage,
        )
    if stage:
        stage("writing")
    paths, html = write_and_render(store, data, settings.report)
    page = store.write_html(data.cluster, period, html)
    summary = redact(summary_text(data, page))
    published = publish_report(settings, summary, html, data, components.notifier)
    return Written(data, html, [*paths, page], summary, published)


def write_and_render(
    store: ReportStore, data: ReportData, settings: ReportSettings
) -> tuple[list[str], str]:
    """Write the report's tables while its page is rendered; return the files and the
    (redacted) page. Parquet is encoded by Arrow's C++ outside the interpreter's lock, so
    on two cores the writing costs almost nothing beside the rendering (1 s of the
    10,000-GPU report, ``docs/performance.md``). An error is raised once both are over:
    the page's if the rendering failed, else the store's."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpuwatch-tables") as pool:
        tables = pool.submit(store.write_tables, data)
        html = redact(render_html(data, settings))
        return tables.result(), html


def _previous(
    store: ReportStore,
    settings: Settings,
    period: ReportPeriod,
    components: Components,
    interval: float,
    stage: Stage | None,
    step: Step | None,
) -> dict[str, pa.Table] | None:
    """The previous period's tables from the dataset; when it was never written, its
    hourly table from the history, if the history reaches back that far."""
    before = period.previous()
    try:
        stored = store.read_tables(settings.cluster.name, before.label)
    except ReportStoreError as exc:
        if exc.kind != "incomplete":
            raise
        stored = None
    if stored is not None:
        return stored
    if stage:
        stage("previous period")
    built = build_tables(components, settings, before, interval, findings=False, progress=step)
    hourly = built.tables["gpu_hourly"]
    return {"gpu_hourly": hourly} if hourly.num_rows else None


def _stored(store: ReportStore, cluster: str, label: str) -> dict[str, pa.Table] | None:
    """A week's tables from the dataset; None when never written or half written."""
    try:
        return store.read_tables(cluster, label)
    except ReportStoreError as exc:
        if exc.kind != "incomplete":
            raise
        return None


def _reclaimed(head: Headline) -> str:
    """ ", plus N GPU-hours a month reclaimed": capacity beside the cash, never in it."""
    hours = head.reclaimed_gpu_hours_monthly
    return f", plus {hours:,.0f} GPU-hours a month reclaimed" if hours else ""


def summary_text(data: ReportData, page: str) -> str:
    """A few lines for a terminal and for Slack."""
    head = compute_figures(data).headline

    def amounts(money: Any) -> str:
        return ", ".join(f"{amount:,.2f} {cur}" for cur, amount in sorted(money.items()))

    util = f"{head.mean_util_ratio:.0%}" if head.mean_util_ratio is not None else "no data"
    examples = (
        f" Prices are examples ({data.prices.book}), not yours."
        if data.prices is not None and data.prices.examples
        else ""
    )
    return (
        f"GPU report {data.cluster} {data.period.label}: {head.gpu_hours:,} GPU-hours, "
        f"cost {amounts(head.cost) or 'none priced'}, mean utilization {util}, idle "
        f"{amounts(head.idle_cost) or '0'}, net savings "
        f"{amounts(head.net_savings_monthly or {}) or 'none'} per 30 days"
        f"{_reclaimed(head)}, actions "
        f"taken {head.actions_taken or 0}.{examples}\nHTML: {page}"
    )
