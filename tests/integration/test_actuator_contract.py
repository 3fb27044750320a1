"""The ``Actuator`` contract, run against every implementation: the Kubernetes actuator
(the real client against the emulated API server) and the recording one.

A cycle relies on these and on nothing else of an actuator: a refusal and a dry run come
back as they went in; a planned write comes back done (or failed with a reason), never
as an exception; the kill switch reads off unless it says ``true``; ``exclusive`` says
None when this instance may write and why not otherwise; a follow-up with nothing in
flight does nothing. Each world below is built so that the same action means the same
thing to both: a node with one opted-in pod to drain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from gpuwatch.actuators.base import Actuator, FollowUp
from gpuwatch.actuators.kubernetes import KubernetesActuator
from gpuwatch.actuators.recorder import RecordingActuator
from gpuwatch.config.settings import MigrationSettings
from gpuwatch.kube.lease import Lease
from gpuwatch.model.actions import Action, ActionStatus
from tests.integration.kube_emulator import KubeEmulator

pytestmark = pytest.mark.integration

SWITCH = "gpuwatch/gpuwatch-actions/enabled"
PLANNED = Action(
    kind="scale_down_node",
    target="Node/gpu-1",
    status=ActionStatus.PLANNED,
    reason="8 of 8 GPUs unallocated",
    key="scale_down_node:gpu-1",
    dry_run=False,
    pool="gpu-training",
    mechanism="cordon-drain",
    details={"evict": ["research/nb-0"]},
)

World = Callable[..., Actuator]
"""An actuator in a world whose kill switch reads ``switch`` and whose actions Lease
another instance holds when ``held_elsewhere``."""


def _kubernetes(emulator: KubeEmulator) -> World:
    def build(switch: str | None = "true", held_elsewhere: bool = False) -> Actuator:
        emulator.add_all(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": "gpu-1", "labels": {"pool": "gpu-training"}},
                    "status": {"capacity": {"nvidia.com/gpu": "8"}},
                },
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "nb-0", "namespace": "research"},
                    "spec": {"nodeName": "gpu-1", "containers": [{"name": "c"}]},
                },
            ]
        )
        if switch is not None:
            emulator.add(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "gpuwatch-actions", "namespace": "gpuwatch"},
                    "data": {"enabled": switch},
                }
            )
        api = emulator.kube_api()
        if held_elsewhere:
            assert Lease(api, "gpuwatch", "gpuwatch-actions", "other", 600).acquire()
        lease = Lease(api, "gpuwatch", "gpuwatch-actions", "me", 600)
        return KubernetesActuator(api, lease=lease)

    return build


def _recording(_: KubeEmulator) -> World:
    def build(switch: str | None = "true", held_elsewhere: bool = False) -> Actuator:
        on = switch is not None and switch.strip().lower() == "true"  # what the ConfigMap says
        return RecordingActuator(kill_switch=on, holds_lease=not held_elsewhere)

    return build


@pytest.fixture(params=[_kubernetes, _recording], ids=["kubernetes", "recording"])
def world(request, kube_emulator) -> World:
    return request.param(kube_emulator)


def test_a_planned_write_is_done_and_says_so(world):
    actuator = world()
    assert actuator.exclusive() is None
    done = actuator.apply(PLANNED)
    assert done.status is ActionStatus.DONE and done.reason
    assert (done.kind, done.target, done.key) == (PLANNED.kind, PLANNED.target, PLANNED.key)


def test_refusals_and_dry_runs_come_back_as_they_went_in(world):
    actuator = world()
    refused = replace(PLANNED, status=ActionStatus.REFUSED, reason="floor")
    dry = replace(PLANNED, dry_run=True)
    assert actuator.apply(refused) == refused
    assert actuator.apply(dry) == dry


@pytest.mark.parametrize(
    ("switch", "on"),
    [("true", True), (" TRUE ", True), ("false", False), ("", False), (None, False)],
)
def test_the_kill_switch_is_off_unless_it_says_true(world, switch, on):
    assert world(switch=switch).kill_switch(SWITCH).on is on


def test_exclusive_says_why_not_when_another_instance_writes(world):
    refusal = world(held_elsewhere=True).exclusive()
    assert refusal is not None and "another gpuwatch instance" in refusal


def test_a_follow_up_with_nothing_in_flight_does_nothing(world):
    assert world().follow_up(FollowUp(MigrationSettings())) == []
    assert world().follow_up(FollowUp(MigrationSettings(), {}, "kill switch off")) == []


def test_release_never_raises(world):
    actuator = world()
    actuator.exclusive()
    actuator.release()
    actuator.release()


def test_names_say_where_writes_go(world):
    assert world().name in {"kubernetes", "recorder"}
