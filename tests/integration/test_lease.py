"""Two gpuwatch instances, one Lease: never two writers at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gpuwatch.actuators.kubernetes import KubernetesActuator
from gpuwatch.kube.lease import Lease
from tests.builders import FakeClock

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


def test_hold_renews_once_a_third_of_the_lease_has_passed(kube_emulator):
    wall = Clock()
    ticks = FakeClock(T0)
    lease = Lease(
        kube_emulator.kube_api(now=wall, monotonic=ticks.monotonic), "gpuwatch", "h", "a", 60
    )
    assert lease.hold() is True  # taken
    requests = len(kube_emulator.requests_where(plural="leases"))
    ticks.t += 19
    assert lease.hold() is True  # recent: no request
    assert len(kube_emulator.requests_where(plural="leases")) == requests
    ticks.t += 2
    wall.now += timedelta(seconds=21)
    assert lease.hold() is True  # renewed
    assert len(kube_emulator.requests_where(plural="leases")) > requests
    lease.release()
    other = Lease(kube_emulator.kube_api(now=wall), "gpuwatch", "h", "b", 60)
    assert other.acquire() is True  # released: taken at once, no waiting for expiry
    assert lease.hold() is False  # and the first no longer assumes it holds it


def test_overlapping_runs_never_both_write(kube_emulator):
    """A manual ``once`` beside the CronJob's run: while one holds the Lease the other's
    writes are refused, and the Lease is free again as soon as the first run ends."""
    clock = Clock()
    api = kube_emulator.kube_api(now=clock)
    first = KubernetesActuator(api, lease=Lease(api, "gpuwatch", "gpuwatch-actions", "cron-1", 120))
    second = KubernetesActuator(api, lease=Lease(api, "gpuwatch", "gpuwatch-actions", "me", 120))
    assert first.exclusive() is None
    assert "another gpuwatch instance" in (second.exclusive() or "")
    first.release()
    assert second.exclusive() is None
    assert "another gpuwatch instance" in (first.exclusive() or "")
