"""Cordon and drain a node, the way Cluster Autoscaler drains one, then remove it.

Cordon (``spec.unschedulable``) and mark the node with the action's key and phase
``draining``, then evict every listed pod through the Eviction API, which honours
PodDisruptionBudgets (429 means "not now": retried with capped backoff up to a
deadline). Pods are never deleted. If an eviction fails, a budget never allows it in
time, the cycle's write deadline passes or the Lease is lost, the drain is rolled back:
the node is uncordoned and unmarked, and the outcome lists the pods already evicted.
Once drained (phase ``drained``), the ``cordon-drain`` mechanism is done: node removal is
left to the cluster autoscaler. Otherwise (phase ``removing``):

- ``cluster-api`` marks the node's Machine ``cluster.x-k8s.io/delete-machine`` with the
  key and the MachineDeployment's replica count before (``gpuwatch.io/replicas-before``)
  first, then lowers the replicas through the scale subresource (so that the controller
  removes that Machine and no other) unless they are already below that count, then
  records ``scaled`` on the Machine: the MachineDeployment is lowered at most once per
  node, however often the action is resumed. If the scale call fails, the mark is taken
  off again and the node uncordoned;
- ``karpenter`` deletes the node's NodeClaim; Karpenter terminates the instance.

Every step records its phase on the node first, so a rerun after a crash resumes where
it stopped (the planner plans a node in flight as a resume, never anew), and a node
marked ``done`` is never touched again.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from gpuwatch.actuators.events import Outcomes
from gpuwatch.actuators.guard import WriteGuard
from gpuwatch.kube.api import KubeApi, RetryPolicy, patient
from gpuwatch.kube.errors import KubeError, KubeNotFound, KubeUnavailable
from gpuwatch.kube.resources import MACHINE_DEPLOYMENTS, MACHINES, NODE_CLAIMS, NODES, PODS
from gpuwatch.model.actions import Action, ActionStatus
from gpuwatch.model.tenant import ACTION_KEY, ACTION_PHASE, REPLICAS_BEFORE

log = logging.getLogger(__name__)

ACTION_KEY_ANNOTATION = ACTION_KEY.key
DELETE_MACHINE_ANNOTATION = "cluster.x-k8s.io/delete-machine"
MECHANISMS = ("cordon-drain", "cluster-api", "karpenter")
_UNMARKED: dict[str, str | None] = {ACTION_KEY.key: None, ACTION_PHASE.key: None}


@dataclass(frozen=True)
class DrainOptions:
    eviction_deadline_s: float = 120.0
    """How long a PodDisruptionBudget may keep refusing before the drain is rolled back
    and the node uncordoned (``actions.eviction_deadline``)."""
    backoff_initial_s: float = 1.0
    """First wait after an eviction a disruption budget refused; doubled each time."""
    backoff_max_s: float = 30.0


class Evictions:
    """Evictions through the Eviction API, patient with disruption budgets."""

    def __init__(self, api: KubeApi, options: DrainOptions) -> None:
        self.api = api
        self.options = options
        # A 429 from the Eviction API is a PodDisruptionBudget saying "not now": worth
        # waiting for until the drain's deadline, unlike a server in trouble.
        self._policy: RetryPolicy = patient(
            api.policy, options.backoff_initial_s, options.backoff_max_s
        )

    def deadline(self) -> float:
        """The deadline of a drain that starts now (monotonic seconds)."""
        return self.api.monotonic() + self.options.eviction_deadline_s

    def evict(self, namespace: str, pod: str, deadline: float) -> bool:
        """Evict one pod; True when it is gone (evicted now, or already), False when a
        disruption budget kept refusing until ``deadline``. Raises ``KubeError``."""
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod, "namespace": namespace},
        }
        try:
            self.api.create(
                PODS,
                body,
                namespace,
                name=pod,
                subresource="eviction",
                deadline=deadline,
                policy=self._policy,
            )
        except KubeNotFound:
            return True  # already gone: a rerun after a crash
        except KubeUnavailable as exc:
            if exc.status == 429:
                return False
            raise
        return True


class Drain:
    """The ``scale_down_node`` action."""

    def __init__(self, api: KubeApi, evictions: Evictions, outcomes: Outcomes) -> None:
        self.api = api
        self.evictions = evictions
        self.outcomes = outcomes

    def run(self, action: Action, guard: WriteGuard | None = None) -> Action:
        finish = self.outcomes.finish
        if action.mechanism not in MECHANISMS:
            return finish(action, ActionStatus.FAILED, f"unknown mechanism {action.mechanism}")
        try:
            return self._drain(action, guard or WriteGuard(self.api.monotonic))
        except KubeError as exc:
            log.error("%s on %s: %s", action.kind, action.target, exc)
            return finish(
                action,
                ActionStatus.FAILED,
                f"{exc}; the node keeps its recorded phase and the next cycle resumes it",
            )

    def _drain(self, action: Action, guard: WriteGuard) -> Action:
        finish = self.outcomes.finish
        node_name = action.target.split("/", 1)[1]
        node = self.api.get(NODES, node_name)
        annotations = (node.get("metadata") or {}).get("annotations") or {}
        cordoned = (node.get("spec") or {}).get("unschedulable") is True
        ours = ACTION_KEY.get(annotations) == action.key
        phase = ACTION_PHASE.get(annotations) if ours and cordoned else None
        if action.details.get("rollback"):
            if not ours:
                return finish(action, ActionStatus.REFUSED, "not cordoned by gpuwatch; leaving it")
            self.uncordon(node_name)
            return finish(action, ActionStatus.DONE, "drain rolled back: node uncordoned")
        if cordoned and not ours:
            return finish(
                action, ActionStatus.REFUSED, "the node is cordoned by someone else; leaving it"
            )
        if phase == "done":
            return finish(action, ActionStatus.DONE, "already done: the node awaits removal")
        started = self.api.monotonic()
        evicted: list[str] = []
        if phase in (None, "draining"):
            refusal = guard.refusal()
            if refusal:
                return finish(action, ActionStatus.REFUSED, refusal)
            self._mark(node_name, action.key, "draining", cordon=True)
            evicted, failure = self._evict_all(action, guard)
            timings = {"drain_s": round(self.api.monotonic() - started, 3), "evicted": evicted}
            if failure:
                return finish(
                    action, ActionStatus.FAILED, f"{failure}; {self._rollback(node_name)}", timings
                )
            self._mark(node_name, action.key, "drained")
        timings = {"drain_s": round(self.api.monotonic() - started, 3), "evicted": evicted}
        if action.mechanism == "cordon-drain":
            self._mark(node_name, action.key, "done")
            return finish(
                action,
                ActionStatus.DONE,
                f"cordoned, {len(evicted)} pods evicted; the cluster autoscaler removes the node",
                timings,
            )
        refusal = guard.refusal()
        if refusal:
            return finish(
                action,
                ActionStatus.FAILED,
                f"drained, not removed: {refusal}; the next cycle resumes",
                timings,
            )
        self._mark(node_name, action.key, "removing")
        if action.mechanism == "cluster-api":
            return self._remove_machine(action, node_name, timings, guard)
        return self._delete_node_claim(action, node_name, timings, phase == "removing")

    def _evict_all(self, action: Action, guard: WriteGuard) -> tuple[list[str], str]:
        """Evict the action's pods in order: those evicted, and why the rest were not
        (empty when all were)."""
        evicted: list[str] = []
        deadline = guard.cap(self.evictions.deadline())
        for reference in action.details.get("evict", []):
            refusal = guard.refusal()
            if refusal:
                return evicted, f"stopped before evicting {reference}: {refusal}"
            namespace, pod = reference.split("/", 1)
            try:
                gone = self.evictions.evict(namespace, pod, deadline)
            except KubeError as exc:
                return evicted, f"evicting {reference} failed: {exc}"
            if not gone:
                return evicted, (
                    f"a disruption budget kept refusing to evict {reference} for "
                    f"{self.evictions.options.eviction_deadline_s:g} s"
                )
            evicted.append(reference)
        return evicted, ""

    def _mark(self, node_name: str, key: str, phase: str, *, cordon: bool = False) -> None:
        """Record the drain's phase on the node (with the cordon, for the first)."""
        patch: dict[str, Any] = {
            "metadata": {"annotations": {ACTION_KEY.key: key, ACTION_PHASE.key: phase}}
        }
        if cordon:
            patch["spec"] = {"unschedulable": True}
        self.api.patch(NODES, node_name, patch)

    def uncordon(self, node_name: str) -> None:
        self.api.patch(
            NODES,
            node_name,
            {"spec": {"unschedulable": False}, "metadata": {"annotations": _UNMARKED}},
        )

    def _rollback(self, node_name: str) -> str:
        """Uncordon after a failed drain; what happened, for the outcome's reason."""
        try:
            self.uncordon(node_name)
        except KubeError as exc:
            return (
                f"the node could not be uncordoned ({exc}): it keeps gpuwatch's mark, and "
                "the next cycle resumes or rolls back the drain"
            )
        return "drain rolled back: node uncordoned"

    def _remove_machine(
        self, action: Action, node_name: str, timings: dict[str, Any], guard: WriteGuard
    ) -> Action:
        finish = self.outcomes.finish
        reference = action.details.get("machine_deployment") or ""
        namespace, _, deployment = reference.partition("/")
        machine = self._machine_of(namespace, deployment, node_name) if deployment else None
        if machine is None:
            why = (
                f"no Machine of {reference} runs {node_name}"
                if deployment
                else "the pool's machine_deployment is not set"
            )
            return finish(
                action, ActionStatus.FAILED, f"cluster-api: {why}; {self._rollback(node_name)}"
            )
        name = machine["metadata"]["name"]
        marks = (machine.get("metadata") or {}).get("annotations") or {}
        if ACTION_KEY.get(marks) != action.key:
            # The count before and the key go on the Machine before anything is lowered:
            # a resumed action then knows whether it lowered the replicas already.
            before = self._replicas(namespace, deployment)
            marks = {
                DELETE_MACHINE_ANNOTATION: "yes",
                ACTION_KEY.key: action.key,
                ACTION_PHASE.key: "marked",
                REPLICAS_BEFORE.key: str(before),
            }
            self.api.patch(MACHINES, name, {"metadata": {"annotations": marks}}, namespace)
        before = REPLICAS_BEFORE.get(marks)
        if before is None:
            return finish(
                action,
                ActionStatus.FAILED,
                f"cluster-api: Machine {name}'s {REPLICAS_BEFORE.key} is unreadable: not "
                f"lowering {reference} (twice would remove a second node)",
                timings,
            )
        lowered = before - 1
        if ACTION_PHASE.get(marks) != "scaled":
            replicas = self._replicas(namespace, deployment)
            if replicas >= before:
                lowered = replicas - 1
                try:
                    self.api.patch(
                        MACHINE_DEPLOYMENTS,
                        deployment,
                        {"spec": {"replicas": lowered}},
                        namespace,
                        subresource="scale",
                    )
                except KubeError as exc:
                    return self._unmark_machine(action, node_name, name, namespace, exc, timings)
            annotate = {"metadata": {"annotations": {ACTION_PHASE.key: "scaled"}}}
            self.api.patch(MACHINES, name, annotate, namespace)
        self._mark(node_name, action.key, "done")
        return finish(
            action,
            ActionStatus.DONE,
            f"cluster-api: Machine {name} marked, {reference} scaled to {lowered}",
            {**timings, "machine": name, "replicas": lowered, "replicas_before": before},
        )

    def _machine_of(self, namespace: str, deployment: str, node_name: str) -> Any:
        machines = self.api.list_items(
            MACHINES,
            namespace=namespace,
            label_selector=f"cluster.x-k8s.io/deployment-name={deployment}",
        )
        return next(
            (m for m in machines if _get(m, "status", "nodeRef", "name") == node_name), None
        )

    def _replicas(self, namespace: str, deployment: str) -> int:
        scale = self.api.get(MACHINE_DEPLOYMENTS, deployment, namespace, "scale")
        return int(_get(scale, "spec", "replicas") or 0)

    def _unmark_machine(
        self,
        action: Action,
        node_name: str,
        machine: str,
        namespace: str,
        error: KubeError,
        timings: dict[str, Any],
    ) -> Action:
        """Undo in reverse order, the Machine's mark then the cordon: nothing is left
        half done."""
        unmark = {
            DELETE_MACHINE_ANNOTATION: None,
            ACTION_KEY.key: None,
            ACTION_PHASE.key: None,
            REPLICAS_BEFORE.key: None,
        }
        self.api.patch(MACHINES, machine, {"metadata": {"annotations": unmark}}, namespace)
        return self.outcomes.finish(
            action,
            ActionStatus.FAILED,
            f"cluster-api: scaling {action.details.get('machine_deployment')} failed "
            f"({error}); Machine {machine} unmarked, {self._rollback(node_name)}",
            timings,
        )

    def _delete_node_claim(
        self, action: Action, node_name: str, timings: dict[str, Any], resumed: bool
    ) -> Action:
        finish = self.outcomes.finish
        claims = self.api.list_items(NODE_CLAIMS)
        claim = next((c for c in claims if _get(c, "status", "nodeName") == node_name), None)
        if claim is None:
            if resumed:  # deleted by an earlier run: Karpenter is terminating the node
                self._mark(node_name, action.key, "done")
                return finish(action, ActionStatus.DONE, "karpenter: NodeClaim already deleted")
            return finish(
                action,
                ActionStatus.FAILED,
                f"karpenter: no NodeClaim for {node_name}; {self._rollback(node_name)}",
            )
        name = claim["metadata"]["name"]
        with contextlib.suppress(KubeNotFound):  # deleted in between: the same outcome
            self.api.delete(NODE_CLAIMS, name)
        self._mark(node_name, action.key, "done")
        return finish(
            action,
            ActionStatus.DONE,
            f"karpenter: NodeClaim {name} deleted",
            {**timings, "node_claim": name},
        )


def _get(obj: Any, *path: str) -> Any:
    """``obj[a][b]...``, None where a level is missing or not an object."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj
