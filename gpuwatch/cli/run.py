"""``gpuwatch run``: the daemon (see ``gpuwatch.daemon``)."""

from __future__ import annotations

import logging
import os
import sys

import click

from gpuwatch.cli.common import cli, fail_config
from gpuwatch.config.load import load_settings
from gpuwatch.config.settings import Settings
from gpuwatch.daemon import Daemon
from gpuwatch.model.errors import ConfigError


@cli.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run as a daemon: a cycle every `daemon.interval`, the weekly report on
    `daemon.report_cron`, metrics and health on `self_metrics.port`. Stops on SIGTERM."""
    config_file = ctx.obj["config_file"]
    parent = ctx.parent
    if parent is not None and parent.get_parameter_source("log_level") is (
        click.core.ParameterSource.DEFAULT
    ):
        # A daemon's log is its only voice: what it scheduled, that it stands by.
        logging.getLogger("gpuwatch").setLevel(logging.INFO)

    def load() -> Settings:
        return load_settings(config_file, os.environ, {})

    try:
        daemon = Daemon(load, sys.stdout, config_file)
    except ConfigError as exc:
        fail_config(exc)
    daemon.run_until_signalled()
