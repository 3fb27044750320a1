"""Carry out planned actions on a cluster through the Kubernetes API.

Cordon-and-drain, the way Cluster Autoscaler drains a node: cordon (``spec.unschedulable``)
and mark the node with the action's key, then evict every listed pod through the
Eviction API, which honours PodDisruptionBudgets (a 429 means "not now": retried with
capped backoff up to a deadline). Pods are never deleted. If the budget never allows an
eviction in time, the node is uncordoned and the action fails, leaving the cluster as it
was. A rerun after a crash finds the key on the node and carries on where it stopped.
That is the whole of the ``cordon-drain`` mechanism: node removal is left to the
cluster autoscaler. After the same drain:

- ``cluster-api`` marks the node's Machine ``cluster.x-k8s.io/delete-machine`` and then
  lowers its MachineDeployment's replicas through the scale subresource (so that the
  controller removes that Machine and no other); if the scale call fails the mark is
  taken off again and the node uncordoned;
- ``karpenter`` deletes the node's NodeClaim; Karpenter terminates the instance.

Every outcome, refusals included, becomes a Kubernetes Event on the node.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from gpuwatch.actions.lease import LeaseLock
from gpuwatch.actions.migrate import (
    SpotMigration,
)
from gpuwatch.model.actions import Action, ActionStatus

log = logging.getLogger(__name__)

ACTION_KEY_ANNOTATION = "gpuwatch.io/action-key"
DELETE_MACHINE_ANNOTATION = "cluster.x-k8s.io/delete-machine"
CAPI = ("cluster.x-k8s.io", "v1beta1")
KARPENTER = ("karpenter.sh", "v1")
EVENT_NAMESPACE = "default"  # where events about cluster-scoped objects (nodes) live

# The verbs this module needs, and nothing more (deploy/ grants exactly these).
RBAC_RULES: tuple[dict[str, Any], ...] = (
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
    # cluster-api mechanism
    {"apiGroups": ["cluster.x-k8s.io"], "resources": ["machines"], "verbs": ["list", "patch"]},
    {
        "apiGroups": ["cluster.x-k8s.io"],
        "resources": ["machinedeployments/scale"],
        "verbs": ["get", "patch"],
    },
    # karpenter mechanism
    {"apiGroups": ["karpenter.sh"], "resources": ["nodeclaims"], "verbs": ["list", "delete"]},
    # checkpoint-and-migrate to spot
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {
        "apiGroups": ["kubeflow.org"],
        "resources": ["pytorchjobs"],
        "verbs": ["get", "list", "patch"],
    },
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "patch"]},
)


@dataclass(frozen=True)
class DrainOptions:
    eviction_deadline_s: float = 300.0
    """How long a PodDisruptionBudget may keep refusing before the drain is abandoned and
    the node uncordoned (Cluster Autoscaler waits up to 10 minutes per node)."""
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0


class KubernetesActuator(SpotMigration):
    name = "kubernetes"

    def __init__(
        self,
        api_client: k8s.ApiClient,
        options: DrainOptions | None = None,
        *,
        lease: LeaseLock | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.core = k8s.CoreV1Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)
        self.batch = k8s.BatchV1Api(api_client)
        self.api_client = api_client
        self.options = options or DrainOptions()
        self.lease = lease
        self._sleep = sleep
        self._monotonic = monotonic
        self._now = now

    def exclusive(self) -> bool:
        """Take (or renew) the Lease that makes this instance the only writer."""
        return self.lease.acquire() if self.lease is not None else True

    def kill_switch_on(self, reference: str) -> bool:
        """``namespace/configmap/key`` reads ``true``; anything else (absent too) is off."""
        namespace, name, key = reference.split("/", 2)
        try:
            config_map = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("kill switch %s unreadable: HTTP %s", reference, exc.status)
            return False
        return str((config_map.data or {}).get(key, "")).strip().lower() == "true"

    def apply(self, action: Action) -> Action:
        """Carry out a planned action; record refusals. Never raises for the cluster's
        answers: a failure is a FAILED action with the reason."""
        if action.status is ActionStatus.REFUSED:
            self._event(
                action, _event_reason(action.kind, ActionStatus.REFUSED), action.reason, "Normal"
            )
            return action
        if action.status is not ActionStatus.PLANNED or action.dry_run:
            return action
        if action.kind == "migrate_to_spot":
            try:
                return self._migrate(action)
            except ApiException as exc:
                return self._finish(action, ActionStatus.FAILED, _explain(exc))
        if action.kind != "scale_down_node":
            return self._finish(action, ActionStatus.FAILED, f"unknown action {action.kind}")
        if action.mechanism not in ("cordon-drain", "cluster-api", "karpenter"):
            return self._finish(
                action, ActionStatus.FAILED, f"unknown mechanism {action.mechanism}"
            )
        try:
            return self._drain(action)
        except ApiException as exc:
            reason = _explain(exc)
            log.error("%s on %s: %s", action.kind, action.target, reason)
            return self._finish(action, ActionStatus.FAILED, reason)

    def _drain(self, action: Action) -> Action:
        node_name = action.target.split("/", 1)[1]
        node = self.core.read_node(node_name)
        annotations = node.metadata.annotations or {}
        if node.spec.unschedulable and annotations.get(ACTION_KEY_ANNOTATION) != action.key:
            return self._finish(
                action, ActionStatus.REFUSED, "the node is cordoned by someone else; leaving it"
            )
        started = self._monotonic()
        self.core.patch_node(
            node_name,
            {
                "spec": {"unschedulable": True},
                "metadata": {"annotations": {ACTION_KEY_ANNOTATION: action.key}},
            },
        )
        evicted, stuck = [], []
        for reference in action.details.get("evict", []):
            namespace, pod = reference.split("/", 1)
            if self._evict(namespace, pod, started):
                evicted.append(reference)
            else:
                stuck.append(reference)
                break
        timings = {"drain_s": round(self._monotonic() - started, 3), "evicted": evicted}
        if stuck:
            self._uncordon(node_name)
            return self._finish(
                action,
                ActionStatus.FAILED,
                f"a disruption budget kept refusing to evict {stuck[0]} for "
                f"{self.options.eviction_deadline_s:g} s; node uncordoned",
                timings,
            )
        if action.mechanism == "cluster-api":
            return self._remove_machine(action, node_name, timings)
        if action.mechanism == "karpenter":
            return self._delete_node_claim(action, node_name, timings)
        return self._finish(
            action,
            ActionStatus.DONE,
            f"cordoned, {len(evicted)} pods evicted; the cluster autoscaler removes the node",
            timings,
        )

    def _remove_machine(self, action: Action, node_name: str, timings: dict[str, Any]) -> Action:
        reference = action.details.get("machine_deployment") or ""
        namespace, _, deployment = reference.partition("/")
        if not deployment:
            self._uncordon(node_name)
            return self._finish(
                action, ActionStatus.FAILED, "cluster-api: the pool's machine_deployment is not set"
            )
        machines = self.custom.list_namespaced_custom_object(
            *CAPI,
            namespace,
            "machines",
            label_selector=f"cluster.x-k8s.io/deployment-name={deployment}",
        )["items"]
        machine = next(
            (
                m
                for m in machines
                if ((m.get("status") or {}).get("nodeRef") or {}).get("name") == node_name
            ),
            None,
        )
        if machine is None:
            self._uncordon(node_name)
            return self._finish(
                action,
                ActionStatus.FAILED,
                f"cluster-api: no Machine of {reference} runs {node_name}",
            )
        name = machine["metadata"]["name"]
        mark = {"metadata": {"annotations": {DELETE_MACHINE_ANNOTATION: "yes"}}}
        self.custom.patch_namespaced_custom_object(*CAPI, namespace, "machines", name, mark)
        try:
            scale = self.custom.get_namespaced_custom_object_scale(
                *CAPI, namespace, "machinedeployments", deployment
            )
            replicas = int(scale["spec"]["replicas"])
            self.custom.patch_namespaced_custom_object_scale(
                *CAPI,
                namespace,
                "machinedeployments",
                deployment,
                {"spec": {"replicas": replicas - 1}},
            )
        except ApiException as exc:
            # Undo in reverse order, the mark then the cordon: nothing is left half done.
            unmark = {"metadata": {"annotations": {DELETE_MACHINE_ANNOTATION: None}}}
            self.custom.patch_namespaced_custom_object(*CAPI, namespace, "machines", name, unmark)
            self._uncordon(node_name)
            return self._finish(
                action,
                ActionStatus.FAILED,
                f"cluster-api: scaling {reference} failed ({_explain(exc)}); Machine {name} "
                "unmarked and the node uncordoned",
                timings,
            )
        return self._finish(
            action,
            ActionStatus.DONE,
            f"cluster-api: Machine {name} marked, {reference} scaled to {replicas - 1}",
            {**timings, "machine": name, "replicas": replicas - 1},
        )

    def _delete_node_claim(self, action: Action, node_name: str, timings: dict[str, Any]) -> Action:
        claims = self.custom.list_cluster_custom_object(*KARPENTER, "nodeclaims")["items"]
        claim = next(
            (c for c in claims if (c.get("status") or {}).get("nodeName") == node_name), None
        )
        if claim is None:
            self._uncordon(node_name)
            return self._finish(
                action, ActionStatus.FAILED, f"karpenter: no NodeClaim for {node_name}"
            )
        name = claim["metadata"]["name"]
        self.custom.delete_cluster_custom_object(*KARPENTER, "nodeclaims", name)
        return self._finish(
            action,
            ActionStatus.DONE,
            f"karpenter: NodeClaim {name} deleted",
            {**timings, "node_claim": name},
        )

    def _uncordon(self, node_name: str) -> None:
        self.core.patch_node(
            node_name,
            {
                "spec": {"unschedulable": False},
                "metadata": {"annotations": {ACTION_KEY_ANNOTATION: None}},
            },
        )

    def _evict(self, namespace: str, pod: str, started: float) -> bool:
        """Evict one pod; True when it is gone. 429 (PDB) retried until the deadline."""
        delay = self.options.backoff_initial_s
        body = k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name=pod, namespace=namespace))
        while True:
            try:
                # The success answer is a Status the client would misread as an Eviction.
                self.core.create_namespaced_pod_eviction(
                    pod, namespace, body, _preload_content=False
                )
                return True
            except ApiException as exc:
                if exc.status == 404:
                    return True  # already gone: a rerun after a crash
                if exc.status != 429:
                    raise
            elapsed = self._monotonic() - started
            if elapsed + delay > self.options.eviction_deadline_s:
                return False
            log.info(
                "eviction of %s/%s refused by a disruption budget; retrying in %.1f s",
                namespace,
                pod,
                delay,
            )
            self._sleep(delay)
            delay = min(delay * 2, self.options.backoff_max_s)

    def _finish(
        self,
        action: Action,
        status: ActionStatus,
        reason: str,
        details: dict[str, Any] | None = None,
    ) -> Action:
        done = replace(
            action, status=status, reason=reason, details={**action.details, **(details or {})}
        )
        self._event(
            done,
            _event_reason(action.kind, status),
            reason,
            "Normal" if status is not ActionStatus.FAILED else "Warning",
        )
        return done

    def _event(self, action: Action, reason: str, message: str, kind: str) -> None:
        """An Event on the action's object: in its namespace, or ``default`` for nodes."""
        parts = action.target.split("/")
        kind_name, name = parts[0], parts[-1]
        namespace = parts[1] if len(parts) == 3 else EVENT_NAMESPACE
        now = self._now()
        event = k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(generate_name=f"gpuwatch-{name}-", namespace=namespace),
            involved_object=k8s.V1ObjectReference(
                kind=kind_name, name=name, namespace=namespace if len(parts) == 3 else None
            ),
            reason=reason,
            message=message[:1024],
            type=kind,
            source=k8s.V1EventSource(component="gpuwatch"),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            self.core.create_namespaced_event(namespace, event)
        except ApiException as exc:  # an event is a courtesy: never fail an action for it
            log.warning("event for %s not recorded: HTTP %s", action.target, exc.status)


def _event_reason(kind: str, status: ActionStatus) -> str:
    """``scale_down_node`` + done -> ``ScaleDown``; refused -> ``ScaleDownRefused``..."""
    base = {
        "scale_down_node": "ScaleDown",
        "migrate_to_spot": "MigrateToSpot",
        "migrate_to_spot_confirmed": "MigrateToSpotConfirmed",
        "migrate_to_spot_fallback": "MigrateToSpotFallback",
    }.get(kind, "GpuwatchAction")
    suffix = {ActionStatus.REFUSED: "Refused", ActionStatus.FAILED: "Failed"}.get(status, "")
    return base + suffix


def _explain(exc: ApiException) -> str:
    if exc.status in (401, 403):
        return f"HTTP {exc.status}: not allowed; the actions need: " + "; ".join(
            f"{'/'.join(r['resources'])} {','.join(r['verbs'])}" for r in RBAC_RULES
        )
    return f"HTTP {exc.status}: {exc.reason}"
