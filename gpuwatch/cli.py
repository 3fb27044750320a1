"""The ``gpuwatch`` command line.

Exit codes: 0 the cycle ran (findings or not); 1 the cycle ran but a source failed, so
nothing was judged; 2 bad usage, settings or rules.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from gpuwatch import __version__
from gpuwatch.analysis.rules.loader import load_rules, rule_files
from gpuwatch.config.docs import settings_markdown
from gpuwatch.config.load import load_settings
from gpuwatch.config.settings import Settings, SimulatorSettings
from gpuwatch.model.durations import parse_duration_s, parse_instant, rfc3339
from gpuwatch.model.errors import ConfigError, SourceError
from gpuwatch.model.findings import DataQualityNote, format_value
from gpuwatch.model.metrics import (
    Aggregate,
    AggregateSpec,
    HistoryFrame,
    HistoryRequest,
    SeriesBlock,
    Signal,
)
from gpuwatch.model.result import CycleResult
from gpuwatch.pipeline import run_cycle
from gpuwatch.report.cycle_json import write_cycle_json
from gpuwatch.sources.kube_objects import kube_list, state_to_kube
from gpuwatch.sources.simulator import SimulatedCluster
from gpuwatch.sources.simulator.exposition import FAMILY_NAMES, write_openmetrics
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from gpuwatch.sources.simulator.serve import ExporterServer
from gpuwatch.wiring import build_components, build_metrics_source

EXIT_SOURCE_FAILED = 1
EXIT_USAGE = 2


class _Instant(click.ParamType):
    name = "instant"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            return parse_instant(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


INSTANT = _Instant()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gpuwatch")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="GPUWATCH_CONFIG",
    help="YAML settings file (see docs/settings.md). Env: GPUWATCH_CONFIG.",
)
@click.option("--log-level", default="WARNING", show_default=True, help="Python log level.")
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None, log_level: str) -> None:
    """GPU cost and utilization watch for Kubernetes clusters that run AI work."""
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = {"config_file": config_file}


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


def _settings(ctx: click.Context, flags: dict[str, Any]) -> Settings:
    try:
        return load_settings(ctx.obj["config_file"], os.environ, flags)
    except ConfigError as exc:
        _fail_config(exc)


def _fail_config(exc: ConfigError) -> Any:
    click.echo("gpuwatch: invalid configuration:", err=True)
    for problem in exc.problems:
        click.echo(f"  {problem}", err=True)
    sys.exit(EXIT_USAGE)


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
    _run(ctx, _settings(ctx, _flags(**kwargs)))


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
    flags.setdefault("output.dir", "gpuwatch-demo")
    _run(ctx, _settings(ctx, flags))


def _run(ctx: click.Context, settings: Settings) -> None:
    at = settings.at or datetime.now(UTC).replace(microsecond=0)
    as_json = settings.output.format == "json"
    console_stream = sys.stderr if as_json else sys.stdout
    try:
        components = build_components(settings, at, console_stream)
    except ConfigError as exc:
        _fail_config(exc)
    # Wide enough for the findings table when piped to a file or a CI log.
    out = Console(file=console_stream, width=None if console_stream.isatty() else 150)
    if not as_json:
        out.print(
            f"[bold]gpuwatch[/] cycle at {rfc3339(at)} on cluster "
            f"[bold]{settings.cluster.name}[/] (metrics: {components.metrics.name}, "
            f"cluster: {components.cluster.name}, {len(components.rules)} rules)\n"
        )
    result = run_cycle(components, settings, at)
    path = write_cycle_json(result, settings.output.dir)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_table(out, result)
        out.print(f"Cycle result written to [bold]{path}[/]")
    if not result.ok:
        for error in result.errors:
            click.echo(f"gpuwatch: {error}", err=True)
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


HISTORY_COLUMNS = (
    ("util_avg_ratio", Signal.UTIL_RATIO, Aggregate.AVG),
    ("fb_used_max_ratio", Signal.FB_USED_RATIO, Aggregate.MAX),
    ("temp_max_c", Signal.TEMP_C, Aggregate.MAX),
    ("power_avg_w", Signal.POWER_W, Aggregate.AVG),
    ("samples", Signal.UTIL_RATIO, Aggregate.COUNT),
)


@cli.command()
@click.option("--from", "start", type=INSTANT, required=True, help="Start (exclusive).")
@click.option("--to", "end", type=INSTANT, required=True, help="End (inclusive).")
@click.option(
    "--step",
    default="1h",
    show_default=True,
    help="Resolution: each row aggregates one step (30m, 1h, 1d).",
)
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Parquet (.parquet) or CSV (.csv) file to write.",
)
@click.option("--prometheus-url", help="Read from this PromQL API instead of the simulator.")
@click.option("--gpus", type=int, help="Simulator: GPUs in the cluster.")
@click.pass_context
def history(
    ctx: click.Context,
    start: datetime,
    end: datetime,
    step: str,
    out_file: Path,
    prometheus_url: str | None,
    gpus: int | None,
) -> None:
    """Per-GPU aggregates at every step of a range, downsampled where the data lives."""
    try:
        step_s = parse_duration_s(step)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--step") from exc
    if step_s <= 0 or end <= start:
        raise click.BadParameter("expected --to after --from and a positive --step")
    if out_file.suffix not in (".parquet", ".csv"):
        raise click.BadParameter("expected a .parquet or .csv file", param_hint="--out")
    flags: dict[str, Any] = {"simulator.gpus": gpus}
    if prometheus_url:
        flags.update({"prometheus.url": prometheus_url, "metrics.source": "prometheus"})
    settings = _settings(ctx, flags)
    # The simulator's history must reach back to --from.
    days = max(settings.simulator.days, (end - start).total_seconds() / 86400 + 1)
    simulated = SimulatedCluster(settings.simulator.model_copy(update={"days": days}), end)
    try:
        source = build_metrics_source(settings, os.environ, simulated)
    except ConfigError as exc:
        _fail_config(exc)
    columns = [(name, AggregateSpec(signal, aggregate, step_s))
               for name, signal, aggregate in HISTORY_COLUMNS]  # fmt: skip
    request = HistoryRequest(start, end, step_s, frozenset(spec for _, spec in columns))
    err = Console(stderr=True)
    try:
        with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
            task = progress.add_task("collecting history", total=None)
            frame = source.history(
                request, lambda done, total: progress.update(task, completed=done, total=total)
            )
    except SourceError as exc:
        click.echo(f"gpuwatch: metrics ({source.name}, {exc.kind}): {exc}", err=True)
        sys.exit(EXIT_SOURCE_FAILED)
    table = history_table(frame, columns, settings.cluster.name)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if out_file.suffix == ".parquet":
        pq.write_table(table, out_file)
    else:
        pa_csv.write_csv(table, out_file)
    click.echo(f"wrote {table.num_rows} GPU-steps of {len(frame.devices)} GPUs to {out_file}",
               err=True)  # fmt: skip


def history_table(
    frame: HistoryFrame, columns: list[tuple[str, AggregateSpec]], cluster: str
) -> pa.Table:
    """One row per GPU and step, numeric columns with their units in their names."""
    n_dev, n_t = len(frame.devices), frame.times_s.size
    rows = {
        "cluster": [cluster] * (n_dev * n_t),
        "gpu_uuid": [d.uuid for d in frame.devices for _ in range(n_t)],
        "gpu_index": [d.index for d in frame.devices for _ in range(n_t)],
        "node": [d.node for d in frame.devices for _ in range(n_t)],
        "model": [d.model_name for d in frame.devices for _ in range(n_t)],
    }
    table = pa.table(rows)
    times = pa.array(np.tile(frame.times_s, n_dev) * 1000, pa.timestamp("ms", tz="UTC"))
    table = table.append_column("time", times)
    for name, spec in columns:
        values = frame.values[spec].reshape(-1)
        table = table.append_column(name, pa.array(values, pa.float64(), mask=np.isnan(values)))
    return table


@cli.group()
def rules() -> None:
    """Detection rules."""


@rules.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
def rules_validate(paths: tuple[Path, ...]) -> None:
    """Check rule files (default: the shipped rules); exit 2 listing every problem."""
    try:
        files = rule_files(paths)
        loaded = load_rules(paths)
    except ConfigError as exc:
        click.echo("gpuwatch: invalid rules:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(f"{len(loaded)} rules OK in {', '.join(str(f) for f in files)}")


@cli.group()
def config() -> None:
    """Settings."""


@cli.group()
def simulate() -> None:
    """The embedded simulated cluster as a metrics endpoint or a history file."""


def _sim_options(func: Any) -> Any:
    options = [
        click.option("--gpus", type=int, default=64, show_default=True),
        click.option("--days", type=float, default=1.0, show_default=True, help="Days of history."),
        click.option("--seed", type=int, default=42, show_default=True),
        click.option(
            "--step",
            "step_s",
            type=int,
            default=60,
            show_default=True,
            help="Seconds between samples.",
        ),
        click.option(
            "--exported-labels",
            is_flag=True,
            help="Pod labels as exported_pod/exported_namespace, as behind a "
            "ServiceMonitor without honorLabels.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _sim_settings(gpus: int, days: float, seed: int, step_s: int) -> SimulatorSettings:
    try:
        return SimulatorSettings(gpus=gpus, days=days, seed=seed, step_s=step_s)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@simulate.command("serve")
@_sim_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port",
    type=int,
    default=9400,
    show_default=True,
    help="dcgm-exporter's port; 0 picks a free one.",
)
@click.option("--duration", type=float, help="Stop after this many seconds.")
@click.option("--max-requests", type=int, help="Stop after this many requests.")
def simulate_serve(
    gpus: int,
    days: float,
    seed: int,
    step_s: int,
    exported_labels: bool,
    host: str,
    port: int,
    duration: float | None,
    max_requests: int | None,
) -> None:
    """Serve the simulated cluster's DCGM metrics on /metrics, live."""
    server = ExporterServer(
        _sim_settings(gpus, days, seed, step_s), host, port, exported_labels, max_requests
    )
    click.echo(
        f"serving {len(server.cluster.devices)} simulated GPUs on "
        f"http://{host}:{server.port}/metrics",
        err=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.serve(duration)


@simulate.command("export")
@_sim_options
@click.option(
    "--end",
    type=INSTANT,
    default=SHOWCASE_AT.isoformat(),
    show_default=True,
    help="Last instant of the history.",
)
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="OpenMetrics file to write (for promtool backfill).",
)
@click.option(
    "--family",
    "families",
    multiple=True,
    help="Only these metric families (repeatable). Default: all.",
)
def simulate_export(
    gpus: int,
    days: float,
    seed: int,
    step_s: int,
    exported_labels: bool,
    end: datetime,
    out_file: Path,
    families: tuple[str, ...],
) -> None:
    """Write the simulated history as OpenMetrics for `promtool tsdb create-blocks-from`."""
    cluster = SimulatedCluster(_sim_settings(gpus, days, seed, step_s), end=end)
    chosen = families or FAMILY_NAMES
    unknown = sorted(set(chosen) - set(FAMILY_NAMES))
    if unknown:
        raise click.BadParameter(f"unknown families {unknown}; known: {FAMILY_NAMES}")
    blocks = _day_blocks(cluster)
    with open(out_file, "w", encoding="utf-8") as handle:
        samples = write_openmetrics(handle, blocks, cluster.layout.gpus, exported_labels, chosen)
    click.echo(f"wrote {samples} samples of {len(cluster.devices)} GPUs to {out_file}", err=True)


