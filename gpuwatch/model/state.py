"""What persists between cycles, so that a CronJob every 5 minutes has a memory.

Two memories: when each finding started firing (for rules' windows and ``for``), and
what people were told (each alert group's message, when it was posted and updated, what
could not be delivered yet). The second is what keeps a channel from hearing the same
thing every five minutes, across restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gpuwatch.model.approvals import ApprovalRequest, Snooze
from gpuwatch.model.durations import parse_instant, rfc3339

STATE_VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)


@dataclass
class AlertGroupState:
    """One incident group as the channel knows it."""

    key: str
    channel: str
    title: str
    """The headline last composed, for digests and the resolution reply."""
    started_at: datetime
    """When gpuwatch first saw the group firing, in this incident."""
    severity: str = "warning"
    """The group's most severe finding, last time it fired."""
    notifier: str | None = None
    """The notifier that holds ``ts``; a message id means nothing to another one."""
    channel_id: str | None = None
    ts: str | None = None
    """The group's current message; None until a post was delivered."""
    posted_at: datetime | None = None
    """When ``ts`` was posted: reminders count from here."""
    notified_at: datetime | None = None
    """When the channel last heard of this group (post or update)."""
    fingerprint: str = ""
    """The set of findings the channel last heard of."""
    findings: int = 0
    digest: bool = False
    """``ts`` is a digest listing this group with others: it is not updated in place."""
    resolved_at: datetime | None = None
    """The group stopped firing here; set until its resolution is delivered."""
    resolution: str = "resolved"
    """``resolved``, or ``silenced`` when it stopped only because a silence covers it."""
    failed_since: datetime | None = None
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "title": self.title,
            "started_at": rfc3339(self.started_at),
            "severity": self.severity,
            "notifier": self.notifier,
            "channel_id": self.channel_id,
            "ts": self.ts,
            "posted_at": _instant(self.posted_at),
            "notified_at": _instant(self.notified_at),
            "fingerprint": self.fingerprint,
            "findings": self.findings,
            "digest": self.digest,
            "resolved_at": _instant(self.resolved_at),
            "resolution": self.resolution,
            "failed_since": _instant(self.failed_since),
            "last_error": self.last_error,
        }

    @classmethod
    def from_dict(cls, key: str, data: dict[str, Any]) -> AlertGroupState:
        try:
            return cls(
                key=key,
                channel=str(data["channel"]),
                title=str(data.get("title", key)),
                started_at=parse_instant(str(data["started_at"])),
                severity=str(data.get("severity", "warning")),
                notifier=data.get("notifier"),
                channel_id=data.get("channel_id"),
                ts=data.get("ts"),
                posted_at=_parse(data.get("posted_at")),
                notified_at=_parse(data.get("notified_at")),
                fingerprint=str(data.get("fingerprint", "")),
                findings=int(data.get("findings", 0)),
                digest=bool(data.get("digest", False)),
                resolved_at=_parse(data.get("resolved_at")),
                resolution=str(data.get("resolution", "resolved")),
                failed_since=_parse(data.get("failed_since")),
                last_error=data.get("last_error"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"alerts.{key}: {exc}") from exc


@dataclass
class PendingMessage:
    """A one-off message (the cycle's actions) not delivered yet: kept until it is."""

    key: str
    channel: str
    title: str
    text: str
    blocks: list[dict[str, Any]]
    created_at: datetime
    attempts: int = 0
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "channel": self.channel,
            "title": self.title,
            "text": self.text,
            "blocks": self.blocks,
            "created_at": rfc3339(self.created_at),
            "attempts": self.attempts,
            "last_error": self.last_error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingMessage:
        try:
            return cls(
                key=str(data["key"]),
                channel=str(data["channel"]),
                title=str(data.get("title", "")),
                text=str(data["text"]),
                blocks=list(data.get("blocks") or []),
                created_at=parse_instant(str(data["created_at"])),
                attempts=int(data.get("attempts", 0)),
                last_error=data.get("last_error"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"outbox: {exc}") from exc


@dataclass
class CycleState:
    findings_since: dict[str, datetime] = field(default_factory=dict)
    """Finding key -> when it first fired in an unbroken run of cycles."""
    last_cycle_at: datetime | None = None
    alerts: dict[str, AlertGroupState] = field(default_factory=dict)
    """Alert group key -> what its channel was told."""
    outbox: list[PendingMessage] = field(default_factory=list)
    reported_actions: dict[str, datetime] = field(default_factory=dict)
    """``action key|status`` -> when people were told, so a plan repeated every cycle
    is announced once (and again after the repeat interval)."""
    parked: dict[str, AlertGroupState] = field(default_factory=dict)
    """``notifier|group key`` -> groups told through another notifier than this cycle's
    (Slack, while its token is missing and messages go to the console): kept untouched
    until that notifier is back, so that its messages are updated and resolved then."""
    approvals: dict[str, ApprovalRequest] = field(default_factory=dict)
    """Action key -> its request for approval in Slack (``actions.approval``): open ones,
    and closed ones until their message says how they ended."""
    snoozes: list[Snooze] = field(default_factory=list)
    """Silences people set with an alert's Snooze button, until they end."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "last_cycle_at": rfc3339(self.last_cycle_at) if self.last_cycle_at else None,
            "findings_since": {k: rfc3339(v) for k, v in sorted(self.findings_since.items())},
            "alerts": {k: v.to_dict() for k, v in sorted(self.alerts.items())},
            "outbox": [m.to_dict() for m in self.outbox],
            "reported_actions": {k: rfc3339(v) for k, v in sorted(self.reported_actions.items())},
            "parked": {k: v.to_dict() for k, v in sorted(self.parked.items())},
            "approvals": {k: v.to_dict() for k, v in sorted(self.approvals.items())},
            "snoozes": [s.to_dict() for s in self.snoozes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CycleState:
        """Parse (version 1 states too: they had no alert memory); raise ValueError
        naming the offending key."""
        if data.get("version") not in _READABLE_VERSIONS:
            raise ValueError(
                f"version: expected one of {list(_READABLE_VERSIONS)}, got {data.get('version')!r}"
            )
        since = data.get("findings_since") or {}
        if not isinstance(since, dict):
            raise ValueError("findings_since: expected a mapping of finding key to instant")
        alerts = data.get("alerts") or {}
        if not isinstance(alerts, dict):
            raise ValueError("alerts: expected a mapping of group key to alert state")
        outbox = data.get("outbox") or []
        if not isinstance(outbox, list):
            raise ValueError("outbox: expected a list of messages")
        reported = data.get("reported_actions") or {}
        if not isinstance(reported, dict):
            raise ValueError("reported_actions: expected a mapping of key to instant")
        parked = data.get("parked") or {}
        if not isinstance(parked, dict):
            raise ValueError("parked: expected a mapping of notifier|group key to alert state")
        approvals = data.get("approvals") or {}
        if not isinstance(approvals, dict):
            raise ValueError("approvals: expected a mapping of action key to request")
        snoozes = data.get("snoozes") or []
        if not isinstance(snoozes, list):
            raise ValueError("snoozes: expected a list of snoozes")
        last = data.get("last_cycle_at")
        return cls(
            findings_since={str(k): parse_instant(str(v)) for k, v in since.items()},
            last_cycle_at=parse_instant(last) if last else None,
            alerts={str(k): AlertGroupState.from_dict(str(k), v) for k, v in alerts.items()},
            outbox=[PendingMessage.from_dict(m) for m in outbox],
            reported_actions={str(k): parse_instant(str(v)) for k, v in reported.items()},
            parked={
                str(k): AlertGroupState.from_dict(str(k).split("|", 1)[-1], v)
                for k, v in parked.items()
            },
            approvals={str(k): ApprovalRequest.from_dict(str(k), v) for k, v in approvals.items()},
            snoozes=[Snooze.from_dict(v) for v in snoozes],
        )

    def copy(self) -> CycleState:
        """A deep copy (through the serialised form: the one shape the state has)."""
        return CycleState.from_dict(self.to_dict())


def _instant(moment: datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None


def _parse(text: object) -> datetime | None:
    return parse_instant(str(text)) if text else None
