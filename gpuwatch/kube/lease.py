"""One writer at a time: a coordination.k8s.io Lease, for the daemon and the actuator.

Two gpuwatch instances (daemon replicas, or a manual ``gpuwatch once --no-dry-run``
beside the CronJob) must never act on the same objects at once. The Lease records its
holder and when it was last renewed; another holder may take it only once it has
expired. Updates carry the Lease's resourceVersion, so of two instances racing for an
expired Lease, the API server lets exactly one win (the other gets 409 Conflict).

``acquire`` answers whether this instance holds the Lease now; it raises ``KubeError``
(never the client's exceptions) when the API server cannot tell, so that the caller
decides what not holding it means (the actuator: refuse to write, with the reason).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from gpuwatch.kube.api import KubeApi
from gpuwatch.kube.errors import KubeConflict, KubeError, KubeNotFound
from gpuwatch.kube.resources import LEASES

log = logging.getLogger(__name__)

# The verbs the Lease needs, in its namespace only (a Role there: deploy/components/leases;
# gpuwatch.actuators.rbac asks for them where actions.lease and daemon.lease live).
RBAC_RULES: tuple[dict[str, Any], ...] = (
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "create", "update"],
    },
)


class Lease:
    """The Lease ``namespace/name``, held as ``holder`` for ``duration_s`` per renewal."""

    def __init__(
        self, api: KubeApi, namespace: str, name: str, holder: str, duration_s: int = 600
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.holder = holder
        self.duration_s = duration_s
        self._held_since: float | None = None
        """Monotonic time of the last successful take or renewal."""

    @property
    def where(self) -> str:
        return f"lease {self.namespace}/{self.name}"

    def hold(self) -> bool:
        """Keep the Lease: renew it once a third of its duration has passed since the
        last renewal (a renewal per write would double the requests of a drain); False
        when it was lost. Raises ``KubeError`` as ``acquire``."""
        held = self._held_since
        if held is not None and self.api.monotonic() - held < self.duration_s / 3:
            return True
        return self.acquire()

    def acquire(self) -> bool:
        """Take or renew the Lease; False when another live holder has it, or another
        instance won the race to take it. Raises ``KubeError`` otherwise."""
        taken = self._acquire()
        self._held_since = self.api.monotonic() if taken else None
        return taken

    def _acquire(self) -> bool:
        now = self.api.now()
        try:
            lease = self.api.get(LEASES, self.name, self.namespace)
        except KubeNotFound:
            return self._create(now)
        spec = dict(lease.get("spec") or {})
        holder = spec.get("holderIdentity")
        renewed = _time(spec.get("renewTime")) or _time(spec.get("acquireTime"))
        duration = spec.get("leaseDurationSeconds") or self.duration_s
        expired = renewed is None or now > renewed + timedelta(seconds=float(duration))
        if holder not in (None, self.holder) and not expired:
            log.info("%s held by %s", self.where, holder)
            return False
        if holder != self.holder:
            spec["acquireTime"] = _stamp(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(
            holderIdentity=self.holder, renewTime=_stamp(now), leaseDurationSeconds=self.duration_s
        )
        try:
            self.api.replace(LEASES, self.name, {**lease, "spec": spec}, self.namespace)
        except KubeConflict:  # someone else updated it first
            return False
        return True

    def release(self) -> None:
        """Let the Lease expire now, if this instance holds it; a failure is logged (the
        Lease then expires on its own)."""
        self._held_since = None
        try:
            lease = self.api.get(LEASES, self.name, self.namespace)
            spec = dict(lease.get("spec") or {})
            if spec.get("holderIdentity") == self.holder:
                spec["holderIdentity"] = None
                self.api.replace(LEASES, self.name, {**lease, "spec": spec}, self.namespace)
        except KubeError as exc:
            log.warning("%s not released: %s", self.where, exc)

    def _create(self, now: datetime) -> bool:
        body = {
            "apiVersion": LEASES.api_version,
            "kind": LEASES.kind,
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.holder,
                "acquireTime": _stamp(now),
                "renewTime": _stamp(now),
                "leaseDurationSeconds": self.duration_s,
                "leaseTransitions": 0,
            },
        }
        try:
            self.api.create(LEASES, body, self.namespace)
        except KubeConflict:  # created by someone else in between
            return False
        return True


def _stamp(when: datetime) -> str:
    """A Lease's MicroTime: RFC 3339 in UTC with microseconds."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time(value: object) -> datetime | None:
    """A MicroTime as an aware datetime; None when absent or unreadable (an unreadable
    renewal time counts as expired, as client-go's leader election treats it)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
