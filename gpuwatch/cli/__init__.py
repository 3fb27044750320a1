"""The ``gpuwatch`` command line.

Exit codes: 0 the cycle ran (findings or not); 1 the cycle ran but a source failed, so
nothing was judged; 2 bad usage, settings or rules.
"""

from __future__ import annotations

# Importing the command modules registers their commands on the root group.
from gpuwatch.cli import admin, cycle, history, report, run, simulate, train
from gpuwatch.cli.common import cli

__all__ = ["admin", "cli", "cycle", "history", "main", "report", "run", "simulate", "train"]


def main() -> None:
    cli(prog_name="gpuwatch")
