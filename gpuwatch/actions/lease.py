"""One writer at a time: a coordination.k8s.io Lease taken before any action is written.

Two gpuwatch instances (daemon replicas, or a manual ``gpuwatch once --no-dry-run`` beside
the CronJob) must never act on the same objects at once. The Lease records its holder
and when it was last renewed; another holder may take it only once it has expired.
Updates carry the Lease's resourceVersion, so of two instances racing for an expired
Lease, the API server lets exactly one win (the other gets 409 Conflict).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

RBAC_RULES = (
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "create", "update"],
    },
)


class LeaseLock:
    def __init__(
        self,
        api_client: k8s.ApiClient,
        namespace: str,
        name: str,
        holder: str,
        duration_s: int = 600,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = k8s.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.holder = holder
        self.duration_s = duration_s
        self._now = now

    def acquire(self) -> bool:
        """Take or renew the Lease; False when another live holder has it."""
        now = self._now()
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return self._create(now)
        spec = lease.spec or k8s.V1LeaseSpec()
        renewed = spec.renew_time or spec.acquire_time
        expired = renewed is None or now > renewed + timedelta(
            seconds=spec.lease_duration_seconds or self.duration_s
        )
        if spec.holder_identity not in (None, self.holder) and not expired:
            log.info("lease %s/%s held by %s", self.namespace, self.name, spec.holder_identity)
            return False
        if spec.holder_identity != self.holder:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = self.holder
        spec.renew_time = now
        spec.lease_duration_seconds = self.duration_s
        lease.spec = spec
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            if exc.status == 409:  # someone else updated it first
                return False
            raise
        return True

    def release(self) -> None:
        """Let the Lease expire now, if this instance holds it."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec and lease.spec.holder_identity == self.holder:
                lease.spec.holder_identity = None
                self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            log.warning("lease %s/%s not released: HTTP %s", self.namespace, self.name, exc.status)

    def _create(self, now: datetime) -> bool:
        body = k8s.V1Lease(
            metadata=k8s.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=k8s.V1LeaseSpec(
                holder_identity=self.holder,
                acquire_time=now,
                renew_time=now,
                lease_duration_seconds=self.duration_s,
                lease_transitions=0,
            ),
        )
        try:
            self.api.create_namespaced_lease(self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # created by someone else in between
                return False
            raise
        return True
