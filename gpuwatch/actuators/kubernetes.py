"""The actuator that writes to a cluster through the Kubernetes API.

It dispatches each planned action to the mechanism that carries it out
(``drain.Drain`` for ``scale_down_node``, ``migrate.SpotMigration`` for
``migrate_to_spot``), records every outcome, refusals included, as an Event on the
object concerned, holds the actions Lease so that one instance writes at a time, and
reads the kill switch. Every request goes through ``gpuwatch.kube``; a failure becomes a
FAILED action with the layer's words (a 403 names the permission to grant).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from gpuwatch.actuators.drain import Drain, DrainOptions, Evictions
from gpuwatch.actuators.events import Outcomes
from gpuwatch.actuators.migrate import SpotMigration
from gpuwatch.kube.api import KubeApi
from gpuwatch.kube.errors import KubeError, KubeNotFound
from gpuwatch.kube.lease import Lease
from gpuwatch.kube.resources import CONFIGMAPS
from gpuwatch.model.actions import Action, ActionStatus

log = logging.getLogger(__name__)


class KubernetesActuator:
    name = "kubernetes"

    def __init__(
        self, api: KubeApi, options: DrainOptions | None = None, *, lease: Lease | None = None
    ) -> None:
        """No I/O here."""
        self.api = api
        self.lease = lease
        self.outcomes = Outcomes(api)
        evictions = Evictions(api, options or DrainOptions())
        self.drain = Drain(api, evictions, self.outcomes)
        self.migration = SpotMigration(api, evictions, self.outcomes)

    def exclusive(self) -> str | None:
        """Take (or renew) the Lease that makes this instance the only writer."""
        if self.lease is None:
            return None
        try:
            held = self.lease.acquire()
        except KubeError as exc:
            return f"the actions lease could not be taken: {exc}"
        return None if held else "another gpuwatch instance holds the actions lease"

    def kill_switch_on(self, reference: str) -> bool:
        """``namespace/configmap/key`` reads ``true``; anything else (absent too) is off."""
        namespace, name, key = reference.split("/", 2)
        try:
            config_map = self.api.get(CONFIGMAPS, name, namespace)
        except KubeNotFound:
            return False
        except KubeError as exc:
            log.warning("kill switch %s unreadable: %s", reference, exc)
            return False
        value = (config_map.get("data") or {}).get(key, "")
        return str(value).strip().lower() == "true"

    def apply(self, action: Action) -> Action:
        """Carry out a planned action; record refusals. Never raises for the cluster's
        answers: a failure is a FAILED action with the reason."""
        if action.status is ActionStatus.REFUSED:
            self.outcomes.record(action)
            return action
        if action.status is not ActionStatus.PLANNED or action.dry_run:
            return action
        if action.kind == "migrate_to_spot":
            return self.migration.run(action)
        if action.kind == "scale_down_node":
            return self.drain.run(action)
        return self.outcomes.finish(action, ActionStatus.FAILED, f"unknown action {action.kind}")

    def follow_up(
        self, deadline_s: float, progress: Mapping[str, tuple[int, int]] | None = None
    ) -> list[Action]:
        return self.migration.follow_up(deadline_s, progress or {})