def _day_blocks(cluster: SimulatedCluster) -> list[SeriesBlock]:
    blocks = []
    start = cluster.history_start
    while start < cluster.end:
        stop = min(start + timedelta(days=1), cluster.end)
        blocks.append(cluster.samples(start, stop))
        start = stop
    return blocks


@simulate.command("snapshot")
@_sim_options
@click.option("--at", type=INSTANT, default=SHOWCASE_AT.isoformat(), show_default=True)
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write; default: standard output.",
)
def simulate_snapshot(
    gpus: int,
    days: float,
    seed: int,
    step_s: int,
    exported_labels: bool,
    at: datetime,
    out_file: Path | None,
) -> None:
    """Write the simulated cluster's objects as `kubectl get -A -o json` would."""
    cluster = SimulatedCluster(_sim_settings(gpus, days, seed, step_s), end=at)
    text = json.dumps(kube_list(state_to_kube(cluster.state())), indent=1) + "\n"
    if out_file is None:
        click.echo(text, nl=False)
    else:
        out_file.write_text(text, encoding="utf-8")


@config.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective settings (file, environment and defaults merged) as JSON."""
    settings = _settings(ctx, {})
    click.echo(settings.model_dump_json(indent=2))


@config.command("docs")
def config_docs() -> None:
    """Print the settings reference in Markdown (docs/settings.md)."""
    click.echo(settings_markdown(), nl=False)


def main() -> None:
    cli(prog_name="gpuwatch")
