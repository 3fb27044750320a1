"""The notify seam: deliver a composed message, say whether it went out."""

from __future__ import annotations

from typing import Protocol

from gpuwatch.model.result import Notification


class Notifier(Protocol):
    name: str

    def deliver(self, message: Notification) -> Notification:
        """Deliver ``message``; return it with ``status`` (and ``error``) filled in.

        Never raises for a delivery failure: a failed message is recorded, not lost.
        """
        ...
