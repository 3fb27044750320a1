"""``gpuwatch simulate``: the embedded cluster as an exporter endpoint, history, objects."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from gpuwatch.cli.common import (
    INSTANT,
    cli,
)
from gpuwatch.config.settings import SimulatorSettings
from gpuwatch.model.metrics import (
    SeriesBlock,
)
from gpuwatch.sources.simulator import SimulatedCluster
from gpuwatch.sources.simulator.exposition import FAMILY_NAMES, kubectl_json, write_openmetrics
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from gpuwatch.sources.simulator.serve import ExporterServer


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
    text = kubectl_json(cluster.state())
    if out_file is None:
        click.echo(text, nl=False)
    else:
        out_file.write_text(text, encoding="utf-8")
