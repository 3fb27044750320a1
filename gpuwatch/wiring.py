"""The one place where concrete adapters are built from settings.

Nothing else constructs a source, a notifier or a state store; tests build
``Components`` directly with in-process implementations.
"""

from __future__ import annotations

from datetime import datetime
from typing import TextIO

from gpuwatch.analysis.rules import load_rules
from gpuwatch.config.settings import Settings
from gpuwatch.notify.base import Notifier
from gpuwatch.notify.console import ConsoleNotifier, RecordingNotifier
from gpuwatch.pipeline import Components
from gpuwatch.sources.simulator import (
    SimulatedCluster,
    SimulatorClusterSource,
    SimulatorMetricsSource,
)
from gpuwatch.state.json_file import JsonFileState


def build_components(settings: Settings, at: datetime, console: TextIO) -> Components:
    """Adapters for one cycle evaluated at ``at``; ``console`` receives printed messages."""
    rules = load_rules(settings.rules.paths)
    simulated = SimulatedCluster(settings.simulator, end=at)
    notifier: Notifier = (
        ConsoleNotifier(console) if settings.notify.console else RecordingNotifier()
    )
    return Components(
        metrics=SimulatorMetricsSource(simulated),
        cluster=SimulatorClusterSource(simulated),
        rules=rules,
        state=JsonFileState(settings.state_path),
        notifier=notifier,
    )
