"""The actions seam: what the cycle asks of whatever carries planned actions out.

An actuator never raises for the cluster's answers: a write that fails is an ``Action``
with status ``failed`` and the reason, so that the cycle records it and goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from gpuwatch.model.actions import Action


class Actuator(Protocol):
    name: str

    def exclusive(self) -> str | None:
        """None when this instance is the only writer now (it holds the actions Lease,
        or none is needed); otherwise why it is not, for the refused actions' reason."""
        ...

    def kill_switch_on(self, reference: str) -> bool:
        """The kill switch (``namespace/configmap/key``) reads ``true``; anything else,
        absent or unreadable included, is off."""
        ...

    def apply(self, action: Action) -> Action:
        """Carry out a planned action (refusals are recorded, dry runs returned as they
        are); the outcome as the same action with its new status and reason."""
        ...

    def follow_up(
        self, deadline_s: float, progress: Mapping[str, tuple[int, int]] | None = None
    ) -> list[Action]:
        """Confirm or undo work started in earlier cycles (spot migrations)."""
        ...
