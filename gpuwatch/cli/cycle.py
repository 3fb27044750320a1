"""``gpuwatch once`` and ``gpuwatch demo``: one analysis cycle, printed and written."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from gpuwatch.cli.common import (
    EXIT_SOURCE_FAILED,
    EXIT_USAGE,
    INSTANT,
    cli,
    fail_config,
    load_settings_or_exit,
)
from gpuwatch.cli.report import write_report
from gpuwatch.config.settings import Settings
from gpuwatch.jobs import cycle_job
from gpuwatch.model.durations import format_duration, rfc3339
from gpuwatch.model.errors import ConfigError
from gpuwatch.model.findings import DataQualityNote, format_value
from gpuwatch.model.result import CycleResult
from gpuwatch.model.savings import CONFIDENCE, METHOD
from gpuwatch.pipeline import Components
from gpuwatch.report.data import ReportPeriod
from gpuwatch.sources.simulator.budgets import DEMO_BUDGET_TIME_ZONE, DEMO_BUDGETS, DEMO_DAYS
from gpuwatch.sources.simulator.layout import SHOWCASE_AT


def _cycle_options(func: Any) -> Any:
    options = [
        click.option("--at", type=INSTANT, help="Evaluate as of this instant (RFC 3339)."),
        click.option("--output", type=click.Choice(["table", "json"]), help="What goes to stdout."),
        click.option(
            "--out",
            "out_dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Folder for the cycle JSON and state.",
        ),
        click.option(
            "--rules",
            "rule_paths",
            multiple=True,
            type=click.Path(exists=True, path_type=Path),
            help="Rule file or folder (repeatable). Default: the shipped rules.",
        ),
        click.option(
            "--prometheus-url",
            help="Read DCGM metrics from this PromQL API (Prometheus, Thanos, Mimir, "
            "VictoriaMetrics) instead of the simulator.",
        ),
        click.option(
            "--cluster-snapshot",
            help="Read nodes and pods from this `kubectl get ... -A -o json` file "
            "(`-`: standard input) instead of the Kubernetes API.",
        ),
        click.option("--gpus", type=int, help="Simulator: GPUs in the cluster."),
        click.option("--days", type=float, help="Simulator: days of history."),
        click.option("--seed", type=int, help="Simulator: random seed."),
        click.option(
            "--dry-run/--no-dry-run",
            default=None,
            help="Plan actions without writing to the cluster (default: dry run).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _flags(**kwargs: Any) -> dict[str, Any]:
    mapping = {
        "at": "at",
        "output": "output.format",
        "out_dir": "output.dir",
        "gpus": "simulator.gpus",
        "days": "simulator.days",
        "seed": "simulator.seed",
        "dry_run": "dry_run",
    }
    flags = {mapping[k]: v for k, v in kwargs.items() if k in mapping and v is not None}
    if kwargs.get("prometheus_url"):
        flags["prometheus.url"] = kwargs["prometheus_url"]
        flags["metrics.source"] = "prometheus"
    if kwargs.get("cluster_snapshot"):
        flags["cluster.snapshot_path"] = kwargs["cluster_snapshot"]
        flags["cluster.source"] = "snapshot"
    if kwargs.get("rule_paths"):
        flags["rules.paths"] = [str(p) for p in kwargs["rule_paths"]]
    return flags


@cli.command()
@_cycle_options
@click.pass_context
def once(ctx: click.Context, **kwargs: Any) -> None:
    """Run one cycle: collect, analyse, notify, write the result."""
    _run(ctx, load_settings_or_exit(ctx, _flags(**kwargs)))


DEMO_APPROVER = "U0PLATFORM"
"""A made-up Slack user id: who the demo's approval request names."""


