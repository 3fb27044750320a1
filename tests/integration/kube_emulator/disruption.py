"""PodDisruptionBudgets: the disruption controller's arithmetic and the eviction decision.

This is what kube-controller-manager's disruption controller writes into a PDB's status
and what the Eviction subresource then checks, reduced to what decides a test:

- a PDB selects the pods of its namespace that match ``spec.selector`` (policy/v1: an
  empty selector selects every pod, a missing one none);
- a pod is healthy when it is Running, not being deleted, and Ready (a pod without
  conditions counts as Ready, so that fixtures need not spell them out);
- ``minAvailable: N`` wants N healthy pods; a percentage, or ``maxUnavailable``, is taken
  of the expected count, rounded up as the controller does. The expected count is the
  ``spec.replicas`` of the pods' controllers where the emulator holds them (one
  ReplicaSet, StatefulSet... counted once) plus one per pod without such a controller.
  (The real controller refuses a percentage for pods without a scalable controller.)
- ``disruptionsAllowed = max(0, currentHealthy - desiredHealthy)``.

An eviction is allowed without consulting any PDB for a pod that is Pending, Succeeded,
Failed or already being deleted; refused with 500 when two PDBs select the pod; refused
with 429 when the PDB allows no disruption, unless the pod is unhealthy and the budget is
met anyway (``unhealthyPodEvictionPolicy: IfHealthyBudget``, the default).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.integration.kube_emulator.selectors import label_selector_matches

TOO_MANY_REQUESTS_MESSAGE = "Cannot evict pod as it would violate the pod's disruption budget."


def selects(pdb: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    if pdb["metadata"].get("namespace") != pod["metadata"].get("namespace"):
        return False
    selector = (pdb.get("spec") or {}).get("selector")
    return label_selector_matches(selector, pod["metadata"].get("labels") or {})


def is_healthy(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or pod["metadata"].get("deletionTimestamp"):
        return False
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return not ready or ready[0].get("status") == "True"


def can_ignore_budget(pod: Mapping[str, Any]) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return phase in ("Pending", "Succeeded", "Failed") or bool(
        pod["metadata"].get("deletionTimestamp")
    )


def _scaled(value: int | str, expected: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value[:-1]) * expected / 100)
    return int(value)


def controller_ref(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    refs = pod["metadata"].get("ownerReferences") or []
    return next((r for r in refs if r.get("controller")), None)


def budget_status(
    pdb: Mapping[str, Any],
    pods: Iterable[Mapping[str, Any]],
    replicas_of: Callable[[Mapping[str, Any], str], int | None],
) -> dict[str, Any]:
    """The status the disruption controller would write; ``replicas_of(owner reference,
    namespace)`` gives a controller's ``spec.replicas`` or None when it is not known."""
    spec = pdb.get("spec") or {}
    selected = [p for p in pods if selects(pdb, p)]
    healthy = sum(1 for p in selected if is_healthy(p))
    scales: dict[str, int] = {}
    unmanaged = 0
    for pod in selected:
        ref = controller_ref(pod)
        replicas = replicas_of(ref, pod["metadata"]["namespace"]) if ref else None
        if ref is None or replicas is None:
            unmanaged += 1
        else:
            scales[ref.get("uid") or ref.get("name", "")] = replicas
    scaled_count = sum(scales.values()) + unmanaged
    if spec.get("maxUnavailable") is not None:
        expected = scaled_count
        desired = max(0, expected - _scaled(spec["maxUnavailable"], expected))
    elif isinstance(spec.get("minAvailable"), str):
        expected = scaled_count
        desired = _scaled(spec["minAvailable"], expected)
    else:
        expected = len(selected)
        desired = int(spec.get("minAvailable") or 0)
    return {
        "observedGeneration": pdb["metadata"].get("generation", 1),
        "disruptionsAllowed": max(0, healthy - desired),
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
    }


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    status: int = 201
    message: str = ""
    cause: str = ""
    """The ``DisruptionBudget`` cause's message (which budget, how many pods)."""


def decide(pod: Mapping[str, Any], budgets: list[Mapping[str, Any]]) -> Verdict:
    """May ``pod`` be evicted, given the PDBs (with current status) that select it?"""
    if can_ignore_budget(pod) or not budgets:
        return Verdict(True)
    if len(budgets) > 1:
        return Verdict(
            False,
            500,
            "This pod has more than one PodDisruptionBudget, which the eviction "
            "subresource does not support.",
        )
    pdb = budgets[0]
    status = pdb.get("status") or {}
    allowed = int(status.get("disruptionsAllowed") or 0)
    current, desired = (
        int(status.get("currentHealthy") or 0),
        int(status.get("desiredHealthy") or 0),
    )
    if allowed > 0 or (not is_healthy(pod) and current >= desired):
        return Verdict(True)
    cause = (
        f"The disruption budget {pdb['metadata']['name']} needs {desired} healthy pods "
        f"and has {current} currently"
    )
    return Verdict(False, 429, TOO_MANY_REQUESTS_MESSAGE, cause)
