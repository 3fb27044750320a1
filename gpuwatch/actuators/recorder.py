"""The in-process actuator: records what it was asked to do and changes nothing.

For tests of the cycle's action path, and for a dry run that wants the same code path
as a real one. ``kill_switch`` and ``holds_lease`` say what the cluster would answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from gpuwatch.model.actions import Action, ActionStatus


class RecordingActuator:
    name = "recorder"

    def __init__(self, kill_switch: bool = True, holds_lease: bool = True) -> None:
        self.kill_switch = kill_switch
        self.holds_lease = holds_lease
        self.applied: list[Action] = []

    def exclusive(self) -> str | None:
        return None if self.holds_lease else "another gpuwatch instance holds the actions lease"

    def kill_switch_on(self, reference: str) -> bool:
        return self.kill_switch

    def follow_up(
        self, deadline_s: float, progress: Mapping[str, tuple[int, int]] | None = None
    ) -> list[Action]:
        return []

    def apply(self, action: Action) -> Action:
        self.applied.append(action)
        if action.status is ActionStatus.PLANNED and not action.dry_run:
            return replace(action, status=ActionStatus.DONE, reason="recorded")
        return action
