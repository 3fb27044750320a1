"""Actions gpuwatch plans, takes or refuses, each recorded with its reason and its key.

Every action has an idempotency key: a crash mid-action followed by a rerun finds the
same key and converges instead of acting twice. Refusals are recorded as actions too,
so that a person can see why a node was not touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ActionStatus(StrEnum):
    PLANNED = "planned"
    """Decided; not written to the cluster (dry run) or not yet started."""
    DONE = "done"
    REFUSED = "refused"
    """A safety guard said no; ``reason`` says which."""
    FAILED = "failed"
    AWAITING_APPROVAL = "awaiting_approval"
    """Planned, and waiting for a person to approve it in Slack (``actions.approval``)."""


@dataclass(frozen=True)
class Action:
    kind: str
    """``scale_down_node`` (more kinds come with the actuators)."""
    target: str
    """``Node/<name>``, ``PyTorchJob/<ns>/<name>``..."""
    status: ActionStatus
    reason: str
    key: str
    dry_run: bool
    pool: str | None = None
    mechanism: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "pool": self.pool,
            "mechanism": self.mechanism,
            "dry_run": self.dry_run,
            "status": str(self.status),
            "reason": self.reason,
            "key": self.key,
            **({"details": self.details} if self.details else {}),
        }
