"""The alert lifecycle: which messages a cycle sends, so that a channel stays worth reading.

Alertmanager's model, applied to cycles. Each finding is routed to a channel (first
matching route) and grouped there by ``notify.group_by``; a rule's ``for`` holds a
finding back until it has fired that long, and silences mute it. Then, per group:

- new: posted once it has been seen for ``group_wait``;
- changed (GPUs added or gone): its message is updated in place, at most every
  ``group_interval``;
- still firing after ``repeat_interval``: posted again as a reminder;
- gone: its message is marked resolved and a reply in its thread says so
  (``send_resolved``).

The state is the desired-versus-told record of every group, so a failed delivery is
simply still due on the next cycle, with the content of that cycle: nothing is lost
and nothing stale is sent. More new messages to one channel than ``digest_over`` in
one cycle become one digest; updates beyond it wait for the next cycle.

``plan`` is pure (findings and state in, steps out); ``deliver`` carries the steps out
through a notifier and records each outcome in the state.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Literal

from gpuwatch.config.settings import AlertMatch, NotifySettings, Silence
from gpuwatch.model.actions import Action
from gpuwatch.model.cost import Price
from gpuwatch.model.findings import DataQualityNote, Finding, Severity
from gpuwatch.model.result import AlertSummary, Notification
from gpuwatch.model.state import AlertGroupState, CycleState, PendingMessage
from gpuwatch.notify.base import Delivery, Notifier
from gpuwatch.notify.compose import (
    GroupContext,
    Message,
    compose_actions,
    compose_digest,
    compose_group,
    compose_resolved,
    group_severity,
    severity_rank,
)

Intent = Literal["new", "reminder", "update", "resolved", "digest", "resolved-digest", "actions"]
MAX_TOLERANCE_S = 30.0


@dataclass(frozen=True)
class RulePolicy:
    """What the rules say about notifying their findings."""

    titles: Mapping[str, str] = field(default_factory=dict)
    hold_s: Mapping[str, int] = field(default_factory=dict)
    """Rule -> its ``for``: how long a finding fires before it is notified."""
    waste: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Group:
    key: str
    channel: str
    findings: tuple[Finding, ...]
    message: Message
    severity: Severity
    fingerprint: str
    context: GroupContext


@dataclass(frozen=True)
class Grouping:
    groups: tuple[Group, ...]
    silenced: Mapping[str, Silence]
    """Group key -> a silence covering (some of) its findings this cycle."""
    held: int
    """Findings not notified yet because of their rule's ``for``."""
    silenced_findings: int


@dataclass(frozen=True)
class Step:
    intent: Intent
    channel: str
    group_keys: tuple[str, ...]
    message: Message
    fingerprint: str = ""
    findings: int = 0
    finding_keys: tuple[str, ...] = ()
    detail: str = ""
    """resolved: why, when it is a silence."""
    severity: str = "info"
    """resolved: the group's severity when it last fired."""


def matches(match: AlertMatch, finding: Finding) -> bool:
    """Every field that is set has a pattern matching the finding's value."""
    values = {
        "rule": finding.rule,
        "severity": str(finding.severity),
        "pool": finding.pool,
        "namespace": finding.namespace,
        "team": finding.team,
        "node": finding.node,
    }
    for name, value in values.items():
        patterns = getattr(match, name)
        if patterns and (value is None or not any(fnmatchcase(value, p) for p in patterns)):
            return False
    if match.gpu:
        names = {finding.gpu_uuid, f"{finding.node}/gpu{finding.gpu_index}"} - {None}
        if not any(fnmatchcase(str(n), p) for n in names for p in match.gpu):
            return False
    return True


def route(finding: Finding, settings: NotifySettings) -> str:
    for candidate in settings.routes:
        if matches(candidate.match, finding):
            return candidate.channel
    return settings.channel


def active_silences(silences: Sequence[Silence], at: datetime) -> list[Silence]:
    return [s for s in silences if s.until > at]


def group_findings(
    findings: Sequence[Finding],
    settings: NotifySettings,
    rules: RulePolicy,
    silences: Sequence[Silence],
    prices: Mapping[tuple[str, str], Price],
    at: datetime,
) -> Grouping:
    """Route, hold, silence and group the cycle's findings; compose each group's message."""
    active = active_silences(silences, at)
    buckets: dict[str, list[Finding]] = defaultdict(list)
    labels_of: dict[str, dict[str, str]] = {}
    channel_of: dict[str, str] = {}
    silenced: dict[str, Silence] = {}
    held = silenced_findings = 0
    for finding in findings:
        channel = route(finding, settings)
        labels = {name: _label(finding, name) for name in settings.group_by}
        key = channel + "|" + ",".join(f"{k}={v}" for k, v in labels.items())
        silence = next((s for s in active if matches(s.match, finding)), None)
        if silence is not None:
            silenced.setdefault(key, silence)
            silenced_findings += 1
            continue
        hold = rules.hold_s.get(finding.rule, 0)
        if hold and (at - finding.since).total_seconds() < hold:
            held += 1
            continue
        buckets[key].append(finding)
        labels_of[key] = labels
        channel_of[key] = channel
    groups = []
    for key, members in buckets.items():
        labels = labels_of[key]
        rule_ids = {f.rule for f in members}
        single = next(iter(rule_ids)) if len(rule_ids) == 1 else None
        context = GroupContext(
            labels=labels,
            rule_title=rules.titles.get(single, single) if single else None,
            waste=bool(rule_ids) and rule_ids <= rules.waste,
            prices=prices,
            grafana_url=settings.grafana_url,
            report_url=settings.report_url,
        )
        message = compose_group(members, context, settings.max_rows)
        groups.append(
            Group(
                key=key,
                channel=channel_of[key],
                findings=tuple(members),
                message=message,
                severity=group_severity(members),
                fingerprint=fingerprint(members),
                context=context,
            )
        )
    groups.sort(key=lambda g: (severity_rank(g.severity), -len(g.findings), g.key))
    return Grouping(tuple(groups), silenced, held, silenced_findings)


def fingerprint(findings: Sequence[Finding]) -> str:
    """Identifies the set of findings (not their values): a change of membership is news,
    a utilization moving from 3 % to 4 % is not."""
    digest = hashlib.sha256("\n".join(sorted(f.key for f in findings)).encode())
    return digest.hexdigest()[:16]


def due(since: datetime | None, interval_s: int, at: datetime) -> bool:
    """``interval_s`` has passed since ``since``, give or take a tenth of it (at most
    30 s): a CronJob's runs drift by seconds, and a change due at 5 min must not wait
    for the run after the one at 4 min 59.8 s."""
    if since is None:
        return True
    tolerance = min(MAX_TOLERANCE_S, interval_s / 10)
    return (at - since).total_seconds() >= interval_s - tolerance


def plan(
    grouping: Grouping,
    state: CycleState,
    settings: NotifySettings,
    at: datetime,
    notifier_name: str,
    updates_in_place: bool,
) -> tuple[list[Step], dict[str, AlertGroupState], list[str], dict[str, AlertGroupState]]:
    """The steps of this cycle, this notifier's alert state before their outcomes, the
    group keys whose changes were deferred by the per-channel budget, and the groups of
    other notifiers, kept as they were (``CycleState.parked``)."""
    alerts, parked = _park(state.alerts, state.parked, notifier_name)
    current = {g.key: g for g in grouping.groups}
    posts: dict[str, list[Step]] = defaultdict(list)
    updates: dict[str, list[Step]] = defaultdict(list)
    resolves: dict[str, list[Step]] = defaultdict(list)

    for group in grouping.groups:
        known = alerts.get(group.key)
        if known is None:
            known = AlertGroupState(
                key=group.key, channel=group.channel, title=group.message.title, started_at=at
            )
            alerts[group.key] = known
        known.title = group.message.title
        known.severity = str(group.severity)
        if known.resolved_at is not None:  # back before its resolution was delivered
            known.resolved_at = None
            known.failed_since = known.last_error = None
        step = _firing_step(group, known, settings, at, updates_in_place)
        if step is None:
            continue
        target = posts if step.intent in ("new", "reminder") else updates
        target[group.channel].append(step)

    for key, known in sorted(alerts.items()):
        if key in current:
            continue
        if known.ts is None or not settings.send_resolved:
            del alerts[key]  # nothing was said, or nothing is to be said
            continue
        if known.resolved_at is None:
            known.resolved_at = at
            silence = grouping.silenced.get(key)
            known.resolution = "silenced" if silence is not None else "resolved"
        detail = ""
        silence = grouping.silenced.get(key)
        if known.resolution == "silenced" and silence is not None:
            detail = f"silenced until {silence.until.isoformat()}" + (
                f" ({silence.comment})" if silence.comment else ""
            )
        _, reply = compose_resolved(
            known.title, known.started_at, known.resolved_at, known.resolution, detail
        )
        resolves[known.channel].append(
            Step("resolved", known.channel, (key,), reply, detail=detail, severity=known.severity)
        )

    steps: list[Step] = []
    deferred: list[str] = []
    for channel in sorted(set(posts) | set(updates) | set(resolves)):
        steps.extend(_flood_controlled(posts[channel], "firing", "digest", settings, current))
        kept = updates[channel][: settings.digest_over]
        deferred.extend(k for s in updates[channel][settings.digest_over :] for k in s.group_keys)
        steps.extend(kept)
        steps.extend(
            _flood_controlled(resolves[channel], "resolved", "resolved-digest", settings, current)
        )
    return steps, alerts, deferred, parked


