"""The seams every metrics and cluster source implements.

Each has a real adapter and an in-process one (the simulator); contract tests run the
same assertions against all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol, runtime_checkable

from gpuwatch.model.cluster import ClusterState
from gpuwatch.model.metrics import (
    HistoryFrame,
    HistoryRequest,
    HolderHistory,
    WindowRequest,
    WindowStats,
)

Progress = Callable[[int, int], None]
"""Called with (requests done, requests planned) as a long collection proceeds."""


@runtime_checkable
class MetricsSource(Protocol):
    """DCGM exporter metrics, aggregated where they live."""

    name: str

    def window_stats(self, request: WindowRequest) -> WindowStats:
        """Per-GPU aggregates over windows ending at ``request.at``.

        Raises a ``SourceError`` subclass when the source cannot answer.
        """
        ...

    def history(self, request: HistoryRequest, progress: Progress | None = None) -> HistoryFrame:
        """Per-GPU aggregates at every step of a range, downsampled where the data lives."""
        ...

    def holders(self, request: HistoryRequest, progress: Progress | None = None) -> HolderHistory:
        """Which pod held each GPU at every step of a range (``request.specs`` unused):
        the pod the exporter labelled the GPU with for most of the step."""
        ...


@runtime_checkable
class ClusterSource(Protocol):
    """Nodes, pods and their owners."""

    name: str

    def snapshot(self, at: datetime) -> ClusterState:
        """The cluster as of ``at`` (live sources return their current state)."""
        ...
