"""Two gpuwatch instances, one Lease: never two writers at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gpuwatch.actions.lease import LeaseLock

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_two_instances_one_lease(kube_emulator):
    clock = Clock()
    a = LeaseLock(kube_emulator.api_client(), "gpuwatch", "gpuwatch-actions", "a", 60, clock)
    b = LeaseLock(kube_emulator.api_client(), "gpuwatch", "gpuwatch-actions", "b", 60, clock)
    assert a.acquire() is True
    assert b.acquire() is False  # held and fresh
    clock.now += timedelta(seconds=30)
    assert a.acquire() is True  # renewal
    clock.now += timedelta(seconds=61)
    assert b.acquire() is True  # a stopped renewing: b takes over
    assert a.acquire() is False
    lease = kube_emulator.get("coordination.k8s.io/v1", "Lease", "gpuwatch-actions", "gpuwatch")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    b.release()
    assert a.acquire() is True


def test_a_conflicting_update_loses_the_race(kube_emulator):
    clock = Clock()
    a = LeaseLock(kube_emulator.api_client(), "gpuwatch", "l", "a", 60, clock)
    b = LeaseLock(kube_emulator.api_client(), "gpuwatch", "l", "b", 60, clock)
    c = LeaseLock(kube_emulator.api_client(), "gpuwatch", "l", "c", 60, clock)
    assert c.acquire() is True
    clock.now += timedelta(minutes=5)
    # b read the expired lease, but another writer updated it first: the API server
    # answers b's stale write 409, and b does not act.
    lease_path = kube_emulator.path("coordination.k8s.io/v1", "Lease", "l", "gpuwatch")
    kube_emulator.fail_next(lease_path, 409, times=1, method="PUT")
    assert b.acquire() is False
    assert a.acquire() is True