def _park(
    alerts: Mapping[str, AlertGroupState],
    parked: Mapping[str, AlertGroupState],
    notifier_name: str,
) -> tuple[dict[str, AlertGroupState], dict[str, AlertGroupState]]:
    """(this notifier's groups by group key, other notifiers' by ``notifier|key``): a
    group told through Slack is neither forgotten nor resolved while its token is
    missing; it is picked up again when Slack is back."""
    mine: dict[str, AlertGroupState] = {}
    others: dict[str, AlertGroupState] = {}
    for known in [*alerts.values(), *parked.values()]:
        copy = replace(known)
        if copy.notifier in (None, notifier_name):
            mine.setdefault(copy.key, copy)
        else:
            others[f"{copy.notifier}|{copy.key}"] = copy
    return mine, others


def _firing_step(
    group: Group,
    known: AlertGroupState,
    settings: NotifySettings,
    at: datetime,
    updates_in_place: bool,
) -> Step | None:
    keys = tuple(f.key for f in group.findings)
    if known.ts is None:
        if not due(known.started_at, settings.group_wait_s, at):
            return None
        return Step(
            "new", group.channel, (group.key,), group.message, group.fingerprint, len(keys), keys
        )
    if due(known.posted_at, settings.repeat_interval_s, at):
        since = known.started_at.strftime("%Y-%m-%d %H:%M UTC")
        note = f":repeat: Still firing since {since}."
        reminder = compose_group(group.findings, group.context, settings.max_rows, note)
        return Step(
            "reminder", group.channel, (group.key,), reminder, group.fingerprint, len(keys), keys
        )
    if known.fingerprint == group.fingerprint or known.digest:
        return None
    if not due(known.notified_at, settings.group_interval_s, at):
        return None
    intent: Intent = "update" if updates_in_place else "new"
    return Step(
        intent, group.channel, (group.key,), group.message, group.fingerprint, len(keys), keys
    )


def _flood_controlled(
    steps: list[Step],
    what: str,
    intent: Intent,
    settings: NotifySettings,
    current: Mapping[str, Group],
) -> list[Step]:
    if len(steps) <= settings.digest_over:
        return steps
    items = []
    for step in steps:
        group = current.get(step.group_keys[0])
        severity = group.severity if group is not None else Severity(step.severity)
        items.append(
            (step.message.title.removeprefix("Resolved: ").removeprefix("Silenced: "), severity)
        )
    digest = compose_digest(items, what)
    return [
        Step(
            intent,
            steps[0].channel,
            tuple(k for s in steps for k in s.group_keys),
            digest,
            findings=sum(s.findings for s in steps),
        )
    ]


@dataclass
class Outcome:
    notifications: list[Notification] = field(default_factory=list)
    notes: list[DataQualityNote] = field(default_factory=list)


