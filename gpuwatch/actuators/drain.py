"""Cordon and drain a node, the way Cluster Autoscaler drains one, then remove it.

Cordon (``spec.unschedulable``) and mark the node with the action's key, then evict
every listed pod through the Eviction API, which honours PodDisruptionBudgets (429
means "not now": retried with capped backoff up to a deadline). Pods are never deleted.
If a budget never allows an eviction in time, the node is uncordoned and the action
fails, leaving the node schedulable again. A rerun after a crash finds the key on the
node and carries on where it stopped. That is the whole of the ``cordon-drain``
mechanism: node removal is left to the cluster autoscaler. After the same drain:

- ``cluster-api`` marks the node's Machine ``cluster.x-k8s.io/delete-machine`` and then
  lowers its MachineDeployment's replicas through the scale subresource (so that the
  controller removes that Machine and no other); if the scale call fails the mark is
  taken off again and the node uncordoned;
- ``karpenter`` deletes the node's NodeClaim; Karpenter terminates the instance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gpuwatch.actuators.events import Outcomes
from gpuwatch.kube.api import KubeApi, RetryPolicy, patient
from gpuwatch.kube.errors import KubeError, KubeNotFound, KubeUnavailable
from gpuwatch.kube.resources import MACHINE_DEPLOYMENTS, MACHINES, NODE_CLAIMS, NODES, PODS
from gpuwatch.model.actions import Action, ActionStatus

log = logging.getLogger(__name__)

ACTION_KEY_ANNOTATION = "gpuwatch.io/action-key"
DELETE_MACHINE_ANNOTATION = "cluster.x-k8s.io/delete-machine"
MECHANISMS = ("cordon-drain", "cluster-api", "karpenter")


@dataclass(frozen=True)
class DrainOptions:
    eviction_deadline_s: float = 300.0
    """How long a PodDisruptionBudget may keep refusing before the drain is abandoned and
    the node uncordoned (Cluster Autoscaler waits up to 10 minutes per node)."""
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

    def run(self, action: Action) -> Action:
        finish = self.outcomes.finish
        if action.mechanism not in MECHANISMS:
            return finish(action, ActionStatus.FAILED, f"unknown mechanism {action.mechanism}")
        try:
            return self._drain(action)
        except KubeError as exc:
            log.error("%s on %s: %s", action.kind, action.target, exc)
            return finish(action, ActionStatus.FAILED, str(exc))

    def _drain(self, action: Action) -> Action:
        finish = self.outcomes.finish
        node_name = action.target.split("/", 1)[1]
        node = self.api.get(NODES, node_name)
        annotations = (node.get("metadata") or {}).get("annotations") or {}
        cordoned = (node.get("spec") or {}).get("unschedulable") is True
        if cordoned and annotations.get(ACTION_KEY_ANNOTATION) != action.key:
            return finish(
                action, ActionStatus.REFUSED, "the node is cordoned by someone else; leaving it"
            )
        started = self.api.monotonic()
        deadline = self.evictions.deadline()
        self.api.patch(
            NODES,
            node_name,
            {
                "spec": {"unschedulable": True},
                "metadata": {"annotations": {ACTION_KEY_ANNOTATION: action.key}},
            },
        )
        evicted: list[str] = []
        for reference in action.details.get("evict", []):
            namespace, pod = reference.split("/", 1)
            if not self.evictions.evict(namespace, pod, deadline):
                self.uncordon(node_name)
                return finish(
                    action,
                    ActionStatus.FAILED,
                    f"a disruption budget kept refusing to evict {reference} for "
                    f"{self.evictions.options.eviction_deadline_s:g} s; node uncordoned",
                    {"drain_s": round(self.api.monotonic() - started, 3), "evicted": evicted},
                )
            evicted.append(reference)
        timings = {"drain_s": round(self.api.monotonic() - started, 3), "evicted": evicted}
        if action.mechanism == "cluster-api":
            return self._remove_machine(action, node_name, timings)
        if action.mechanism == "karpenter":
            return self._delete_node_claim(action, node_name, timings)
        return finish(
            action,
            ActionStatus.DONE,
            f"cordoned, {len(evicted)} pods evicted; the cluster autoscaler removes the node",
            timings,
        )

    def uncordon(self, node_name: str) -> None:
        self.api.patch(
            NODES,
            node_name,
            {
                "spec": {"unschedulable": False},
                "metadata": {"annotations": {ACTION_KEY_ANNOTATION: None}},
            },
        )

    def _remove_machine(self, action: Action, node_name: str, timings: dict[str, Any]) -> Action:
        finish = self.outcomes.finish
        reference = action.details.get("machine_deployment") or ""
        namespace, _, deployment = reference.partition("/")
        if not deployment:
            self.uncordon(node_name)
            return finish(
                action, ActionStatus.FAILED, "cluster-api: the pool's machine_deployment is not set"
            )
        machines = self.api.list_items(
            MACHINES,
            namespace=namespace,
            label_selector=f"cluster.x-k8s.io/deployment-name={deployment}",
        )
        machine = next(
            (m for m in machines if _get(m, "status", "nodeRef", "name") == node_name), None
        )
        if machine is None:
            self.uncordon(node_name)
            return finish(
                action,
                ActionStatus.FAILED,
                f"cluster-api: no Machine of {reference} runs {node_name}",
            )
        name = machine["metadata"]["name"]
        mark = {"metadata": {"annotations": {DELETE_MACHINE_ANNOTATION: "yes"}}}
        self.api.patch(MACHINES, name, mark, namespace)
        try:
            scale = self.api.get(MACHINE_DEPLOYMENTS, deployment, namespace, "scale")
            replicas = int(scale["spec"]["replicas"])
            self.api.patch(
                MACHINE_DEPLOYMENTS,
                deployment,
                {"spec": {"replicas": replicas - 1}},
                namespace,
                subresource="scale",
            )
        except KubeError as exc:
            # Undo in reverse order, the mark then the cordon: nothing is left half done.
            unmark = {"metadata": {"annotations": {DELETE_MACHINE_ANNOTATION: None}}}
            self.api.patch(MACHINES, name, unmark, namespace)
            self.uncordon(node_name)
            return finish(
                action,
                ActionStatus.FAILED,
                f"cluster-api: scaling {reference} failed ({exc}); Machine {name} "
                "unmarked and the node uncordoned",
                timings,
            )
        return finish(
            action,
            ActionStatus.DONE,
            f"cluster-api: Machine {name} marked, {reference} scaled to {replicas - 1}",
            {**timings, "machine": name, "replicas": replicas - 1},
        )

    def _delete_node_claim(self, action: Action, node_name: str, timings: dict[str, Any]) -> Action:
        finish = self.outcomes.finish
        claims = self.api.list_items(NODE_CLAIMS)
        claim = next((c for c in claims if _get(c, "status", "nodeName") == node_name), None)
        if claim is None:
            self.uncordon(node_name)
            return finish(action, ActionStatus.FAILED, f"karpenter: no NodeClaim for {node_name}")
        name = claim["metadata"]["name"]
        self.api.delete(NODE_CLAIMS, name)
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
