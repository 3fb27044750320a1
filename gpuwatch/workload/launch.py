"""``python -m gpuwatch.workload.launch``: torchrun, with exit codes Kubeflow can act on.

torchrun forwards SIGTERM to its workers, which checkpoint and exit 143, but then
torchrun itself dies of the signal with exit code 1, and Kubeflow's
``restartPolicy: ExitCode`` treats 1-127 as a permanent failure: a preempted job would
not be retried. This wrapper runs torchrun unchanged (same flags, same ``PET_*``
environment from the PyTorchJob) and exits 128 + the signal when torchrun was
signalled, or with the workers' own exit code when all of them died of a retryable
one (128-255), and 1 otherwise.

SIGUSR1 is not forwarded by torchrun by default; send it to a worker process (any
rank: the ranks agree at the next step boundary).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main as torchrun

log = logging.getLogger(__name__)

EXIT_FAILED = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run torchrun with ``argv``; returns the exit code for the container."""
    try:
        torchrun(list(sys.argv[1:] if argv is None else argv))
    except SignalException as exc:
        code = 128 + int(exc.sigval)
        log.warning("torchrun stopped by signal %s; exiting %d", exc.sigval, code)
        return code
    except ChildFailedError as exc:
        # A worker killed by a signal has a negative exit code (-9: SIGKILL).
        codes = sorted(
            {f.exitcode if f.exitcode >= 0 else 128 - f.exitcode for f in exc.failures.values()}
        )
        retryable = [c for c in codes if c >= 128]
        code = retryable[0] if retryable and len(retryable) == len(codes) else EXIT_FAILED
        log.warning("workers exited with %s; exiting %d", codes, code)
        return code
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
