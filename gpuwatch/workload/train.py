"""``python -m gpuwatch.workload.train``: the training job's entry point.

Flags are parsed before torch is imported, so ``--help`` and mistakes answer at once;
logging names the rank, since under torchrun several processes share one stream.
Exit codes: 0 done, 1 failed (including "no checkpoint verifies"), 2 bad flags, 143
stopped by SIGTERM after checkpointing (Kubeflow's ``restartPolicy: ExitCode``
retries 128-255 and gives up on 1-127).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from gpuwatch.workload.config import parse_args


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the job, return its exit code."""
    config = parse_args(argv, prog)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # torch loads here, once the flags are good.
    from gpuwatch.workload.loop import run  # noqa: PLC0415

    return run(config)


if __name__ == "__main__":
    sys.exit(main())
