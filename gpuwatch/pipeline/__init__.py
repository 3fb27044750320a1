"""One cycle in three phases: ``gather`` (every read) -> ``analyse`` (pure) -> ``effect``.

``run_cycle`` runs the three in order. Everything up to the effects is a pure function
of what was gathered, the rules, the prices and the settings, so it is tested without
any server, and the weekly report reuses the first two phases for its savings without
touching the state, the chat service or the cluster. A source failure never raises out
of a cycle: it is recorded, the cycle takes no action, and ``result.ok`` is False so
that the command exits non-zero.
"""

from __future__ import annotations

import time
from datetime import datetime

from gpuwatch.config.settings import Settings
from gpuwatch.model.result import CycleResult
from gpuwatch.pipeline.analyse import Analysis, analyse
from gpuwatch.pipeline.components import Components
from gpuwatch.pipeline.effect import effect
from gpuwatch.pipeline.gather import Gathered, gather

__all__ = ["Analysis", "Components", "Gathered", "analyse", "effect", "gather", "run_cycle"]


def run_cycle(components: Components, settings: Settings, at: datetime) -> CycleResult:
    """One whole cycle as of ``at``."""
    started = time.monotonic()
    gathered = gather(components, settings, at)
    analysis = analyse(gathered, components.rules, components.price_book, settings)
    return effect(gathered, analysis, components, settings, started)
