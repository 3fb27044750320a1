"""``gpuwatch report``: the weekly Parquet dataset and HTML page, and its Slack summary."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO

import click
from rich.console import Console

from gpuwatch.cli.common import (
    EXIT_SOURCE_FAILED,
    INSTANT,
    cli,
    fail_config,
    load_settings_or_exit,
    progress_display,
)
from gpuwatch.config.settings import Settings
from gpuwatch.jobs import Written, make_report
from gpuwatch.model.errors import ConfigError, SourceError
from gpuwatch.report.data import ReportPeriod
from gpuwatch.report.store import ReportStoreError


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
@click.option(
    "--fleet",
    is_flag=True,
    help="Read every cluster's week from the dataset at the location (--out, else "
    "report.location) and write one page over the fleet; --week defaults to the newest "
    "week written.",
)
@click.pass_context
def report(ctx: click.Context, **kwargs: Any) -> None:
    """Write a period's GPU report: Parquet tables and one self-contained HTML file.

    Posts a summary with the HTML attached to Slack when a bot token is configured.
    """
    week, start, end = kwargs["week"], kwargs["start"], kwargs["end"]
    if kwargs["fleet"]:
        _fleet(ctx, kwargs)
        return
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
    click.echo(f"Report written to {written.paths[0].rsplit('/table=', 1)[0]}", err=True)


def _fleet(ctx: click.Context, kwargs: dict[str, Any]) -> None:
    """``report --fleet``: the fleet page of a week from the dataset, nothing collected."""
    alone = ("start", "end", "prometheus_url", "cluster_snapshot", "gpus")
    if any(kwargs[name] for name in alone):
        raise click.BadParameter("--fleet reads the dataset: it takes --week and --out only")
    week = kwargs["week"]
    if week:
        try:
            week = ReportPeriod.iso_week(week).label
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
    flags = {"report.location": kwargs["location"]} if kwargs["location"] else {}
    settings = load_settings_or_exit(ctx, flags)
    # DuckDB loads only here: every other command, and the daemon, start without it.
    from gpuwatch.report.fleet_html import write_fleet_report  # noqa: PLC0415

    err = Console(stderr=True)
    with progress_display(err) as progress:
        task = progress.add_task("fleet report", total=None)

        def step(done: int, total: int) -> None:
            if done < total:
                progress.update(task, description="fleet: downloading", completed=done, total=total)
            else:  # the queries next
                progress.update(task, description="fleet: querying", completed=0, total=None)

        try:
            written = write_fleet_report(settings.report, week, step)
        except ConfigError as exc:
            fail_config(exc)
        except ReportStoreError as exc:
            _fail(str(exc))
    click.echo(written.summary)
    click.echo(f"Fleet report written to {written.path}", err=True)


def write_report(settings: Settings, period: ReportPeriod, console: TextIO) -> Written:
    """``make_report`` with a progress display; exits on a failure, saying which."""
    err = Console(stderr=True)
    with progress_display(err) as progress:
        task = progress.add_task("report", total=None)

        def stage(name: str) -> None:
            progress.update(task, description=f"report: {name}", completed=0, total=None)

        def step(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            written = make_report(settings, period, console, stage, step)
        except ConfigError as exc:
            fail_config(exc)
        except SourceError as exc:
            _fail(f"metrics or cluster ({exc.kind}): {exc}")
        except ReportStoreError as exc:
            _fail(str(exc))
    console.write(written.summary + "\n")
    for line in written.published:
        err.print(line)
    return written


def _fail(message: str) -> NoReturn:
    click.echo(f"gpuwatch: {message}", err=True)
    sys.exit(EXIT_SOURCE_FAILED)
