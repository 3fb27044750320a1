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

from gpuwatch.actuators.base import FollowUp, KillSwitch
from gpuwatch.actuators.drain import Drain, DrainOptions, Evictions
from gpuwatch.actuators.events import Outcomes
from gpuwatch.actuators.guard import WriteGuard
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
            held = self.lease.hold()
        except KubeError as exc:
            return f"the actions lease could not be taken: {exc}"
        return None if held else "another gpuwatch instance holds the actions lease"

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()  # logs, never raises: the Lease then expires on its own

    def kill_switch(self, reference: str) -> KillSwitch:
        """``namespace/configmap/key`` reads ``true``: on. Absent or ``false``: off.
        Anything else, or a ConfigMap that cannot be read: off, with a note."""
        namespace, name, key = reference.split("/", 2)
        try:
            config_map = self.api.get(CONFIGMAPS, name, namespace)
        except KubeNotFound:
            return KillSwitch(False)
        except KubeError as exc:
            log.warning("kill switch %s unreadable: %s", reference, exc)
            return KillSwitch(False, f"kill switch {reference} unreadable ({exc}): writes are off")
        data = config_map.get("data")
        value = data.get(key) if isinstance(data, dict) else None
        text = value.strip().lower() if isinstance(value, str) else None
        if text in (None, "false"):
            return KillSwitch(False)
        if text == "true":
            return KillSwitch(True)
        shown = repr(value)[:80]
        return KillSwitch(
            False, f"kill switch {reference} reads {shown}, not true or false: writes are off"
        )

    def apply(self, action: Action, budget_s: float | None = None) -> Action:
        """Carry out a planned action; record refusals. Never raises for the cluster's
        answers: a failure is a FAILED action with the reason."""
        if action.status is ActionStatus.REFUSED:
            self.outcomes.record(action)
            return action
        if action.status is not ActionStatus.PLANNED or action.dry_run:
            return action
        guard = self._guard(budget_s)
        if action.kind == "migrate_to_spot":
            return self.migration.run(action, guard)
        if action.kind == "scale_down_node":
            return self.drain.run(action, guard)
        return self.outcomes.finish(action, ActionStatus.FAILED, f"unknown action {action.kind}")

    def follow_up(self, request: FollowUp) -> list[Action]:
        return self.migration.follow_up(request, self._guard(None))

    def _guard(self, budget_s: float | None) -> WriteGuard:
        now = self.api.monotonic()
        return WriteGuard(
            self.api.monotonic,
            None if budget_s is None else now + budget_s,
            self.exclusive,
        )
