"""SIGTERM and SIGUSR1, turned into requests the training loop acts on at a step boundary.

A signal handler must not checkpoint by itself: it runs in the middle of whatever the
main thread was doing (a backward pass, a collective), and in a distributed job every
rank has to take part in saving the same step. So handlers only record the request and
its time; the loop polls at each step boundary, the ranks agree (see ``distributed``),
rank 0 writes, and on SIGTERM every rank exits with 143 (128 + 15), which Kubeflow's
``restartPolicy: ExitCode`` treats as retryable.

SIGTERM is what the kubelet sends when a spot node is reclaimed (about 30 s of notice on
GCP, 2 minutes on AWS, about 5 minutes on Alibaba Cloud) or a pod is evicted; SIGUSR1
asks for a checkpoint now and lets training go on (gpuwatch uses it before a move).
"""

from __future__ import annotations

import signal
import time
from types import FrameType

EXIT_PREEMPTED = 128 + signal.SIGTERM


class PreemptionSignals:
    """Records SIGTERM and SIGUSR1 between step boundaries."""

    def __init__(self) -> None:
        self.terminate_at: float | None = None
        """``time.monotonic()`` of the first SIGTERM, None before one arrives."""
        self.terminate_count = 0
        self.checkpoint_at: float | None = None
        """``time.monotonic()`` of the oldest SIGUSR1 not yet acted on."""
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        """Install the handlers (main thread only, as Python requires)."""
        for signum, handler in (
            (signal.SIGTERM, self._on_terminate),
            (signal.SIGUSR1, self._on_checkpoint),
        ):
            self._previous[signum] = signal.signal(signum, handler)

    def uninstall(self) -> None:
        """Put back the handlers ``install`` replaced."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous.clear()

    @property
    def terminate_requested(self) -> bool:
        return self.terminate_at is not None

    def take_checkpoint_request(self) -> float | None:
        """The time of the pending SIGUSR1 (clearing it), or None."""
        at, self.checkpoint_at = self.checkpoint_at, None
        return at

    # Handlers only assign: no logging (its locks are not reentrant), no I/O.
    def _on_terminate(self, signum: int, frame: FrameType | None) -> None:
        self.terminate_count += 1
        if self.terminate_at is None:
            self.terminate_at = time.monotonic()

    def _on_checkpoint(self, signum: int, frame: FrameType | None) -> None:
        if self.checkpoint_at is None:
            self.checkpoint_at = time.monotonic()
