"""``gpuwatch rules`` and ``gpuwatch config``: checking rules, showing settings."""

from __future__ import annotations

from pathlib import Path

import click

from gpuwatch.analysis.rules.loader import load_rules, rule_files
from gpuwatch.cli.common import cli, fail_config, load_settings_or_exit
from gpuwatch.config.docs import settings_markdown
from gpuwatch.model.errors import ConfigError


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
        fail_config(exc, "rules")
    click.echo(f"{len(loaded)} rules OK in {', '.join(str(f) for f in files)}")


@cli.group()
def config() -> None:
    """Settings."""


@config.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective settings (file, environment and defaults merged) as JSON."""
    settings = load_settings_or_exit(ctx, {})
    click.echo(settings.model_dump_json(indent=2))


@config.command("docs")
def config_docs() -> None:
    """Print the settings reference in Markdown (docs/settings.md)."""
    click.echo(settings_markdown(), nl=False)
