"""The actions seam: what the cycle asks of whatever carries planned actions out.

An actuator never raises for the cluster's answers: a write that fails is an ``Action``
with status ``failed`` and the reason, so that the cycle records it and goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gpuwatch.config.settings import MigrationSettings
from gpuwatch.model.actions import Action


@dataclass(frozen=True)
class KillSwitch:
    """What the kill switch read this cycle: writes happen only when ``on``."""

    on: bool
    note: str | None = None
    """Why it reads off when that is not plainly ``false`` or absent (a malformed value,
    an unreadable ConfigMap)."""


@dataclass(frozen=True)
class FollowUp:
    """What the follow-up of earlier migrations needs from the cycle."""

    settings: MigrationSettings
    progress: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """Workload -> (training step now, step of its newest checkpoint)."""
    refusal: str = ""
    """Why nothing may be written now; each pending follow-up is then recorded as
    refused, and left as it is."""


class Actuator(Protocol):
    name: str

    def exclusive(self) -> str | None:
        """None when this instance is the only writer now (it holds the actions Lease,
        or none is needed); otherwise why it is not, for the refused actions' reason."""
        ...

    def release(self) -> None:
        """Give up being the only writer (the Lease), at the end of a cycle's writes, so
        that the next run (another pod) need not wait for it to expire. Never raises."""
        ...

    def kill_switch(self, reference: str) -> KillSwitch:
        """The kill switch (``namespace/configmap/key``): on only when it reads ``true``;
        anything else, absent, malformed or unreadable included, is off."""
        ...

    def apply(self, action: Action, budget_s: float | None = None) -> Action:
        """Carry out a planned action (refusals are recorded, dry runs returned as they
        are); the outcome as the same action with its new status and reason.
        ``budget_s``: seconds left for the cycle's writes; work that would run past it
        is rolled back."""
        ...

    def follow_up(self, request: FollowUp) -> list[Action]:
        """Resume, confirm or undo work started in earlier cycles (spot migrations)."""
        ...
