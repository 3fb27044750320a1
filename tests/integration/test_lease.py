"""Two gpuwatch instances, one Lease: never two writers at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gpuwatch.kube.lease import Lease

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _lease(emulator, name: str, holder: str, clock: Clock) -> Lease:
    return Lease(emulator.kube_api(now=clock), "gpuwatch", name, holder, 60)


def test_two_instances_one_lease(kube_emulator):
    clock = Clock()
    a = _lease(kube_emulator, "gpuwatch-actions", "a", clock)
    b = _lease(kube_emulator, "gpuwatch-actions", "b", clock)
    assert a.acquire() is True
    assert b.acquire() is False  # held and fresh
    clock.now += timedelta(seconds=30)
    assert a.acquire() is True  # renewal
    clock.now += timedelta(seconds=61)
    assert b.acquire() is True  # a stopped renewing: b takes over
    assert a.acquire() is False
    held = kube_emulator.get("coordination.k8s.io/v1", "Lease", "gpuwatch-actions", "gpuwatch")
    assert held["spec"]["holderIdentity"] == "b" and held["spec"]["leaseTransitions"] == 1
    b.release()
    assert a.acquire() is True


def test_a_conflicting_update_loses_the_race(kube_emulator):
    clock = Clock()
    a = _lease(kube_emulator, "l", "a", clock)
    b = _lease(kube_emulator, "l", "b", clock)
    c = _lease(kube_emulator, "l", "c", clock)
    assert c.acquire() is True
    clock.now += timedelta(minutes=5)
    # b read the expired lease, but another writer updated it first: the API server
    # answers b's stale write 409, and b does not act.
    lease_path = kube_emulator.path("coordination.k8s.io/v1", "Lease", "l", "gpuwatch")
    kube_emulator.fail_next(lease_path, 409, times=1, method="PUT")
    assert b.acquire() is False
    assert a.acquire() is True
