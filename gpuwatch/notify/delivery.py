"""Carrying a cycle's steps out through a notifier, and remembering what came of each.

Every step is one or two deliveries; each delivery is recorded as a ``Notification``
whether it arrived or not, and its outcome is written into the alert state, so that the
next cycle knows what the channel was told: the message id to update, when the group was
posted (reminders count from there), or since when delivering has failed. What to do for
a step depends on its intent alone, one handler each.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gpuwatch.model.alerts import AlertPolicy
from gpuwatch.model.findings import DataQualityNote
from gpuwatch.model.result import Notification
from gpuwatch.model.state import AlertGroupState
from gpuwatch.notify.base import Delivery, DeliveryKind, DeliveryResult, Notifier
from gpuwatch.notify.compose import Message, compose_resolved
from gpuwatch.notify.grouping import Group
from gpuwatch.notify.planning import Intent, Step


@dataclass
class Outcome:
    """What delivering said (a notification per delivery, arrived or not) and what it
    gave up on (a note each)."""

    notifications: list[Notification] = field(default_factory=list)
    notes: list[DataQualityNote] = field(default_factory=list)


def carry(notifier: Notifier, step: Step, delivery: Delivery, outcome: Outcome) -> DeliveryResult:
    """Deliver one message of ``step`` and record it in ``outcome``, delivered or not."""
    result = notifier.send(delivery)
    # An update keeps the message it changes; anything else is a message of its own.
    ts = delivery.ts if delivery.kind == "update" else result.ts
    outcome.notifications.append(
        Notification(
            group_key=",".join(step.group_keys)
            if len(step.group_keys) <= 3
            else f"{len(step.group_keys)} groups",
            channel=step.channel,
            title=step.message.title,
            text=step.message.text,
            blocks=step.message.blocks,
            finding_keys=step.finding_keys,
            status=notifier.delivered_status if result.ok else "failed",
            error=None if result.ok else result.error,
            kind=step.intent.value,
            ts=ts if result.ok else None,
        )
    )
    return result


def delivery_of(
    kind: DeliveryKind, channel: str, message: Message, ts: str | None = None
) -> Delivery:
    """A composed message as one delivery (``ts``: the message to update or reply to)."""
    return Delivery(kind, channel, message.text, message.blocks, ts)


@dataclass(frozen=True)
class _Cycle:
    """What every handler works with."""

    alerts: dict[str, AlertGroupState]
    """Where outcomes are recorded (mutated)."""
    current: Mapping[str, Group]
    """This cycle's groups by key."""
    notifier: Notifier
    at: datetime
    outcome: Outcome

    def carry(self, step: Step, delivery: Delivery) -> DeliveryResult:
        return carry(self.notifier, step, delivery, self.outcome)

    def failed(self, known: AlertGroupState, result: DeliveryResult) -> None:
        """The group's message is still owed: retried next cycle, given up after a time."""
        known.failed_since = known.failed_since or self.at
        known.last_error = result.error or "delivery failed"


def deliver(
    steps: Sequence[Step],
    alerts: dict[str, AlertGroupState],
    current: Mapping[str, Group],
    notifier: Notifier,
    at: datetime,
    policy: AlertPolicy,
) -> Outcome:
    """Carry out the steps in order, recording each outcome in ``alerts`` (mutated);
    then give up the resolutions undelivered for longer than ``undelivered_max_age``."""
    cycle = _Cycle(alerts, current, notifier, at, Outcome())
    for step in steps:
        _HANDLERS[step.intent](step, cycle)
    _give_up_resolutions(cycle, timedelta(seconds=policy.undelivered_max_age_s))
    return cycle.outcome


def _post(step: Step, cycle: _Cycle) -> None:
    """A new group, a reminder, or a digest of new groups: one new message."""
    result = cycle.carry(step, delivery_of("post", step.channel, step.message))
    name = cycle.notifier.name
    for key in step.group_keys:
        known = cycle.alerts[key]
        if not result.ok:
            cycle.failed(known, result)
            continue
        group = cycle.current[key]
        known.notifier = name
        # A service that names no message (a webhook) still delivered it.
        known.ts = result.ts or f"{name}@{cycle.at.isoformat()}"
        known.channel_id = result.channel
        known.posted_at = known.notified_at = cycle.at
        known.fingerprint, known.findings = group.fingerprint, len(group.findings)
        known.digest = step.intent == Intent.DIGEST
        known.failed_since, known.last_error = None, None


def _update(step: Step, cycle: _Cycle) -> None:
    """A told group changed: its message is rewritten in place."""
    known = cycle.alerts[step.group_keys[0]]
    channel = known.channel_id or known.channel
    result = cycle.carry(step, delivery_of("update", channel, step.message, known.ts))
    if result.ok:
        known.notified_at = cycle.at
        known.fingerprint, known.findings = step.fingerprint, step.findings
        known.failed_since, known.last_error = None, None
        return
    if result.error and "message_not_found" in result.error:
        known.ts = None  # deleted in Slack: post it afresh next cycle
    cycle.failed(known, result)


def _resolve(step: Step, cycle: _Cycle) -> None:
    """A told group stopped firing: its message is marked resolved and a reply in its
    thread says so; a service that only posts gets the resolution as a new message."""
    key = step.group_keys[0]
    known = cycle.alerts[key]
    assert known.resolved_at is not None
    updated, reply = compose_resolved(
        known.title, known.started_at, known.resolved_at, known.resolution, step.detail
    )
    channel = known.channel_id or known.channel
    if not cycle.notifier.updates_in_place:
        result = cycle.carry(step, delivery_of("post", known.channel, updated))
    else:
        if not known.digest:
            # Best effort: the thread reply is what must arrive; a message deleted in
            # Slack, say, still gets its resolution recorded.
            marked = Step(Intent.RESOLVED, (key,), step.channel, updated)
            cycle.carry(marked, delivery_of("update", channel, updated, known.ts))
        result = cycle.carry(step, delivery_of("reply", channel, reply, known.ts))
    if result.ok:
        del cycle.alerts[key]
    else:
        cycle.failed(known, result)


def _post_resolved_digest(step: Step, cycle: _Cycle) -> None:
    """Many groups resolved at once: one message lists them, no reply each."""
    result = cycle.carry(step, delivery_of("post", step.channel, step.message))
    for key in step.group_keys:
        if result.ok:
            cycle.alerts.pop(key, None)
        else:
            cycle.failed(cycle.alerts[key], result)


_HANDLERS: Mapping[Intent, Callable[[Step, _Cycle], None]] = {
    Intent.NEW: _post,
    Intent.REMINDER: _post,
    Intent.DIGEST: _post,
    Intent.UPDATE: _update,
    Intent.RESOLVED: _resolve,
    Intent.RESOLVED_DIGEST: _post_resolved_digest,
}
"""One handler per intent a plan makes. ``ACTIONS`` is not among them: the outbox
delivers one-off messages itself (``gpuwatch.notify.outbox``)."""


def _give_up_resolutions(cycle: _Cycle, max_age: timedelta) -> None:
    """Resolutions that could not be delivered for too long are given up, with a note:
    the channel keeps a stale message rather than the state growing without end."""
    for key, known in list(cycle.alerts.items()):
        if (
            known.resolved_at is not None
            and known.failed_since is not None
            and cycle.at - known.failed_since > max_age
        ):
            cycle.outcome.notes.append(
                DataQualityNote(
                    kind="notify",
                    message=f"gave up telling {known.channel} that '{known.title}' resolved: "
                    f"undelivered since {known.failed_since.isoformat()} ({known.last_error})",
                )
            )
            del cycle.alerts[key]
