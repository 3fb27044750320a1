"""What the alert lifecycle is asked to do: where findings go, which are muted, how often
a channel hears of a group, and what the rules say about their findings.

These are the lifecycle's own terms. The settings file says the same things in the shape
people write (``NotifySettings.policy()`` and ``Silence.to_domain()`` convert), and the
rules say theirs in the rule files; the lifecycle depends on neither shape, so that it can
be read, and tested, on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

GroupLabel = Literal["rule", "pool", "severity", "namespace", "team", "node", "model"]
"""A finding's field that alert groups may be keyed by."""


Patterns = tuple[str, ...]
"""Shell-style patterns (``gpu-*``, ``team-?``); a value matches when any of them does."""


@dataclass(frozen=True)
class Matcher:
    """Which findings a route or a silence applies to: a finding matches when every
    field that holds patterns has one matching the finding's value. All fields empty:
    every finding."""

    rule: Patterns = ()
    severity: Patterns = ()
    """``info``, ``warning``, ``critical``."""
    pool: Patterns = ()
    namespace: Patterns = ()
    """Of the pods holding the GPU."""
    team: Patterns = ()
    node: Patterns = ()
    gpu: Patterns = ()
    """GPU UUIDs, or ``node/gpuN`` for the GPU with index N on a node."""


@dataclass(frozen=True)
class Route:
    """The findings ``match`` selects go to ``channel``; the first matching route wins."""

    channel: str
    """A channel name (``#gpu-team-a``) or id."""
    match: Matcher = Matcher()
    """By default every finding: a catch-all route."""


@dataclass(frozen=True)
class Silence:
    """The findings ``match`` selects are not notified until ``until``. They stay in the
    cycle result and the reports: only messages are held back."""

    match: Matcher
    until: datetime
    """The instant it ends (time-zone aware)."""
    comment: str = ""
    """Why, and who to ask: quoted where a silence resolves a group."""


@dataclass(frozen=True, kw_only=True)
class AlertPolicy:
    """How findings become messages; the timings follow Alertmanager's meaning."""

    channel: str
    """Where findings no route claims go."""
    routes: tuple[Route, ...] = ()
    group_by: tuple[GroupLabel, ...]
    """Findings with equal values of these fields (within a channel) share a message."""
    group_wait_s: int
    """How long a new group waits before its first message."""
    group_interval_s: int
    """Least time between two changes of a group's message."""
    repeat_interval_s: int
    """A group still firing after this long is posted again; an announced action is
    announced again."""
    send_resolved: bool
    """A group that stops firing is marked resolved and a reply in its thread says so."""
    digest_over: int
    """More new messages (or updates) than this to one channel in one cycle: a digest
    (or the rest wait for the next cycle)."""
    max_rows: int
    """GPU rows listed in one message."""
    undelivered_max_age_s: int
    """How long an undelivered resolution or one-off message is retried."""
    grafana_url: str | None = None
    report_url: str | None = None


@dataclass(frozen=True)
class RulePolicy:
    """What the rules say about notifying their findings."""

    titles: Mapping[str, str] = field(default_factory=dict)
    """Rule -> its short title (``idle``), for a group of one rule's findings."""
    hold_s: Mapping[str, int] = field(default_factory=dict)
    """Rule -> its ``for``: how long a finding fires before it is notified."""
    waste: frozenset[str] = frozenset()
    """Rules whose findings' GPU-hours are money wasted."""
