"""Human approval of actions: who may say yes, what they said, and what came of it.

An action under approval runs only once a named approver has approved its key in Slack
(a button, or a reaction where nothing listens for buttons), and only while that
approval is fresh. The request is one Slack message per action key, updated in place
through its life; these types are that life as the state remembers it between cycles,
and the audit trail (who decided what, when, through which way in) the cycle JSON and
the weekly report carry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from gpuwatch.model.durations import parse_instant, rfc3339


class Verdict(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class RequestStatus(StrEnum):
    AWAITING = "awaiting"
    """Posted; nobody with the right has decided."""
    APPROVED = "approved"
    """Approved and not yet run: runs on the next cycle that plans it, until it expires."""
    REJECTED = "rejected"
    """Rejected: the action is held back until ``until``."""
    DONE = "done"
    FAILED = "failed"
    REFUSED = "refused"
    """Approved, but a guard said no when it came to run (or it was no longer planned)."""
    EXPIRED = "expired"
    """Approved, and not run before the approval expired."""
    WITHDRAWN = "withdrawn"
    """No longer planned before anybody decided."""


OPEN = frozenset({RequestStatus.AWAITING, RequestStatus.APPROVED, RequestStatus.REJECTED})
"""A request in one of these is still deciding what its action may do."""


@dataclass(frozen=True)
class Approvers:
    """Who may decide one pool's actions: Slack user ids (``U…``, ``W…``) and user
    groups (``S…``), whose members are looked up every cycle."""

    users: frozenset[str] = frozenset()
    groups: tuple[str, ...] = ()

    def allows(self, user: str, members: Mapping[str, frozenset[str]]) -> bool:
        """``user`` is named, or in a named group (``members``: group -> its users)."""
        return user in self.users or any(user in members.get(g, frozenset()) for g in self.groups)

    def mention(self) -> str:
        """As Slack renders them: ``<@U123>, <!subteam^S456>``; "nobody" when empty."""
        named = [f"<@{u}>" for u in sorted(self.users)] + [f"<!subteam^{g}>" for g in self.groups]
        return ", ".join(named) or "nobody (no approver is configured)"


@dataclass(frozen=True)
class ApprovalPolicy:
    """Which actions wait for a person, and the rules of deciding."""

    pools: Mapping[str, Approvers | None] = field(default_factory=dict)
    """Pool -> its approvers, or None where the pool's actions run without approval."""
    default: Approvers | None = None
    """Actions of pools not listed (and of no pool): approvers, or None (automatic)."""
    ttl_s: int = 3600
    """How long an approval stays good for: not run by then, it expires."""
    reject_ttl_s: int = 86400
    """How long a rejection holds the action back; then it may be asked for again."""
    approve_reaction: str = "white_check_mark"
    reject_reaction: str = "x"
    channel: str | None = None
    """Where requests go without an alert thread to go in; None: the alerts' channel."""
    interactive: bool = False
    """Buttons are answered (a daemon with Socket Mode or the HTTP endpoint); without,
    people decide with reactions, which every cycle reads."""

    def approvers_for(self, pool: str | None) -> Approvers | None:
        if pool is not None and pool in self.pools:
            return self.pools[pool]
        return self.default

    @property
    def active(self) -> bool:
        return self.default is not None or any(v is not None for v in self.pools.values())

    def groups(self) -> frozenset[str]:
        """Every user group named anywhere: whose members a cycle looks up."""
        named = [a for a in (self.default, *self.pools.values()) if a is not None]
        return frozenset(g for a in named for g in a.groups)


@dataclass(frozen=True)
class Decision:
    """Somebody's answer to a request, as it arrived."""

    key: str
    """The action key it answers."""
    verdict: Verdict
    user: str
    at: datetime
    via: str
    """``button`` (Socket Mode), ``http`` (the interactivity endpoint) or ``reaction``."""
    message_ts: str | None = None
    """The request message it was given on: a click on an older request is not one on
    the current."""


@dataclass(frozen=True)
class SnoozeRequest:
    """Somebody pressed Snooze on an alert group's message."""

    group_key: str
    user: str
    at: datetime
    duration_s: int
    via: str
    teams: tuple[str, ...] = ()
    """The group's teams, as its message listed them: whose owners may snooze it."""


