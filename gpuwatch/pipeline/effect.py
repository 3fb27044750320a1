"""The third phase of a cycle: everything it does to the world, each effect recorded.

In order: actions (only when writes are allowed and this instance holds the actions
Lease; migrations started earlier are followed up first), then messages (after the
actions, so that a chat service that is down never holds them up, and so that people
hear what was done), then the state the next cycle starts from. Every action and every
message becomes part of the ``CycleResult``, delivered or not; nothing here raises for
an adapter's failure.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from gpuwatch.actuators.base import FollowUp
from gpuwatch.analysis.savings import totals
from gpuwatch.config.settings import Settings
from gpuwatch.model.actions import Action, ActionStatus
from gpuwatch.model.alerts import RulePolicy
from gpuwatch.model.errors import StateError
from gpuwatch.model.findings import DataQualityNote
from gpuwatch.model.result import AlertSummary, CycleResult, Notification
from gpuwatch.model.state import CycleState
from gpuwatch.notify.approval_delivery import tell_running
from gpuwatch.notify.delivery import Outcome
from gpuwatch.notify.lifecycle import ApprovalsToTell, NotifyResult, notify_cycle
from gpuwatch.notify.outbox import flush_outbox
from gpuwatch.notify.snoozes import SnoozeOutcome, apply_snoozes, as_silences
from gpuwatch.pipeline.analyse import Analysis
from gpuwatch.pipeline.components import Components
from gpuwatch.pipeline.gather import Gathered
from gpuwatch.planners.approval import settle
from gpuwatch.planners.freshness import Freshness
from gpuwatch.state.base import StateStore

log = logging.getLogger(__name__)


def effect(
    gathered: Gathered,
    analysis: Analysis,
    components: Components,
    settings: Settings,
    started: float | None = None,
) -> CycleResult:
    """Act, tell, remember; the cycle's result. ``started`` (monotonic) times it."""
    started = time.monotonic() if started is None else started
    notes = list(analysis.notes)
    if not analysis.complete:
        # Nothing was judged: keep the state as it was, act on nothing, and deliver
        # only the messages already owed (the outbox).
        state = gathered.state
        outcome = flush_outbox(state, components.notifier, analysis.at, settings.alert_policy())
        notes.extend(outcome.notes)
        if outcome.notifications:
            notes.extend(_save(components.state, state))
        return CycleResult(
            at=analysis.at,
            cluster_name=settings.cluster.name,
            source=analysis.source,
            data_quality=tuple(notes),
            notifications=tuple(outcome.notifications),
            alerts=AlertSummary(outbox=len(state.outbox)),
            errors=analysis.errors,
            dry_run=settings.dry_run,
            duration_s=time.monotonic() - started,
        )
    admission = analysis.admission
    running = Outcome()
    if admission is not None and gathered.writable and gathered.state_readable:
        tell_running(
            admission.approved(), gathered.approval, components.notifier, analysis.at, running
        )
    actions = act(gathered, analysis, components, settings, started)
    if admission is not None:
        settle(admission, actions, analysis.at)
    snoozed = _snoozes(gathered, settings)
    delivered: tuple[Notification, ...] = tuple(running.notifications)
    summary = AlertSummary()
    if gathered.state_readable:
        told = _tell(gathered, analysis, actions, components, settings, snoozed)
        notes.extend(told.notes)
        delivered += tuple(told.notifications)
        summary = told.summary
        # What people were told (alerts, outbox, parked groups, approval requests),
        # since when each finding has fired, and the snoozes: all the next cycle needs.
        new_state = replace(
            told.state,
            findings_since=analysis.findings_since(),
            last_cycle_at=analysis.at,
            snoozes=snoozed.snoozes,
        )
        notes.extend(_save(components.state, new_state))
    else:
        notes.append(
            DataQualityNote(
                kind="notify",
                message="no messages sent and no state saved: the state could not be read",
            )
        )
    return CycleResult(
        at=analysis.at,
        cluster_name=settings.cluster.name,
        source=analysis.source,
        findings=analysis.findings,
        data_quality=tuple(notes),
        notifications=delivered,
        alerts=summary,
        pending_gpu_pods=analysis.pending,
        budgets=analysis.budgets,
        cost=analysis.cost,
        savings=analysis.savings.savings,
        savings_excluded=analysis.savings.excluded,
        savings_totals=totals(analysis.savings.savings),
        actions=tuple(actions),
        approvals=(*(admission.records if admission else ()), *snoozed.records),
        dry_run=settings.dry_run,
        duration_s=time.monotonic() - started,
    )