@cli.command()
@_cycle_options
@click.pass_context
def demo(ctx: click.Context, **kwargs: Any) -> None:
    """Run one cycle on the embedded simulated cluster, at 02:00 of its week.

    At that instant every rule fires once: the README says which simulated workload
    triggers which rule. Writes the cycle JSON into ./gpuwatch-demo unless --out says.
    """
    flags = _flags(**kwargs)
    flags.setdefault("at", SHOWCASE_AT)
    # The simulated pools are open to (dry-run) scale-down, so the demo shows the planner;
    # gpu-training's actions wait for approval in Slack, so it shows the request too.
    flags.setdefault(
        "actions.pools",
        {
            "gpu-training": {"approval": "slack", "approvers": [DEMO_APPROVER]},
            "gpu-inference": {},
        },
    )
    flags.setdefault("output.dir", "gpuwatch-demo")
    # Every demo run shows the messages a first cycle sends; a kept state would make
    # the second run (at the same instant) rightly say nothing new.
    flags.setdefault("state.backend", "memory")
    flags.setdefault("report.location", "gpuwatch-demo/reports")
    # Budgets for the simulated teams, counted in Shanghai's months (the demo's
    # November began at 16:00 UTC on October 31st): vision spends over its budget. The
    # history reaches back before the month began, so that all of it is judged. These
    # are defaults: a config file, GPUWATCH_* variable or flag overrides them.
    defaults = {
        "budgets.time_zone": DEMO_BUDGET_TIME_ZONE,
        "budgets.monthly": DEMO_BUDGETS,
        "simulator.days": DEMO_DAYS,
    }
    settings = load_settings_or_exit(ctx, flags, defaults)
    _run(ctx, settings)
    # The report of the simulated week that ends at the demo's instant.
    at = (settings.at or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    period = ReportPeriod.between(at - timedelta(days=7), at)
    stream = sys.stderr if settings.output.format == "json" else sys.stdout
    write_report(settings, period, stream)


@cli.command()
@_cycle_options
@click.pass_context
def savings(ctx: click.Context, **kwargs: Any) -> None:
    """Run one cycle and print what each change would save, largest first.

    Every figure comes with the inputs its formula used; see docs/cost-and-savings.md.
    """
    flags = _flags(**kwargs)
    flags["notify.console"] = False
    _run(ctx, load_settings_or_exit(ctx, flags), only_savings=True)


def _run(ctx: click.Context, settings: Settings, only_savings: bool = False) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    at = settings.at or now
    age_s = abs((now - at).total_seconds())
    if not settings.dry_run and age_s > settings.actions.max_data_age_s:
        # Writes rest only on live data: a past (or future) instant can be analysed and
        # shown, never acted on.
        click.echo(
            f"gpuwatch: refusing to write: --at {rfc3339(at)} is {format_duration(age_s)} "
            f"from now, beyond actions.max_data_age "
            f"({format_duration(settings.actions.max_data_age_s)}). Drop --no-dry-run to "
            "see what would be done then, or drop --at to act on the cluster now.",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    as_json = settings.output.format == "json"
    console_stream = sys.stderr if as_json else sys.stdout
    # Wide enough for the findings table when piped to a file or a CI log.
    out = Console(file=console_stream, width=None if console_stream.isatty() else 150)

    def starting(components: Components) -> None:
        if not as_json:
            out.print(
                f"[bold]gpuwatch[/] cycle at {rfc3339(at)} on cluster "
                f"[bold]{settings.cluster.name}[/] (metrics: {components.metrics.name}, "
                f"cluster: {components.cluster.name}, {len(components.rules)} rules)\n"
            )

    try:
        run = cycle_job(settings, at, console_stream, push=True, starting=starting)
    except ConfigError as exc:
        fail_config(exc)
    result = run.result
    if as_json:
        document = result.to_dict()
        if only_savings:
            keys = ("at", "cluster", "savings", "savings_total", "savings_excluded")
            document = {key: document[key] for key in keys}
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        if not only_savings:
            _print_table(out, result)
            print_cost(out, result)
            print_actions(out, result)
            print_messages(out, result)
        print_savings(out, result, details=only_savings)
        if run.path is not None:
            out.print(f"Cycle result written to [bold]{run.path}[/]")
    failures = [*result.errors, *([run.write_error] if run.write_error else [])]
    for error in failures:
        click.echo(f"gpuwatch: {error}", err=True)
    if failures:
        sys.exit(EXIT_SOURCE_FAILED)


def _print_table(out: Console, result: CycleResult) -> None:
    table = Table(title=f"{len(result.findings)} findings", title_justify="left")
    for column in (
        "rule",
        "severity",
        "node",
        "gpu",
        "pool",
        "team",
        "workload",
        "value",
        "threshold",
    ):
        table.add_column(column, overflow="fold", no_wrap=column in ("rule", "severity"))
    for f in result.findings:
        table.add_row(
            f.rule,
            str(f.severity),
            f.node,
            "-" if f.gpu_index is None else str(f.gpu_index),
            f.pool or "-",
            f.team or "-",
            f.workload or (f"{f.namespace}/{f.pod}" if f.pod else "-"),
            format_value(f.value, f.unit),
            "-" if f.threshold is None else format_value(f.threshold, f.unit),
        )
    out.print(table)
    by_kind: dict[str, list[DataQualityNote]] = {}
    for note in result.data_quality:
        by_kind.setdefault(note.kind, []).append(note)
    out.print(
        f"\nGPUs: {result.source.gpus_in_metrics} in metrics, {result.source.gpus_in_cluster} "
        f"in the cluster; data-quality notes: {len(result.data_quality)}"
    )
    for kind, notes in sorted(by_kind.items()):
        example = notes[0].message
        more = f" (and {len(notes) - 1} more like it in the JSON)" if len(notes) > 1 else ""
        out.print(f"  - {kind}: {example}{more}")


def print_cost(out: Console, result: CycleResult) -> None:
    if result.cost is None:
        return
    hours = result.cost.window_s / 3600
    for total in result.cost.totals:
        out.print(
            f"\nCost of the last {hours:g} h"
            + (" (example prices)" if result.source.prices_are_examples else "")
            + f": {total.capacity_cost:,.2f} {total.currency} "
            f"({total.gpu_hours:.0f} GPU-hours): allocated {total.allocated_cost:,.2f}, "
            f"unallocated {total.unallocated_cost:,.2f}, idle {total.idle_cost:,.2f}"
        )
    for row in result.cost.unpriced[:5]:
        out.print(f"  unpriced: {row['node']} {row['model']}: {row['reason']}")


def print_actions(out: Console, result: CycleResult) -> None:
    if not result.actions:
        return
    out.print("\nActions" + (" (dry run: nothing written)" if result.dry_run else "") + ":")
    for action in result.actions:
        out.print(
            f"  {action.status:<8} {action.kind} {action.target} ({action.pool}): {action.reason}"
        )


def print_messages(out: Console, result: CycleResult) -> None:
    """One line on what people were told, and what they were not (yet)."""
    counts: dict[str, int] = {}
    for message in result.notifications:
        counts[message.status] = counts.get(message.status, 0) + 1
    told = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"
    summary = result.alerts
    out.print(f"\nMessages: {told}; {summary.firing_groups} alert groups firing")
    held = [
        (summary.held_findings, "findings held back by their rule's `for`"),
        (summary.silenced_findings, "findings silenced"),
        (len(summary.waiting_groups), "groups within group_wait"),
        (len(summary.deferred_groups), "updates deferred to the next cycle"),
        (len(summary.undelivered_groups), "groups undelivered (retried next cycle)"),
        (summary.outbox, "messages waiting in the outbox"),
    ]
    for count, what in held:
        if count:
            out.print(f"  {count} {what}")
    for message in result.notifications:
        if message.status == "failed":
            out.print(
                f"  [red]not delivered[/] to {message.channel}: {message.title}: {message.error}"
            )


def print_savings(out: Console, result: CycleResult, details: bool = False) -> None:
    title = "Savings per 30 days: the plan, lever by lever"
    if result.source.prices_are_examples:
        title += " (EXAMPLE prices: put yours in the price book)"
    table = Table(title=title, title_justify="left")
    for column in ("#", "lever", "scope", "net", "gross", "confidence", "action"):
        table.add_column(column, overflow="fold", no_wrap=column in ("#", "lever", "net", "gross"))
    for saving in result.savings:
        scope = saving.scope.get("workload") or saving.scope.get("pool") or "-"
        if saving.counted_before:
            net = "counted above"
            action = saving.action
        elif saving.blocked:
            net = "blocked"
            action = f"{saving.blocked}; {saving.unblock}" if saving.unblock else saving.blocked
        elif not saving.cash:
            net = f"({saving.reclaimed_gpu_hours_monthly:,.0f} GPU-h)"
            action = saving.action
        else:
            net = f"{saving.net_monthly:,.2f}"
            action = saving.action
        table.add_row(
            str(saving.order),
            saving.kind,
            str(scope),
            net,
            f"{saving.monthly:,.2f} {saving.currency}",
            saving.confidence,
            action,
        )
    out.print(table)
    for total in result.savings_totals:
        out.print(
            f"Net {total.net_monthly:,.2f} {total.currency} per 30 days in cash (the items' net "
            f"add up to it); reclaimed capacity beside it, not in it: "
            f"{total.reclaimed_gpu_hours_monthly:,.0f} GPU-hours, worth "
            f"{total.reclaimed_monthly:,.2f}; blocked levers would save "
            f"{total.blocked_monthly:,.2f} once unblocked"
        )
    if details:
        out.print(f"\n{METHOD}")
        out.print("Confidence: " + "; ".join(f"{k} = {v}" for k, v in CONFIDENCE.items()))
        for saving in result.savings:
            out.print(
                f"\n[bold]{saving.order} {saving.kind}[/] {dict(saving.scope)}: {saving.formula}"
            )
            for key, value in saving.inputs.items():
                out.print(f"    {key} = {value}")
            for assumption in saving.assumptions:
                out.print(f"    assumes: {assumption}")
        for skipped in result.savings_excluded:
            where = skipped.scope.get("workload") or skipped.scope.get("pool")
            out.print(f"  no {skipped.kind} saving for {where}: {skipped.reason}")
