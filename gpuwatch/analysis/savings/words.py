"""The saving an action buys, in the words an approver reads before saying yes.

An approval request names the net figure of the plan (what the action adds to the
bank, after the levers before it took their share), not the lever's gross: the number
a finance reader would hold the approver to. A scale-down is one node of its pool's
lever, so the request says the lever's figure and how many nodes share it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gpuwatch.analysis.savings.nodes import KIND as REMOVE_NODES
from gpuwatch.analysis.savings.spot import KIND as SPOT
from gpuwatch.model.actions import Action
from gpuwatch.model.savings import Saving


def saving_words(actions: Sequence[Action], savings: Sequence[Saving]) -> Mapping[str, str]:
    """Action key -> its saving in words; actions no saving backs are left out."""
    words: dict[str, str] = {}
    for action in actions:
        saving = _backing(action, savings)
        if saving is None:
            continue
        net = f"{saving.net_monthly:,.2f} {saving.currency} net per 30 days"
        gross = f"{saving.monthly:,.2f} gross"
        if saving.kind == REMOVE_NODES and len(saving.nodes) > 1:
            words[action.key] = (
                f"{net} ({gross}) for the {len(saving.nodes)} nodes of "
                f"{saving.scope.get('pool')} this lever removes, this one among them"
            )
        else:
            words[action.key] = f"{net} ({gross})"
        if saving.blocked:
            words[action.key] += f"; blocked: {saving.blocked}"
    return words


def _backing(action: Action, savings: Sequence[Saving]) -> Saving | None:
    if action.kind == "scale_down_node":
        node = action.target.removeprefix("Node/")
        return next((s for s in savings if s.kind == REMOVE_NODES and node in s.nodes), None)
    if action.kind == "migrate_to_spot":
        return next(
            (s for s in savings if s.kind == SPOT and s.scope.get("workload") == action.target),
            None,
        )
    return None
