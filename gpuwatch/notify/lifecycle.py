"""The alert lifecycle: which messages a cycle sends, so that a channel stays worth reading.

Alertmanager's model, applied to cycles. Each finding is routed to a channel (first
matching route) and grouped there by ``group_by``; a rule's ``for`` holds a finding back
until it has fired that long, and silences mute it (``gpuwatch.notify.grouping``). Then,
per group (``gpuwatch.notify.planning``):

- new: posted once it has been seen for ``group_wait``;
- changed (GPUs added or gone): its message is updated in place, at most every
  ``group_interval``;
- still firing after ``repeat_interval``: posted again as a reminder;
- gone: its message is marked resolved and a reply in its thread says so
  (``send_resolved``).

The state is the desired-versus-told record of every group, so a failed delivery
(``gpuwatch.notify.delivery``) is simply still due on the next cycle, with the content
of that cycle: nothing is lost and nothing stale is sent. One-off messages (the
cycle's actions) wait in the outbox until delivered (``gpuwatch.notify.outbox``).

This module is the one entry point: one call per cycle, the state in, the next state
and what was said out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from gpuwatch.model.actions import Action
from gpuwatch.model.alerts import AlertPolicy, RulePolicy, Silence
from gpuwatch.model.approvals import ApprovalPolicy, ApprovalRecord, ApprovalRequest
from gpuwatch.model.cost import Price
from gpuwatch.model.findings import DataQualityNote, Finding
from gpuwatch.model.result import AlertSummary, Notification
from gpuwatch.model.state import AlertGroupState, CycleState
from gpuwatch.notify.approval_delivery import Thread, tell_requests
from gpuwatch.notify.base import Notifier
from gpuwatch.notify.delivery import deliver
from gpuwatch.notify.grouping import Grouping, group_findings
from gpuwatch.notify.outbox import actions_message, flush_outbox
from gpuwatch.notify.planning import plan
from gpuwatch.notify.snoozes import with_snooze_buttons


@dataclass
class NotifyResult:
    """What a cycle told people, and the memory of it for the next cycle."""

    state: CycleState
    """``alerts``, ``outbox``, ``reported_actions`` and ``parked`` after this cycle's
    deliveries."""
    notifications: list[Notification]
    notes: list[DataQualityNote]
    summary: AlertSummary


@dataclass
class ApprovalsToTell:
    """The approval requests after this cycle's decisions and outcomes, to be told."""

    requests: dict[str, ApprovalRequest]
    """Mutated as deliveries succeed; the next state's."""
    records: Sequence[ApprovalRecord]
    """This cycle's decisions and outcomes: each is said in its request's thread."""
    policy: ApprovalPolicy


def notify_cycle(
    findings: Sequence[Finding],
    actions: Sequence[Action],
    state: CycleState,
    notifier: Notifier,
    at: datetime,
    policy: AlertPolicy,
    rules: RulePolicy,
    silences: Sequence[Silence] = (),
    prices: Mapping[tuple[str, str], Price] | None = None,
    dry_run: bool = True,
    hold_new: bool = False,
    approvals: ApprovalsToTell | None = None,
    snoozable: bool = False,
) -> NotifyResult:
    """One cycle of the lifecycle: group, plan, deliver; then the actions message and
    whatever one-off messages are still owed. ``state`` is not changed.

    ``hold_new``: post no new group this cycle (the silences could not be read, so a new
    group might be one somebody muted); changes and resolutions still go out.
    ``approvals``: requests to post or update after the alerts (in their threads).
    ``snoozable``: alert messages carry Snooze buttons (their clicks are answered)."""
    grouping = group_findings(findings, policy, rules, silences, prices or {}, at)
    if snoozable:
        grouping = with_snooze_buttons(grouping)
    planned = plan(grouping, state, policy, at, notifier.name, notifier.updates_in_place)
    if hold_new:
        planned = planned.without_new_posts()
    current = {g.key: g for g in grouping.groups}
    outcome = deliver(planned.steps, planned.alerts, current, notifier, at, policy)
    after = CycleState(
        findings_since=dict(state.findings_since),
        last_cycle_at=state.last_cycle_at,
        alerts=planned.alerts,
        outbox=[replace(m) for m in state.outbox],
        reported_actions=dict(state.reported_actions),
        parked=planned.parked,
        approvals=dict(state.approvals),
        snoozes=list(state.snoozes),
    )
    if approvals is not None:
        threads = _threads(actions, grouping, planned.alerts)
        tell_requests(
            approvals.requests, approvals.records, approvals.policy, notifier, at, threads, outcome
        )
        after.approvals = approvals.requests
    pending = actions_message(actions, after, policy, at, dry_run)
    if pending is not None:
        after.outbox.append(pending)
    owed = flush_outbox(after, notifier, at, policy)
    return NotifyResult(
        state=after,
        notifications=outcome.notifications + owed.notifications,
        notes=outcome.notes + owed.notes,
        summary=summarize(grouping, planned.alerts, planned.deferred, len(after.outbox)),
    )


def summarize(
    grouping: Grouping, alerts: Mapping[str, AlertGroupState], deferred: Sequence[str], outbox: int
) -> AlertSummary:
    """Where the alerts stand after the cycle's deliveries, beyond the messages sent."""
    undelivered = sorted(k for k, v in alerts.items() if v.failed_since is not None)
    waiting = sorted(k for k, v in alerts.items() if v.ts is None and v.failed_since is None)
    return AlertSummary(
        firing_groups=len(grouping.groups),
        held_findings=grouping.held,
        silenced_findings=grouping.silenced_findings,
        waiting_groups=tuple(waiting),
        undelivered_groups=tuple(undelivered),
        deferred_groups=tuple(sorted(deferred)),
        outbox=outbox,
    )


def _threads(
    actions: Sequence[Action], grouping: Grouping, alerts: Mapping[str, AlertGroupState]
) -> dict[str, Thread]:
    """Action key -> the message of the most severe told group among the findings that
    caused it (a node's, for a scale-down; a workload's, for a move)."""
    threads: dict[str, Thread] = {}
    for action in actions:
        node = action.target.removeprefix("Node/") if action.target.startswith("Node/") else None
        for group in grouping.groups:
            known = alerts.get(group.key)
            if known is None or not known.ts or not known.channel_id or known.digest:
                continue
            if any(f.node == node or f.workload == action.target for f in group.findings):
                threads[action.key] = Thread(known.channel, known.channel_id, known.ts)
                break
    return threads
