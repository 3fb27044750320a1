"""``gpuwatch rules`` and ``gpuwatch config``: checking and exporting rules, showing
settings."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from gpuwatch.analysis.rules.loader import load_rules, rule_files
from gpuwatch.cli.common import EXIT_USAGE, cli, fail_config, load_settings_or_exit
from gpuwatch.config.docs import settings_markdown
from gpuwatch.config.secrets import masked_settings_json
from gpuwatch.export.prometheus_rule import (
    DEFAULT_NAME,
    DEFAULT_NAMESPACE,
    check_object_name,
    manifest_yaml,
    parse_label,
    prometheus_rule,
)
from gpuwatch.model.errors import ConfigError

EXPORT_FORMATS = ("prometheus-rule",)


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


def _object_name(subdomain: bool) -> Any:
    def check(ctx: click.Context, param: click.Parameter, value: str) -> str:
        try:
            check_object_name(value, param.name or "name", subdomain=subdomain)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from exc
        return value

    return check


def _labels(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for text in values:
        try:
            key, value = parse_label(text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from exc
        labels[key] = value
    return labels


@rules.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(EXPORT_FORMATS),
    required=True,
    help="prometheus-rule: a Prometheus Operator PrometheusRule (monitoring.coreos.com/v1).",
)
@click.option(
    "--out",
    default="-",
    show_default=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="File to write; - is standard output.",
)
@click.option(
    "--name",
    default=DEFAULT_NAME,
    show_default=True,
    callback=_object_name(subdomain=True),
    help="metadata.name of the PrometheusRule.",
)
@click.option(
    "--namespace",
    default=DEFAULT_NAMESPACE,
    show_default=True,
    callback=_object_name(subdomain=False),
    help="metadata.namespace of the PrometheusRule.",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_labels,
    help="Label on the PrometheusRule (repeatable), e.g. the release label the "
    "Prometheus Operator's ruleSelector matches.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML settings file, as `gpuwatch --config`: metric and label names, scrape "
    "interval, pool label and rule paths come from it.",
)
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.pass_context
def rules_export(
    ctx: click.Context,
    fmt: str,
    out: str,
    name: str,
    namespace: str,
    labels: dict[str, str],
    config_file: Path | None,
    paths: tuple[Path, ...],
) -> None:
    """Write the rules (PATHS, default: rules.paths, else the shipped rules) as alerting
    rules for Prometheus and Alertmanager.

    The alerts compute what gpuwatch's own evaluation does, as closely as PromQL allows;
    each alert's gpuwatch_note annotation says where it differs. Exit 2 on bad rules.
    """
    if config_file is not None:
        ctx.obj["config_file"] = config_file
    flags = {"rules.paths": [str(p) for p in paths]} if paths else {}
    settings = load_settings_or_exit(ctx, flags)
    try:
        files = rule_files(settings.rules.paths)
        loaded = load_rules(settings.rules.paths)
    except ConfigError as exc:
        fail_config(exc, "rules")
    manifest = prometheus_rule(
        loaded,
        settings.prometheus,
        name=name,
        namespace=namespace,
        labels=labels,
        attribution=settings.attribution,
    )
    if not manifest["spec"]["groups"][0]["rules"]:
        click.echo("gpuwatch: warning: no enabled rule to export", err=True)
    # The shipped file's path depends on the installation: name it, not where it is.
    sources = [str(f) for f in files] if settings.rules.paths else ["the shipped rules/gpu.yaml"]
    text = manifest_yaml(manifest, sources)
    if out == "-":
        click.echo(text, nl=False)
        return
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as exc:
        click.echo(f"gpuwatch: cannot write {out}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(f"{len(manifest['spec']['groups'][0]['rules'])} alerts written to {out}", err=True)


@cli.group()
def config() -> None:
    """Settings."""


@config.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective settings (file, environment and defaults merged) as JSON.

    Secret settings are masked: passwords in URLs (``https://user:***@host``), header
    values; files and environment variables that hold secrets are shown by name."""
    settings = load_settings_or_exit(ctx, {})
    click.echo(masked_settings_json(settings))


@config.command("docs")
def config_docs() -> None:
    """Print the settings reference in Markdown (docs/settings.md)."""
    click.echo(settings_markdown(), nl=False)
