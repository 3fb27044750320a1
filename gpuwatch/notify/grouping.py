"""Which findings share a message: routed, held back by their rule's ``for``, muted by
silences, then grouped per channel by ``group_by``, each group with its message composed.

A group is the unit the channel hears of; its key (channel and label values) is what the
state remembers between cycles, and its fingerprint says whether its membership changed.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from gpuwatch.model.alerts import AlertPolicy, RulePolicy, Silence
from gpuwatch.model.cost import Price
from gpuwatch.model.findings import Finding, Severity
from gpuwatch.notify.compose import (
    GroupContext,
    Message,
    compose_group,
    group_severity,
    severity_rank,
)
from gpuwatch.notify.routing import active_silences, route, silence_of, value_of


@dataclass(frozen=True)
class Group:
    key: str
    """``channel|label=value,...``: what the state remembers the group by."""
    channel: str
    message: Message
    """Composed with this cycle's values: what a post or an update says."""
    findings: tuple[Finding, ...]
    context: GroupContext
    """What the message says besides the findings: a reminder is composed with it."""

    @cached_property
    def severity(self) -> Severity:
        """Its most severe finding's."""
        return group_severity(self.findings)

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.findings)


@dataclass(frozen=True)
class Grouping:
    """The cycle's findings as the channels will hear of them."""

    groups: tuple[Group, ...]
    """Most severe first, then largest."""
    silenced: Mapping[str, Silence]
    """Group key -> a silence covering (some of) its findings this cycle."""
    held: int
    """Findings not notified yet because of their rule's ``for``."""
    silenced_findings: int


def group_findings(
    findings: Sequence[Finding],
    policy: AlertPolicy,
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
        channel = route(finding, policy)
        labels = {name: value_of(finding, name) or "-" for name in policy.group_by}
        key = channel + "|" + ",".join(f"{k}={v}" for k, v in labels.items())
        silence = silence_of(finding, active)
        if silence is not None:
            # Remembered by group key, so that a told group muted now resolves as silenced.
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
    groups = [
        _group(key, channel_of[key], members, labels_of[key], policy, rules, prices)
        for key, members in buckets.items()
    ]
    groups.sort(key=lambda g: (severity_rank(g.severity), -len(g.findings), g.key))
    return Grouping(tuple(groups), silenced, held, silenced_findings)


def _group(
    key: str,
    channel: str,
    members: Sequence[Finding],
    labels: Mapping[str, str],
    policy: AlertPolicy,
    rules: RulePolicy,
    prices: Mapping[tuple[str, str], Price],
) -> Group:
    rule_ids = {f.rule for f in members}
    single = next(iter(rule_ids)) if len(rule_ids) == 1 else None
    context = GroupContext(
        labels=labels,
        rule_title=rules.titles.get(single, single) if single else None,
        waste=bool(rule_ids) and rule_ids <= rules.waste,
        prices=prices,
        grafana_url=policy.grafana_url,
        report_url=policy.report_url,
    )
    message = compose_group(members, context, policy.max_rows)
    return Group(key, channel, message, tuple(members), context)


def fingerprint(findings: Sequence[Finding]) -> str:
    """Identifies the set of findings (not their values): a change of membership is news,
    a utilization moving from 3 % to 4 % is not."""
    digest = hashlib.sha256("\n".join(sorted(f.key for f in findings)).encode())
    return digest.hexdigest()[:16]
