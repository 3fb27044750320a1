"""The in-process actuator: records what it was asked to do and changes nothing.

For tests of the cycle's action path, and for a dry run that wants the same code path
as a real one. ``kill_switch`` (the switch's value) and ``holds_lease`` say what the cluster would
answer.
"""

from __future__ import annotations

from dataclasses import replace

from gpuwatch.actuators.base import FollowUp, KillSwitch
from gpuwatch.model.actions import Action, ActionStatus


class RecordingActuator:
    name = "recorder"

    def __init__(self, kill_switch: bool = True, holds_lease: bool = True) -> None:
        self.switch_on = kill_switch
        self.holds_lease = holds_lease
        self.applied: list[Action] = []
        self.released = 0
        self.followed: list[FollowUp] = []

    def exclusive(self) -> str | None:
        return None if self.holds_lease else "another gpuwatch instance holds the actions lease"

    def release(self) -> None:
        self.released += 1

    def kill_switch(self, reference: str) -> KillSwitch:
        return KillSwitch(self.switch_on)

    def follow_up(self, request: FollowUp) -> list[Action]:
        self.followed.append(request)
        return []

    def apply(self, action: Action, budget_s: float | None = None) -> Action:
        self.applied.append(action)
        if action.status is ActionStatus.PLANNED and not action.dry_run:
            return replace(action, status=ActionStatus.DONE, reason="recorded")
        return action
