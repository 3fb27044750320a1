"""Outcomes of actions, recorded on the objects they touched as Kubernetes Events.

``kubectl describe node gpu-1`` then shows what gpuwatch did to it and why, refusals
included: the people who own a node see it where they look, not only in gpuwatch's
output. An event is a courtesy: failing to record one never fails the action.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC
from typing import Any

from gpuwatch.kube.api import KubeApi
from gpuwatch.kube.errors import KubeError
from gpuwatch.kube.resources import EVENTS
from gpuwatch.model.actions import Action, ActionStatus

log = logging.getLogger(__name__)

EVENT_NAMESPACE = "default"
"""Where events about cluster-scoped objects (nodes) live."""
_REASONS = {
    "scale_down_node": "ScaleDown",
    "migrate_to_spot": "MigrateToSpot",
    "migrate_to_spot_confirmed": "MigrateToSpotConfirmed",
    "migrate_to_spot_fallback": "MigrateToSpotFallback",
}


def event_reason(kind: str, status: ActionStatus) -> str:
    """``scale_down_node`` + done -> ``ScaleDown``; refused -> ``ScaleDownRefused``..."""
    suffix = {ActionStatus.REFUSED: "Refused", ActionStatus.FAILED: "Failed"}.get(status, "")
    return _REASONS.get(kind, "GpuwatchAction") + suffix


class Outcomes:
    """Turns an action into its outcome, and records the outcome as an Event."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    def finish(
        self,
        action: Action,
        status: ActionStatus,
        reason: str,
        details: dict[str, Any] | None = None,
    ) -> Action:
        done = replace(
            action, status=status, reason=reason, details={**action.details, **(details or {})}
        )
        self.record(done)
        return done

    def record(self, action: Action) -> None:
        """An Event on the action's object: in its namespace, or ``default`` for nodes."""
        parts = action.target.split("/")
        kind, name = parts[0], parts[-1]
        namespaced = len(parts) == 3
        namespace = parts[1] if namespaced else EVENT_NAMESPACE
        stamp = self.api.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"gpuwatch-{name}-", "namespace": namespace},
            "involvedObject": {"kind": kind, "name": name}
            | ({"namespace": namespace} if namespaced else {}),
            "reason": event_reason(action.kind, action.status),
            "message": action.reason[:1024],
            "type": "Warning" if action.status is ActionStatus.FAILED else "Normal",
            "source": {"component": "gpuwatch"},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self.api.create(EVENTS, event, namespace)
        except KubeError as exc:
            log.warning("event for %s not recorded: %s", action.target, exc)
