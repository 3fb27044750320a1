"""Rules found by role: how the savings, the planners and the report find their rules.

A rule's id is its author's to choose and rename; a consumer that keyed on an id would
silently lose its input when someone renamed the rule. Consumers ask for a role instead,
read the rule's own thresholds and windows, and say which role they need when no
enabled rule has it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gpuwatch.analysis.rules.schema import Rule
from gpuwatch.model.errors import ConfigError
from gpuwatch.model.findings import Role


def rule_for(rules: Sequence[Rule], role: Role) -> Rule | None:
    """The enabled rule with ``role`` (the loader allows at most one), or None."""
    return next((r for r in rules if r.enabled and r.role is role), None)


def missing_roles(rules: Sequence[Rule], needs: Mapping[Role, str]) -> list[str]:
    """One problem per role in ``needs`` (role -> who needs it) that no enabled rule has."""
    return [
        f"no enabled rule has role {role}, and {consumer} needs one: set `role: {role}` "
        "on a rule (the shipped rules/gpu.yaml has one), or turn that consumer off"
        for role, consumer in needs.items()
        if rule_for(rules, role) is None
    ]


def require_roles(rules: Sequence[Rule], needs: Mapping[Role, str]) -> None:
    """ConfigError listing every role in ``needs`` that no enabled rule has."""
    problems = missing_roles(rules, needs)
    if problems:
        raise ConfigError(problems)
