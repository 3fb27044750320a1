"""What persists between cycles, so that a CronJob every 5 minutes has a memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gpuwatch.model.durations import parse_instant, rfc3339

STATE_VERSION = 1


@dataclass
class CycleState:
    findings_since: dict[str, datetime] = field(default_factory=dict)
    """Finding key -> when it first fired in an unbroken run of cycles."""
    last_cycle_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "last_cycle_at": rfc3339(self.last_cycle_at) if self.last_cycle_at else None,
            "findings_since": {k: rfc3339(v) for k, v in sorted(self.findings_since.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CycleState:
        """Parse; raise ValueError naming the offending key."""
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"version: expected {STATE_VERSION}, got {data.get('version')!r}")
        since = data.get("findings_since") or {}
        if not isinstance(since, dict):
            raise ValueError("findings_since: expected a mapping of finding key to instant")
        last = data.get("last_cycle_at")
        return cls(
            findings_since={str(k): parse_instant(str(v)) for k, v in since.items()},
            last_cycle_at=parse_instant(last) if last else None,
        )