def deliver(
    steps: Sequence[Step],
    alerts: dict[str, AlertGroupState],
    current: Mapping[str, Group],
    notifier: Notifier,
    at: datetime,
    settings: NotifySettings,
) -> Outcome:
    """Carry out the steps in order, recording each outcome in ``alerts`` (mutated)."""
    outcome = Outcome()
    status_ok = notifier.delivered_status
    for step in steps:
        if step.intent in ("new", "reminder", "digest"):
            result = notifier.send(
                Delivery("post", step.channel, step.message.text, step.message.blocks)
            )
            for key in step.group_keys:
                known = alerts[key]
                if result.ok:
                    group = current[key]
                    known.notifier = notifier.name
                    # A service that names no message (a webhook) still delivered it.
                    known.ts = result.ts or f"{notifier.name}@{at.isoformat()}"
                    known.channel_id = result.channel
                    known.posted_at = known.notified_at = at
                    known.fingerprint, known.findings = group.fingerprint, len(group.findings)
                    known.digest = step.intent == "digest"
                    known.failed_since, known.last_error = None, None
                else:
                    _failed(known, result.error, at)
            outcome.notifications.append(
                _record(step, status_ok, result.ok, result.error, result.ts)
            )
        elif step.intent == "update":
            known = alerts[step.group_keys[0]]
            result = notifier.send(
                Delivery(
                    "update",
                    known.channel_id or known.channel,
                    step.message.text,
                    step.message.blocks,
                    known.ts,
                )
            )
            if result.ok:
                known.notified_at = at
                known.fingerprint, known.findings = step.fingerprint, step.findings
                known.failed_since, known.last_error = None, None
            else:
                if result.error and "message_not_found" in result.error:
                    known.ts = None  # deleted in Slack: post it afresh next cycle
                _failed(known, result.error, at)
            outcome.notifications.append(
                _record(step, status_ok, result.ok, result.error, known.ts)
            )
        elif step.intent == "resolved":
            _resolve(step, alerts, notifier, at, settings, outcome, status_ok)
        elif step.intent == "resolved-digest":
            result = notifier.send(
                Delivery("post", step.channel, step.message.text, step.message.blocks)
            )
            for key in step.group_keys:
                if result.ok:
                    alerts.pop(key, None)
                else:
                    _failed(alerts[key], result.error, at)
            outcome.notifications.append(
                _record(step, status_ok, result.ok, result.error, result.ts)
            )
    # Resolutions that could not be delivered for too long are given up, with a note.
    limit = timedelta(seconds=settings.undelivered_max_age_s)
    for key, known in list(alerts.items()):
        if (
            known.resolved_at is not None
            and known.failed_since is not None
            and at - known.failed_since > limit
        ):
            outcome.notes.append(
                DataQualityNote(
                    kind="notify",
                    message=f"gave up telling {known.channel} that '{known.title}' resolved: "
                    f"undelivered since {known.failed_since.isoformat()} ({known.last_error})",
                )
            )
            del alerts[key]
    return outcome


def _resolve(
    step: Step,
    alerts: dict[str, AlertGroupState],
    notifier: Notifier,
    at: datetime,
    settings: NotifySettings,
    outcome: Outcome,
    status_ok: str,
) -> None:
    key = step.group_keys[0]
    known = alerts[key]
    assert known.resolved_at is not None
    updated, reply = compose_resolved(
        known.title, known.started_at, known.resolved_at, known.resolution, step.detail
    )
    channel = known.channel_id or known.channel
    if notifier.updates_in_place:
        if not known.digest:
            # Best effort: the thread reply is what must arrive; a message deleted in
            # Slack, say, still gets its resolution recorded.
            marked = notifier.send(
                Delivery("update", channel, updated.text, updated.blocks, known.ts)
            )
            outcome.notifications.append(
                _record(
                    Step("resolved", step.channel, (key,), updated),
                    status_ok,
                    marked.ok,
                    marked.error,
                    known.ts,
                )
            )
        result = notifier.send(Delivery("reply", channel, reply.text, reply.blocks, known.ts))
    else:
        result = notifier.send(Delivery("post", known.channel, updated.text, updated.blocks))
    if result.ok:
        del alerts[key]
    else:
        _failed(known, result.error, at)
    outcome.notifications.append(_record(step, status_ok, result.ok, result.error, result.ts))


def _failed(known: AlertGroupState, error: str | None, at: datetime) -> None:
    known.failed_since = known.failed_since or at
    known.last_error = error or "delivery failed"


def _record(
    step: Step, status_ok: str, ok: bool, error: str | None, ts: str | None
) -> Notification:
    return Notification(
        group_key=",".join(step.group_keys)
        if len(step.group_keys) <= 3
        else f"{len(step.group_keys)} groups",
        channel=step.channel,
        title=step.message.title,
        text=step.message.text,
        blocks=step.message.blocks,
        finding_keys=step.finding_keys,
        status=status_ok if ok else "failed",
        error=None if ok else error,
        kind=step.intent,
        ts=ts if ok else None,
    )


