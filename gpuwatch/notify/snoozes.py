"""Snooze from Slack: an alert's owners mute its group for an hour, a day or a week.

A Snooze click becomes a silence in the state (who, from when, until when), matching
the group's labels, so that the group resolves as "silenced until …, snoozed from Slack
by @x" in its own thread, and its findings stay in the results and reports. Who may
snooze a group is the owners of its teams (``notify.slack.interactivity.snooze_owners``);
a group of no listed team may be snoozed by anyone in the channel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from gpuwatch.model.alerts import Matcher, Silence
from gpuwatch.model.approvals import ApprovalRecord, Approvers, Snooze, SnoozeRequest
from gpuwatch.notify.approval_messages import snooze_buttons
from gpuwatch.notify.compose import Message
from gpuwatch.notify.grouping import Grouping

_MATCHABLE = ("rule", "severity", "pool", "namespace", "team", "node")
"""Group labels a silence can match (``model`` is not one: such a snooze is broader)."""


@dataclass(frozen=True)
class SnoozeOutcome:
    snoozes: list[Snooze]
    """Those still in force after this cycle's, new ones included."""
    records: list[ApprovalRecord]


def apply_snoozes(
    requests: Sequence[SnoozeRequest],
    existing: Sequence[Snooze],
    owners: Mapping[str, Approvers],
    members: Mapping[str, frozenset[str]],
    at: datetime,
) -> SnoozeOutcome:
    """The snoozes in force: the unexpired ``existing`` and the allowed ``requests``."""
    snoozes = [s for s in existing if s.until > at]
    records: list[ApprovalRecord] = []
    for asked in requests:
        who = [owners[t] for t in asked.teams if t in owners]
        if who and not any(o.allows(asked.user, members) for o in who):
            names = ", ".join(o.mention() for o in who)
            records.append(
                ApprovalRecord(
                    asked.at, asked.group_key, asked.group_key, "ignored", asked.user,
                    asked.via, f"<@{asked.user}> may not snooze it (its owners: {names})",
                )
            )  # fmt: skip
            continue
        until = asked.at + timedelta(seconds=asked.duration_s)
        snooze = Snooze(asked.group_key, labels_of(asked.group_key), asked.user, asked.at, until)
        snoozes = [s for s in snoozes if s.group_key != asked.group_key] + [snooze]
        records.append(
            ApprovalRecord(
                asked.at, asked.group_key, asked.group_key, "snooze", asked.user, asked.via,
                f"silenced until {until.isoformat()}",
            )
        )  # fmt: skip
    return SnoozeOutcome(snoozes, records)


def as_silences(snoozes: Sequence[Snooze]) -> list[Silence]:
    """The snoozes as the lifecycle's silences."""
    return [
        Silence(
            Matcher(**{k: (v,) for k, v in s.match.items() if k in _MATCHABLE and v != "-"}),
            s.until,
            s.comment,
        )
        for s in snoozes
    ]


def labels_of(group_key: str) -> dict[str, str]:
    """A group key's labels: ``#chan|rule=r,pool=a`` -> ``{rule: r, pool: a}``."""
    _, _, labels = group_key.partition("|")
    pairs = (item.partition("=") for item in labels.split(",") if "=" in item)
    return {name: value for name, _, value in pairs}


def with_snooze_buttons(grouping: Grouping) -> Grouping:
    """Every group's message with its Snooze buttons (for a notifier whose clicks are
    answered)."""
    groups = []
    for group in grouping.groups:
        teams = sorted({f.team for f in group.findings if f.team})
        message = group.message
        blocks = (*message.blocks, snooze_buttons(group.key, teams))
        groups.append(replace(group, message=Message(message.title, message.text, blocks)))
    return replace(grouping, groups=tuple(groups))
