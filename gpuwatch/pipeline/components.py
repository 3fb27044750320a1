"""The adapters one cycle runs with, built in one place (``gpuwatch.wiring``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

from gpuwatch.actuators.base import Actuator
from gpuwatch.analysis.pricing import PriceBook
from gpuwatch.analysis.rules.schema import Rule
from gpuwatch.notify.base import ApprovalSource, Notifier
from gpuwatch.sources.base import (
    ClusterSource,
    MetricsSource,
    NodePriceSource,
    SilenceSource,
    SpendRecord,
    TrainingProgress,
)
from gpuwatch.state.base import StateStore


@dataclass(frozen=True)
class Components:
    metrics: MetricsSource
    cluster: ClusterSource
    rules: tuple[Rule, ...]
    state: StateStore
    notifier: Notifier
    price_book: PriceBook
    node_prices: NodePriceSource | None = None
    """Measured per-node prices (OpenCost), replacing the book where present."""
    actuator: Actuator | None = None
    """Writes actions to the cluster; None where there is no cluster to act on."""
    checkpoints: TrainingProgress | None = None
    """When training jobs last checkpointed (their metric), where it is scraped."""
    silences: SilenceSource | None = None
    """Silences kept in the cluster (a ConfigMap), besides those in the settings."""
    approvals: ApprovalSource | None = None
    """Where people's decisions on approval requests and their snoozes come from (Slack);
    None where nobody can answer."""
    recorded: SpendRecord | None = None
    """Spend the weekly report recorded: budgets' hours the metrics no longer hold."""
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    """The wall clock: writes happen only when the data is live by it."""
    closers: tuple[Callable[[], None], ...] = ()
    """What releases the connections the adapters hold (HTTP sessions), run by
    ``close``: a daemon builds new adapters every cycle and must not leak sockets."""

    def close(self) -> None:
        for close in self.closers:
            close()

    def __enter__(self) -> Components:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
