"""What every command shares: the root group, exit codes, settings loading."""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress

from gpuwatch import __version__
from gpuwatch.config.load import load_settings
from gpuwatch.config.settings import Settings
from gpuwatch.model.durations import parse_instant
from gpuwatch.model.errors import ConfigError
from gpuwatch.util.memory import use_system_allocator
from gpuwatch.util.redact import redact
from gpuwatch.util.redact_output import redact_log_records, redact_standard_streams

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
    # Before anything is logged or printed: no secret leaves through either.
    redact_standard_streams()
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    redact_log_records()
    logging.getLogger(__name__).debug(
        "Arrow's buffers come from the %s allocator", use_system_allocator()
    )
    ctx.obj = {"config_file": config_file}


def load_settings_or_exit(
    ctx: click.Context, flags: dict[str, Any], defaults: dict[str, Any] | None = None
) -> Settings:
    try:
        return load_settings(ctx.obj["config_file"], os.environ, flags, defaults)
    except ConfigError as exc:
        fail_config(exc)


def fail_config(exc: ConfigError, what: str = "configuration") -> Any:
    """Print every problem of ``exc`` and exit with EXIT_USAGE."""
    click.echo(f"gpuwatch: invalid {what}:", err=True)
    for problem in exc.problems:
        click.echo(f"  {redact(problem)}", err=True)
    sys.exit(EXIT_USAGE)


def progress_display(err: Console) -> Progress:
    """A progress display on standard error that disappears when done, and is off where
    standard error is not a terminal (a CronJob's log gets no bars)."""
    return Progress(console=err, transient=True, disable=not err.is_terminal)