def actions_message(
    actions: Sequence[Action],
    state: CycleState,
    settings: NotifySettings,
    at: datetime,
    dry_run: bool,
) -> PendingMessage | None:
    """The cycle's actions people have not been told of yet (a plan repeated every cycle
    is announced once, and again after ``repeat_interval``); records them as told."""
    repeat = timedelta(seconds=settings.repeat_interval_s)
    for key, told in list(state.reported_actions.items()):
        if at - told >= repeat:
            del state.reported_actions[key]
    fresh = [a for a in actions if f"{a.key}|{a.status}" not in state.reported_actions]
    message = compose_actions(fresh, dry_run)
    if message is None:
        return None
    for action in fresh:
        state.reported_actions[f"{action.key}|{action.status}"] = at
    return PendingMessage(
        key=f"actions@{at.isoformat()}",
        channel=settings.channel,
        title=message.title,
        text=message.text,
        blocks=list(message.blocks),
        created_at=at,
    )


def flush_outbox(
    state: CycleState, notifier: Notifier, at: datetime, settings: NotifySettings
) -> Outcome:
    """Deliver the one-off messages waiting in the state, oldest first; keep the ones
    that fail, give up on those older than ``undelivered_max_age`` with a note."""
    outcome = Outcome()
    status_ok = notifier.delivered_status
    limit = timedelta(seconds=settings.undelivered_max_age_s)
    kept: list[PendingMessage] = []
    for pending in state.outbox:
        result = notifier.send(
            Delivery("post", pending.channel, pending.text, tuple(pending.blocks))
        )
        step = Step(
            "actions",
            pending.channel,
            (pending.key,),
            Message(pending.title, pending.text, tuple(pending.blocks)),
        )
        outcome.notifications.append(_record(step, status_ok, result.ok, result.error, result.ts))
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


@dataclass
class NotifyResult:
    """What a cycle told people, and the memory of it for the next cycle."""

    state: CycleState
    """``alerts``, ``outbox`` and ``reported_actions`` after this cycle's deliveries."""
    notifications: list[Notification]
    notes: list[DataQualityNote]
    summary: AlertSummary


def notify_cycle(
    findings: Sequence[Finding],
    actions: Sequence[Action],
    state: CycleState,
    notifier: Notifier,
    at: datetime,
    settings: NotifySettings,
    rules: RulePolicy,
    silences: Sequence[Silence] = (),
    prices: Mapping[tuple[str, str], Price] | None = None,
    dry_run: bool = True,
    hold_new: bool = False,
) -> NotifyResult:
    """One cycle of the lifecycle: group, plan, deliver; then the actions message and
    whatever one-off messages are still owed. ``state`` is not changed.

    ``hold_new``: post no new group this cycle (the silences could not be read, so a new
    group might be one somebody muted); changes and resolutions still go out."""
    grouping = group_findings(findings, settings, rules, silences, prices or {}, at)
    steps, groups, deferred, parked = plan(
        grouping, state, settings, at, notifier.name, notifier.updates_in_place
    )
    if hold_new:
        steps = [s for s in steps if s.intent not in ("new", "digest")]
    current = {g.key: g for g in grouping.groups}
    outcome = deliver(steps, groups, current, notifier, at, settings)
    after = CycleState(
        findings_since=dict(state.findings_since),
        last_cycle_at=state.last_cycle_at,
        alerts=groups,
        outbox=[replace(m) for m in state.outbox],
        reported_actions=dict(state.reported_actions),
        parked=parked,
    )
    pending = actions_message(actions, after, settings, at, dry_run)
    if pending is not None:
        after.outbox.append(pending)
    owed = flush_outbox(after, notifier, at, settings)
    return NotifyResult(
        state=after,
        notifications=outcome.notifications + owed.notifications,
        notes=outcome.notes + owed.notes,
        summary=summarize(grouping, groups, deferred, len(after.outbox)),
    )


def summarize(
    grouping: Grouping, alerts: Mapping[str, AlertGroupState], deferred: Sequence[str], outbox: int
) -> AlertSummary:
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


def _label(finding: Finding, name: str) -> str:
    value = {
        "rule": finding.rule,
        "pool": finding.pool,
        "severity": str(finding.severity),
        "namespace": finding.namespace,
        "team": finding.team,
        "node": finding.node,
        "model": finding.model,
    }[name]
    return value or "-"
