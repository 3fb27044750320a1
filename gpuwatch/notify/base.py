"""The notify seam: one call to a chat service (post, update in place, reply in a
thread), and what came of it.

The alert lifecycle (``gpuwatch.notify.lifecycle``) decides *what* to say and remembers
what was said; a notifier only carries one delivery at a time and reports the outcome. A
notifier never raises for a delivery failure: the failure is an outcome, recorded in
the state and retried on a later cycle, so that nothing is lost.

What a notifier can do is said by its capability flags, never by its class: callers ask
``updates_in_place``, ``can_attach`` or ``posts_to_chat``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from gpuwatch.model.approvals import ApprovalPolicy, ApprovalRequest, Decision, SnoozeRequest

DeliveryKind = Literal["post", "update", "reply"]


@dataclass(frozen=True)
class Delivery:
    kind: DeliveryKind
    channel: str
    """Where to: a channel name (``#gpu-alerts``) or id for a post; for an update or a
    reply, the channel id the service returned when the message was posted."""
    text: str
    """Plain-text fallback: notifications, screen readers, the console."""
    blocks: tuple[dict[str, Any], ...] = ()
    ts: str | None = None
    """update: the message to change; reply: the message whose thread to reply in."""


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    ts: str | None = None
    """The posted (or updated) message's id, as the service names it."""
    channel: str | None = None
    """The channel id the service delivered to (needed to update the message later)."""
    error: str | None = None
    """What went wrong, in words that name the cause (``invalid_auth``, HTTP 500, ...);
    never a token or a webhook URL."""
    permanent: bool = False
    """True when trying again without a change of configuration cannot help
    (``invalid_auth``, ``channel_not_found``). A notifier refuses further sends with the
    same credentials (or to the same channel) itself, so a cycle makes one such request;
    later cycles, with a fresh notifier, try once each."""


class Notifier(Protocol):
    name: str
    """Identifies where messages went: a message id from one notifier means nothing to
    another, so the alert state starts afresh when this changes."""
    updates_in_place: bool
    """False for services that can only post (incoming webhooks): updates and thread
    replies are then posted as new messages."""
    delivered_status: str
    """The ``Notification.status`` of a delivered message: ``sent``, or ``printed`` and
    ``composed`` for the console and for recording."""
    can_attach: bool
    """Whether ``attach`` can put a file in a posted message's thread; False for services
    that can only post text (incoming webhooks)."""
    posts_to_chat: bool
    """Whether deliveries reach people in a chat service. The console and recording only
    show or keep them: what is said only for a chat (the weekly report's summary, which
    the command prints anyway) is not sent through them."""

    def send(self, delivery: Delivery) -> DeliveryResult:
        """Deliver one message; never raises for a delivery failure."""
        ...

    def attach(
        self, posted: DeliveryResult, filename: str, content: bytes, title: str
    ) -> DeliveryResult:
        """Attach a file in the thread of the message ``posted`` (the result of this
        notifier's post); never raises for a failure, and fails when ``can_attach`` is
        False or ``posted`` names no delivered message."""
        ...


@dataclass(frozen=True)
class Answers:
    """What people said in Slack since the last cycle, as an approval source read it."""

    decisions: tuple[Decision, ...] = ()
    snoozes: tuple[SnoozeRequest, ...] = ()
    members: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """User group -> its members, for the groups the policy names."""
    errors: tuple[str, ...] = ()
    """What could not be read (a group's members, a message's reactions): each becomes
    a data-quality note; what was read still counts."""


@dataclass(frozen=True)
class Asked:
    """What a cycle asks an approval source: the open requests, and what judges answers."""

    requests: Sequence[ApprovalRequest]
    policy: ApprovalPolicy
    at: datetime
    owner_groups: frozenset[str] = frozenset()
    """User groups named as the owners who may snooze (besides the policy's approvers)."""


class ApprovalSource(Protocol):
    """Where decisions come from: reactions on the request messages (read every cycle),
    and clicks a daemon received since the last cycle."""

    interactive: bool
    """Clicks are answered: requests carry buttons, alerts carry Snooze."""

    def read(self, asked: Asked) -> Answers:
        """The decisions on the open requests and the snoozes, with the members of the
        user groups that judge them; never raises for Slack's failures (they are
        ``errors``)."""
        ...