@dataclass(frozen=True)
class ApprovalRecord:
    """One line of the audit trail: a decision, or what became of an approved action."""

    at: datetime
    key: str
    target: str
    event: str
    """``requested``, ``approve``, ``reject``, ``ignored``, ``expired``, ``done``,
    ``failed``, ``refused``, ``withdrawn``, ``snooze``."""
    user: str | None = None
    via: str | None = None
    detail: str = ""
    message_ts: str | None = None
    """The request message it is about (its thread hears of it)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": rfc3339(self.at),
            "key": self.key,
            "target": self.target,
            "event": self.event,
            "user": self.user,
            "via": self.via,
            "detail": self.detail,
        }


@dataclass
class ApprovalRequest:
    """One action's request for approval, as its Slack message knows it."""

    key: str
    kind: str
    target: str
    pool: str | None
    channel: str
    requested_at: datetime
    status: RequestStatus = RequestStatus.AWAITING
    what: str = ""
    """The action in words, and why: what the message says it will do."""
    saving: str = ""
    """The saving it buys, in words (its net figure)."""
    dry_run: bool = True
    channel_id: str | None = None
    ts: str | None = None
    """The request message; None until posted."""
    thread_ts: str | None = None
    """The alert whose thread it is posted in, if any."""
    decided_by: str | None = None
    decided_at: datetime | None = None
    until: datetime | None = None
    """Approved: when the approval expires; rejected: when the hold ends."""
    reason: str = ""
    """Why it ended as it did (refused, failed, withdrawn, expired)."""
    told: str = ""
    """The status its message last showed: a change is an update in place."""
    ignored: list[str] = field(default_factory=list)
    """Users whose decision was not taken (not approvers), told once each."""
    failed_since: datetime | None = None
    last_error: str | None = None

    @property
    def open(self) -> bool:
        return self.status in OPEN

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "pool": self.pool,
            "channel": self.channel,
            "requested_at": rfc3339(self.requested_at),
            "status": str(self.status),
            "what": self.what,
            "saving": self.saving,
            "dry_run": self.dry_run,
            "channel_id": self.channel_id,
            "ts": self.ts,
            "thread_ts": self.thread_ts,
            "decided_by": self.decided_by,
            "decided_at": _instant(self.decided_at),
            "until": _instant(self.until),
            "reason": self.reason,
            "told": self.told,
            "ignored": list(self.ignored),
            "failed_since": _instant(self.failed_since),
            "last_error": self.last_error,
        }

    @classmethod
    def from_dict(cls, key: str, data: Mapping[str, Any]) -> ApprovalRequest:
        try:
            return cls(
                key=key,
                kind=str(data["kind"]),
                target=str(data["target"]),
                pool=data.get("pool"),
                channel=str(data["channel"]),
                requested_at=parse_instant(str(data["requested_at"])),
                status=RequestStatus(str(data.get("status", "awaiting"))),
                what=str(data.get("what", "")),
                saving=str(data.get("saving", "")),
                dry_run=bool(data.get("dry_run", True)),
                channel_id=data.get("channel_id"),
                ts=data.get("ts"),
                thread_ts=data.get("thread_ts"),
                decided_by=data.get("decided_by"),
                decided_at=_parse(data.get("decided_at")),
                until=_parse(data.get("until")),
                reason=str(data.get("reason", "")),
                told=str(data.get("told", "")),
                ignored=[str(u) for u in data.get("ignored") or []],
                failed_since=_parse(data.get("failed_since")),
                last_error=data.get("last_error"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"approvals.{key}: {exc}") from exc


@dataclass(frozen=True)
class Snooze:
    """A silence somebody set from Slack: the group's findings are muted until ``until``."""

    group_key: str
    match: Mapping[str, str]
    """The group's labels (rule, pool, ...): what the silence matches."""
    user: str
    at: datetime
    until: datetime

    @property
    def comment(self) -> str:
        return f"snoozed from Slack by <@{self.user}>"

    def to_dict(self) -> dict[str, Any]:
        return {
            "group_key": self.group_key,
            "match": dict(self.match),
            "user": self.user,
            "at": rfc3339(self.at),
            "until": rfc3339(self.until),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snooze:
        try:
            return cls(
                group_key=str(data["group_key"]),
                match={str(k): str(v) for k, v in dict(data["match"]).items()},
                user=str(data["user"]),
                at=parse_instant(str(data["at"])),
                until=parse_instant(str(data["until"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"snoozes: {exc}") from exc


def _instant(moment: datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None


def _parse(text: object) -> datetime | None:
    return parse_instant(str(text)) if text else None
