"""The seams every metrics and cluster source implements.

Each has a real adapter and an in-process one (the simulator); contract tests run the
same assertions against all of them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from gpuwatch.model.cluster import ClusterState
from gpuwatch.model.metrics import WindowRequest, WindowStats


@runtime_checkable
class MetricsSource(Protocol):
    """DCGM exporter metrics, aggregated where they live."""

    name: str

    def window_stats(self, request: WindowRequest) -> WindowStats:
        """Per-GPU aggregates over windows ending at ``request.at``.

        Raises a ``SourceError`` subclass when the source cannot answer.
        """
        ...


@runtime_checkable
class ClusterSource(Protocol):
    """Nodes, pods and their owners."""

    name: str

    def snapshot(self, at: datetime) -> ClusterState:
        """The cluster as of ``at`` (live sources return their current state)."""
        ...
