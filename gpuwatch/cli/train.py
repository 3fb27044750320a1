"""``gpuwatch train``: the reference PyTorch training job, from the gpuwatch command.

The job lives in ``gpuwatch.workload`` and needs the ``train`` extra (torch); this
command imports it only when it runs, so ``gpuwatch --help`` and the daemon never load
torch. Every argument goes to the job's own parser unchanged (``gpuwatch train --help``
shows its flags), so ``gpuwatch train`` and ``python -m gpuwatch.workload.train`` are
the same program.
"""

from __future__ import annotations

import sys

import click

from gpuwatch.cli.common import cli


@cli.command(
    "train",
    add_help_option=False,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def train(args: tuple[str, ...]) -> None:
    """Run the reference training job (needs the train extra; see train --help)."""
    try:
        # Lazy on purpose: torch is an optional dependency the daemon must not load.
        from gpuwatch.workload.train import main  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        click.echo(f"gpuwatch train needs the train extra (pip install 'gpuwatch[train]'): {exc}")
        sys.exit(2)
    sys.exit(main(list(args), prog="gpuwatch train"))