def act(
    gathered: Gathered,
    analysis: Analysis,
    components: Components,
    settings: Settings,
    started: float | None = None,
) -> list[Action]:
    """The planned actions carried out where writes are allowed; as planned otherwise.

    Every write is gated: the actions Lease (taken, then renewed before each action, and
    released at the end so the next run need not wait), the kill switch and live data
    (follow-ups of earlier migrations included), and the cycle's write deadline
    (``actions.deadline`` after ``started``, monotonic)."""
    actuator = components.actuator
    planned = list(analysis.actions)
    if not gathered.writable or actuator is None:
        return planned
    started = time.monotonic() if started is None else started
    deadline = started + settings.actions.deadline_s
    refusal = actuator.exclusive()
    if refusal is not None:
        return [_refused(a, refusal) for a in planned]
    try:
        # Migrations started in earlier cycles are confirmed, or moved back, first.
        outcomes = actuator.follow_up(
            FollowUp(
                settings.actions.migration,
                analysis.progress,
                _follow_up_gate(gathered, settings),
            )
        )
        for action in planned:
            if action.status is not ActionStatus.PLANNED or action.dry_run:
                outcomes.append(actuator.apply(action))
                continue
            left_s = deadline - time.monotonic()
            lost = actuator.exclusive() if left_s > 0 else None
            if left_s <= 0:
                outcomes.append(
                    actuator.apply(
                        _refused(action, "the cycle's write deadline (actions.deadline) passed")
                    )
                )
            elif lost is not None:
                outcomes.append(actuator.apply(_refused(action, lost)))
            else:
                outcomes.append(actuator.apply(action, left_s))
        return outcomes
    finally:
        actuator.release()


def _refused(action: Action, reason: str) -> Action:
    if action.status is not ActionStatus.PLANNED:
        return action
    return replace(action, status=ActionStatus.REFUSED, reason=reason)


def _follow_up_gate(gathered: Gathered, settings: Settings) -> str:
    """Why follow-ups may not write this cycle (empty when they may): they are writes
    like any other."""
    if not gathered.kill_switch_on:
        return f"kill switch {settings.actions.kill_switch} is not 'true'"
    if gathered.clock_at is None:
        return "no clock reading: nothing is written"
    live = Freshness(gathered.at, gathered.clock_at, settings.actions.max_data_age_s, 0, {})
    return live.refusal()


def _tell(
    gathered: Gathered,
    analysis: Analysis,
    actions: list[Action],
    components: Components,
    settings: Settings,
    snoozed: SnoozeOutcome,
) -> NotifyResult:
    """Tell people what changed; the result holds the state of what they were told."""
    rules = components.rules
    policy = RulePolicy(
        titles={rule.id: rule.title or rule.id for rule in rules},
        hold_s={rule.id: rule.for_s for rule in rules if rule.for_s},
        waste=frozenset(rule.id for rule in rules if rule.waste),
    )
    return notify_cycle(
        analysis.findings,
        actions,
        gathered.state,
        components.notifier,
        analysis.at,
        settings.alert_policy(),
        policy,
        [
            *(silence.to_domain() for silence in (*settings.notify.silences, *gathered.silences)),
            *as_silences(snoozed.snoozes),
        ],
        analysis.gpu_prices(),
        settings.dry_run,
        hold_new=gathered.silences_unknown,
        approvals=ApprovalsToTell(
            analysis.admission.requests, analysis.admission.records, gathered.approval
        )
        if analysis.admission is not None
        else None,
        snoozable=gathered.approval.interactive,
    )


def _snoozes(gathered: Gathered, settings: Settings) -> SnoozeOutcome:
    """The snoozes in force after this cycle's Snooze clicks (each checked against the
    owners of the group's teams)."""
    return apply_snoozes(
        gathered.answers.snoozes,
        gathered.state.snoozes,
        settings.notify.slack.interactivity.owners(),
        gathered.answers.members,
        gathered.at,
    )


def _save(store: StateStore, state: CycleState) -> tuple[DataQualityNote, ...]:
    """Save ``state``; a note when it could not be (the next cycle then starts from the
    state before this one, and tells people again what they were told now)."""
    try:
        store.save(state)
    except (OSError, StateError) as exc:
        log.warning("state not saved: %s", exc)
        return (DataQualityNote(kind="state", message=f"state not saved: {exc}"),)
    return ()
