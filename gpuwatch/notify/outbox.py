"""One-off messages owed to people: the cycle's actions, kept in the state until they
are delivered.

An alert group's message is re-derived every cycle from what fires; an announcement
that a node was drained is not, so it waits in ``CycleState.outbox`` and is retried
every cycle (the one that composed it included) until it arrives or is too old to
matter (``undelivered_max_age``). The outbox is also all a cycle delivers when its
sources failed: what is owed does not wait for Prometheus.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from gpuwatch.model.actions import Action
from gpuwatch.model.alerts import AlertPolicy
from gpuwatch.model.findings import DataQualityNote
from gpuwatch.model.state import CycleState, PendingMessage
from gpuwatch.notify.base import Notifier
from gpuwatch.notify.compose import Message, compose_actions
from gpuwatch.notify.delivery import Outcome, carry, delivery_of
from gpuwatch.notify.planning import Intent, Step


def actions_message(
    actions: Sequence[Action],
    state: CycleState,
    policy: AlertPolicy,
    at: datetime,
    dry_run: bool,
) -> PendingMessage | None:
    """The cycle's actions people have not been told of yet (a plan repeated every cycle
    is announced once, and again after ``repeat_interval``); records them as told in
    ``state.reported_actions`` (mutated)."""
    repeat = timedelta(seconds=policy.repeat_interval_s)
    for key, told in list(state.reported_actions.items()):
        if at - told >= repeat:
            del state.reported_actions[key]
    # A new status of the same action (planned, then done) is news of its own.
    fresh = [a for a in actions if f"{a.key}|{a.status}" not in state.reported_actions]
    message = compose_actions(fresh, dry_run)
    if message is None:
        return None
    for action in fresh:
        state.reported_actions[f"{action.key}|{action.status}"] = at
    return PendingMessage(
        key=f"actions@{at.isoformat()}",
        channel=policy.channel,
        title=message.title,
        text=message.text,
        blocks=list(message.blocks),
        created_at=at,
    )


def flush_outbox(
    state: CycleState, notifier: Notifier, at: datetime, policy: AlertPolicy
) -> Outcome:
    """Deliver the one-off messages waiting in ``state.outbox`` (mutated), oldest first;
    keep the ones that fail, give up on those older than ``undelivered_max_age`` with a
    note."""
    outcome = Outcome()
    limit = timedelta(seconds=policy.undelivered_max_age_s)
    kept: list[PendingMessage] = []
    for pending in state.outbox:
        message = Message(pending.title, pending.text, tuple(pending.blocks))
        step = Step(Intent.ACTIONS, (pending.key,), pending.channel, message)
        result = carry(notifier, step, delivery_of("post", pending.channel, message), outcome)
        if result.ok:
            continue
        pending.attempts += 1
        pending.last_error = result.error
        if at - pending.created_at > limit:
            outcome.notes.append(
                DataQualityNote(
                    kind="notify",
                    message=f"gave up delivering '{pending.title}' to {pending.channel} after "
                    f"{pending.attempts} attempts: {result.error}",
                )
            )
            continue
        kept.append(pending)
    state.outbox = kept
    return outcome
