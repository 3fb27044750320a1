"""``gpuwatch report``: the weekly Parquet dataset and HTML page, and its Slack summary."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import click
import pyarrow as pa
from rich.console import Console
from rich.progress import Progress

from gpuwatch.cli.common import EXIT_SOURCE_FAILED, INSTANT, cli, fail_config, load_settings_or_exit
from gpuwatch.config.settings import Settings
from gpuwatch.model.errors import ConfigError, SourceError
from gpuwatch.report.data import ReportData, ReportPeriod
from gpuwatch.report.figures import compute_figures
from gpuwatch.report.html import render_html
from gpuwatch.report.store import ReportStore, ReportStoreError
from gpuwatch.weekly.build import build_report, build_tables
from gpuwatch.wiring import build_components, publish_report, sample_interval_s


@dataclass(frozen=True)
class Written:
    data: ReportData
    html: str
    tables: list[str]


@cli.command()
@click.option("--week", help="ISO week, e.g. 2026-W48. Default: the last full week.")
@click.option("--from", "start", type=INSTANT, help="Start of any range (whole hours).")
@click.option("--to", "end", type=INSTANT, help="End of that range (exclusive).")
@click.option(
    "--out", "location", help="Folder or URI (s3://...) to write to; default report.location."
)
@click.option("--prometheus-url", help="Read from this PromQL API instead of the simulator.")
@click.option("--cluster-snapshot", help="Cluster objects from `kubectl get -o json` output.")
@click.option("--gpus", type=int, help="Simulator: GPUs in the cluster.")
@click.pass_context
def report(ctx: click.Context, **kwargs: Any) -> None:
    """Write a period's GPU report: Parquet tables and one self-contained HTML file.

    Posts a summary with the HTML attached to Slack when a bot token is configured.
    """
    week, start, end = kwargs["week"], kwargs["start"], kwargs["end"]
    try:
        if week and (start or end):
            raise ValueError("give --week or --from/--to, not both")
        if week:
            period = ReportPeriod.iso_week(week)
        elif start or end:
            if not (start and end):
                raise ValueError("--from and --to go together")
            period = ReportPeriod.between(start, end)
        else:
            period = ReportPeriod.last_full_week(datetime.now(UTC))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    flags: dict[str, Any] = {}
    if kwargs["location"]:
        flags["report.location"] = kwargs["location"]
    if kwargs["prometheus_url"]:
        flags.update({"prometheus.url": kwargs["prometheus_url"], "metrics.source": "prometheus"})
    if kwargs["cluster_snapshot"]:
        flags.update(
            {"cluster.snapshot_path": kwargs["cluster_snapshot"], "cluster.source": "snapshot"}
        )
    if kwargs["gpus"]:
        flags["simulator.gpus"] = kwargs["gpus"]
    settings = load_settings_or_exit(ctx, flags)
    written = write_report(settings, period, sys.stdout)
    click.echo(f"Report written to {written.tables[0].rsplit('/table=', 1)[0]}", err=True)


def simulated_days(period: ReportPeriod) -> float:
    """History the simulator needs: the period and the one before it, and a day."""
    return 2 * (period.end - period.start).total_seconds() / 86400 + 1


def write_report(settings: Settings, period: ReportPeriod, console: TextIO) -> Written:
    """Build, store, render and publish one report; exits on a source or store failure
    (after saying which), as a cycle does."""
    if settings.metrics.source == "simulator":
        days = max(settings.simulator.days, simulated_days(period))
        settings = settings.model_copy(
            update={"simulator": settings.simulator.model_copy(update={"days": days})}
        )
    err = Console(stderr=True)
    try:
        components = build_components(settings, period.end, console)
        store = ReportStore.from_settings(settings.report)
    except ConfigError as exc:
        fail_config(exc)
    except ReportStoreError as exc:
        _fail(str(exc))
    interval = sample_interval_s(settings)
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("report", total=None)

        def stage(name: str) -> None:
            progress.update(task, description=f"report: {name}", completed=0, total=None)

        def step(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            previous = _previous(store, settings, period, components, interval, stage, step)
            data = build_report(
                components,
                settings,
                period,
                interval,
                previous=previous,
                cycles_dir=settings.output.dir,
                progress=step,
                stage=stage,
            )
            stage("writing")
            tables = store.write_tables(data)
            html = render_html(data, settings.report)
            page = store.write_html(data.cluster, period, html)
        except SourceError as exc:
            _fail(f"metrics or cluster ({exc.kind}): {exc}")
        except ReportStoreError as exc:
            _fail(str(exc))
        except ConfigError as exc:
            fail_config(exc, "report template")
    summary = summary_text(data, page)
    console.write(summary + "\n")
    for line in publish_report(settings, summary, html, data, console):
        err.print(line)
    return Written(data, html, [*tables, page])


def _previous(
    store: ReportStore,
    settings: Settings,
    period: ReportPeriod,
    components: Any,
    interval: float,
    stage: Any,
    step: Any,
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
    stage("previous period")
    built = build_tables(components, settings, before, interval, findings=False, progress=step)
    hourly = built.tables["gpu_hourly"]
    return {"gpu_hourly": hourly} if hourly.num_rows else None


def summary_text(data: ReportData, page: str) -> str:
    """A few lines for a terminal and for Slack."""
    figures = compute_figures(data)
    head = figures.headline
    money = ", ".join(f"{amount:,.2f} {cur}" for cur, amount in sorted(head.cost.items()))
    idle = ", ".join(f"{amount:,.2f} {cur}" for cur, amount in sorted(head.idle_cost.items()))
    util = f"{head.mean_util_ratio:.0%}" if head.mean_util_ratio is not None else "no data"
    savings = ", ".join(
        f"{amount:,.2f} {cur}" for cur, amount in sorted((head.savings_monthly or {}).items())
    )
    return (
        f"GPU report {data.cluster} {data.period.label}: {head.gpu_hours:,} GPU-hours, "
        f"cost {money or 'none priced'}, mean utilization {util}, idle {idle or '0'}, "
        f"savings available {savings or 'none'} per 30 days, actions taken "
        f"{head.actions_taken or 0}.\nHTML: {page}"
    )


def _fail(message: str) -> None:
    click.echo(f"gpuwatch: {message}", err=True)
    sys.exit(EXIT_SOURCE_FAILED)
