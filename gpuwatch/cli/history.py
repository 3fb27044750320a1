"""``gpuwatch history``: per-GPU aggregates over a range, to Parquet or CSV."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from rich.console import Console

from gpuwatch.cli.common import (
    EXIT_SOURCE_FAILED,
    INSTANT,
    cli,
    fail_config,
    load_settings_or_exit,
    progress_display,
)
from gpuwatch.model.durations import parse_duration_s
from gpuwatch.model.errors import ConfigError, SourceError
from gpuwatch.model.metrics import (
    Aggregate,
    AggregateSpec,
    HistoryFrame,
    HistoryRequest,
    Signal,
)
from gpuwatch.sources.simulator import SimulatedCluster
from gpuwatch.wiring import build_metrics_source

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
    settings = load_settings_or_exit(ctx, flags)
    # The simulator's history must reach back to --from.
    days = max(settings.simulator.days, (end - start).total_seconds() / 86400 + 1)
    simulator = settings.simulator.model_copy(update={"days": days})
    try:
        source = build_metrics_source(
            settings, os.environ, lambda: SimulatedCluster(simulator, end)
        )
    except ConfigError as exc:
        fail_config(exc)
    columns = [
        (name, AggregateSpec(signal, aggregate, step_s))
        for name, signal, aggregate in HISTORY_COLUMNS
    ]
    request = HistoryRequest(start, end, step_s, frozenset(spec for _, spec in columns))
    err = Console(stderr=True)
    try:
        with progress_display(err) as progress:
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
    click.echo(
        f"wrote {table.num_rows} GPU-steps of {len(frame.devices)} GPUs to {out_file}", err=True
    )


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
