"""Whether the next write of an action may still happen.

Every write step asks first: the cycle's write deadline has not passed (a CronJob run
killed mid-write leaves work half done), and this instance still holds the actions
Lease (another may have taken it over while a disruption budget kept a drain waiting).
A step that may not happen stops the action where its recorded phase lets the next
cycle resume it, or rolls it back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class WriteGuard:
    monotonic: Callable[[], float]
    deadline: float | None = None
    """Monotonic seconds after which no write starts; None: no deadline."""
    renew: Callable[[], str | None] = lambda: None
    """Renews the Lease; why this instance no longer holds it, or None."""

    def refusal(self) -> str:
        """Why the next write may not happen; empty when it may."""
        if self.deadline is not None and self.monotonic() >= self.deadline:
            return "the cycle's write deadline (actions.deadline) passed"
        return self.renew() or ""

    def cap(self, deadline: float) -> float:
        """``deadline`` (monotonic), no later than the cycle's."""
        return deadline if self.deadline is None else min(deadline, self.deadline)
