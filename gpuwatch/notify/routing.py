"""Where a finding goes, and whether it is muted.

Routes and silences select findings the same way (a ``Matcher``); reading a matcher in
one place keeps "this route claims it" and "this silence mutes it" in agreement.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from fnmatch import fnmatchcase

from gpuwatch.model.alerts import AlertPolicy, Matcher, Silence
from gpuwatch.model.findings import Finding

_MATCHED_FIELDS = ("rule", "severity", "pool", "namespace", "team", "node")
"""The matcher fields compared with a finding's value (``gpu`` names a GPU two ways)."""


def matches(match: Matcher, finding: Finding) -> bool:
    """Every field that holds patterns has one matching the finding's value; a finding
    without that value (no team, say) does not match a field that asks for one."""
    for name in _MATCHED_FIELDS:
        patterns: tuple[str, ...] = getattr(match, name)
        value = value_of(finding, name)
        if patterns and (value is None or not any(fnmatchcase(value, p) for p in patterns)):
            return False
    if match.gpu:
        # A GPU is named by its UUID or by its place on the node, whichever people know.
        names = {finding.gpu_uuid, finding.where} - {None}
        if not any(fnmatchcase(str(n), p) for n in names for p in match.gpu):
            return False
    return True


def value_of(finding: Finding, name: str) -> str | None:
    """The finding's value of a matcher field or a group label (``GroupLabel``)."""
    return {
        "rule": finding.rule,
        "severity": str(finding.severity),
        "pool": finding.pool,
        "namespace": finding.namespace,
        "team": finding.team,
        "node": finding.node,
        "model": finding.model,
    }[name]


def route(finding: Finding, policy: AlertPolicy) -> str:
    """The channel of the first route that claims the finding, else the default one."""
    for candidate in policy.routes:
        if matches(candidate.match, finding):
            return candidate.channel
    return policy.channel


def active_silences(silences: Sequence[Silence], at: datetime) -> list[Silence]:
    """The silences still in force at ``at``: a silence ends at its ``until``."""
    return [s for s in silences if s.until > at]


def silence_of(finding: Finding, silences: Sequence[Silence]) -> Silence | None:
    """The first of ``silences`` that mutes the finding."""
    return next((s for s in silences if matches(s.match, finding)), None)
