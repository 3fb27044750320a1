"""What a cycle should say: the steps that take each channel from what it was told to
what is true now.

Pure: the grouping and the remembered state in, steps out. Per group, a new one is
posted once it has waited ``group_wait``; a changed one (GPUs added or gone) is updated
in place, at most every ``group_interval``; one still firing after ``repeat_interval`` is
posted again as a reminder; a gone one is resolved (``send_resolved``). More new
messages to one channel than ``digest_over`` become one digest; updates beyond it wait
for the next cycle. Since the state records what each channel was last told, a step that
fails is simply due again next cycle, with that cycle's content.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from gpuwatch.model.alerts import AlertPolicy
from gpuwatch.model.findings import Severity
from gpuwatch.model.state import AlertGroupState, CycleState
from gpuwatch.notify.compose import Message, compose_digest, compose_group, compose_resolved
from gpuwatch.notify.grouping import Group, Grouping

MAX_TOLERANCE_S = 30.0


class Intent(StrEnum):
    """Why a message is sent; the value is the ``kind`` of its notification in the
    cycle result."""

    NEW = "new"
    REMINDER = "reminder"
    UPDATE = "update"
    RESOLVED = "resolved"
    DIGEST = "digest"
    RESOLVED_DIGEST = "resolved-digest"
    ACTIONS = "actions"
    APPROVAL = "approval"


_POSTS = frozenset({Intent.NEW, Intent.REMINDER})
"""Firing steps that post a message (flood-controlled into a digest) rather than change
one (budgeted)."""


_DIGEST_OF = {Intent.DIGEST: "firing", Intent.RESOLVED_DIGEST: "resolved"}
"""What a digest's groups are doing, in its headline ("50 alert groups firing")."""


@dataclass(frozen=True)
class Step:
    """One message to send (or change), and the groups it speaks for."""

    intent: Intent
    group_keys: tuple[str, ...]
    """One group's, or all the groups a digest lists."""
    channel: str
    message: Message
    fingerprint: str = ""
    """The membership the message tells of, recorded once it is delivered."""
    findings: int = 0
    finding_keys: tuple[str, ...] = ()
    detail: str = ""
    """resolved: why, when it is a silence."""
    severity: str = "info"
    """resolved: the group's severity when it last fired."""


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    alerts: dict[str, AlertGroupState]
    """This notifier's groups as the steps find them: a working copy of the state, in
    which delivering the steps records their outcomes."""
    deferred: tuple[str, ...]
    """Group keys whose changes wait for the next cycle (the per-channel budget)."""
    parked: dict[str, AlertGroupState]
    """Other notifiers' groups, kept as they were (``CycleState.parked``)."""

    def without_new_posts(self) -> Plan:
        """This plan posting no new group (nor a digest of new groups): they stay
        waiting in ``alerts``; changes and resolutions of told groups still go out."""
        kept = tuple(s for s in self.steps if s.intent not in (Intent.NEW, Intent.DIGEST))
        return replace(self, steps=kept)


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
    policy: AlertPolicy,
    at: datetime,
    notifier_name: str,
    updates_in_place: bool,
) -> Plan:
    """The steps of this cycle for the notifier ``notifier_name``, per channel: posts
    (or their digest), then updates within the budget, then resolutions (or theirs)."""
    alerts, parked = _park(state.alerts, state.parked, notifier_name)
    current = {g.key: g for g in grouping.groups}
    posts: dict[str, list[Step]] = defaultdict(list)
    updates: dict[str, list[Step]] = defaultdict(list)
    resolves: dict[str, list[Step]] = defaultdict(list)

    for group in grouping.groups:
        step = _firing_step(group, _known(alerts, group, at), policy, at, updates_in_place)
        if step is not None:
            target = posts if step.intent in _POSTS else updates
            target[group.channel].append(step)

    for key, known in sorted(alerts.items()):
        if key in current:
            continue
        if known.ts is None or not policy.send_resolved:
            del alerts[key]  # nothing was said, or nothing is to be said
            continue
        resolves[known.channel].append(_resolution_step(key, known, grouping, at))

    steps: list[Step] = []
    deferred: list[str] = []
    budget = policy.digest_over
    for channel in sorted(set(posts) | set(updates) | set(resolves)):
        steps.extend(_flood_controlled(posts[channel], Intent.DIGEST, budget, current))
        steps.extend(updates[channel][:budget])
        deferred.extend(k for s in updates[channel][budget:] for k in s.group_keys)
        steps.extend(_flood_controlled(resolves[channel], Intent.RESOLVED_DIGEST, budget, current))
    return Plan(tuple(steps), alerts, tuple(deferred), parked)


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


def _known(alerts: dict[str, AlertGroupState], group: Group, at: datetime) -> AlertGroupState:
    """The group's state, started now when it is new, with this cycle's title and
    severity (what a resolution or a digest will name it by)."""
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
    return known


def _firing_step(
    group: Group,
    known: AlertGroupState,
    policy: AlertPolicy,
    at: datetime,
    updates_in_place: bool,
) -> Step | None:
    keys = tuple(f.key for f in group.findings)

    def step(intent: Intent, message: Message) -> Step:
        return Step(
            intent, (group.key,), group.channel, message, group.fingerprint, len(keys), keys
        )

    if known.ts is None:
        if not due(known.started_at, policy.group_wait_s, at):
            return None
        return step(Intent.NEW, group.message)
    if due(known.posted_at, policy.repeat_interval_s, at):
        since = known.started_at.strftime("%Y-%m-%d %H:%M UTC")
        note = f":repeat: Still firing since {since}."
        return step(
            Intent.REMINDER, compose_group(group.findings, group.context, policy.max_rows, note)
        )
    # A digest lists the group with others: it is not rewritten for one group's change.
    if known.fingerprint == group.fingerprint or known.digest:
        return None
    if not due(known.notified_at, policy.group_interval_s, at):
        return None
    # A service that cannot update in place hears of the change as a new message.
    return step(Intent.UPDATE if updates_in_place else Intent.NEW, group.message)


def _resolution_step(key: str, known: AlertGroupState, grouping: Grouping, at: datetime) -> Step:
    """Resolve a told group that no longer fires; a silence covering it now is named, so
    that nobody mistakes muted for fixed."""
    silence = grouping.silenced.get(key)
    if known.resolved_at is None:
        known.resolved_at = at
        known.resolution = "silenced" if silence is not None else "resolved"
    detail = ""
    if known.resolution == "silenced" and silence is not None:
        detail = f"silenced until {silence.until.isoformat()}" + (
            f" ({silence.comment})" if silence.comment else ""
        )
    _, reply = compose_resolved(
        known.title, known.started_at, known.resolved_at, known.resolution, detail
    )
    return Step(
        Intent.RESOLVED, (key,), known.channel, reply, detail=detail, severity=known.severity
    )


def _flood_controlled(
    steps: list[Step], intent: Intent, budget: int, current: Mapping[str, Group]
) -> list[Step]:
    """The steps, or one digest of them (``intent``) when there are more than ``budget``."""
    if len(steps) <= budget:
        return steps
    items = []
    for step in steps:
        group = current.get(step.group_keys[0])
        severity = group.severity if group is not None else Severity(step.severity)
        items.append(
            (step.message.title.removeprefix("Resolved: ").removeprefix("Silenced: "), severity)
        )
    return [
        Step(
            intent,
            tuple(k for s in steps for k in s.group_keys),
            steps[0].channel,
            compose_digest(items, _DIGEST_OF[intent]),
            findings=sum(s.findings for s in steps),
        )
    ]
