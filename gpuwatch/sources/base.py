"""The read seams: every source a cycle gathers from implements one of these.

Metrics and the cluster each have a real adapter and an in-process one (the simulator);
contract tests run the same assertions against all of them. The smaller seams (prices
measured per node, training jobs' progress, silences kept in the cluster) are optional:
a cycle without them uses the price book, the jobs' annotations and the settings.
Every method raises a ``SourceError`` subclass when the source cannot answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from gpuwatch.config.settings import Silence
from gpuwatch.model.budgets import RecordedSpend
from gpuwatch.model.cluster import ClusterState
from gpuwatch.model.cost import Price
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


PodKey = tuple[str, str]
"""(namespace, pod)."""


class TrainingProgress(Protocol):
    """What training jobs report about themselves (the reference job's metrics)."""

    name: str

    def last_checkpoints(self, at: datetime) -> Mapping[PodKey, datetime]:
        """Per pod: when its newest durable checkpoint was taken."""
        ...

    def progress(self, at: datetime) -> Mapping[PodKey, tuple[int, int]]:
        """Per pod: (current step, step of its newest checkpoint)."""
        ...


class SilenceSource(Protocol):
    """Silences kept outside the settings (a ConfigMap people edit at 3 a.m.)."""

    name: str

    def silences(self, at: datetime) -> Sequence[Silence]:
        """Silences active at ``at``."""
        ...


class NodePriceSource(Protocol):
    """Measured prices per node (OpenCost), replacing the price book where present."""

    name: str

    def node_prices(self, at: datetime) -> Mapping[str, Price]:
        """Node -> price of one of its GPU-hours."""
        ...


class SpendRecord(Protocol):
    """Spend recorded earlier (the weekly report's dataset): what budgets count for the
    hours of a month the metrics no longer hold."""

    name: str

    def recorded_spend(self, start: datetime, end: datetime) -> RecordedSpend | None:
        """Priced GPU-hours of ``[start, end)``; None when nothing was ever recorded."""
        ...
