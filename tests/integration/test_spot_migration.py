"""Checkpoint-and-migrate against the emulated API server; the test plays the operator."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from gpuwatch.actuators.base import FollowUp
from gpuwatch.actuators.drain import DrainOptions
from gpuwatch.actuators.kubernetes import KubernetesActuator
from gpuwatch.config.settings import MigrationSettings
from gpuwatch.model.actions import Action, ActionStatus
from gpuwatch.model.tenant import MIGRATION_FROM, MIGRATION_KEY, MIGRATION_PHASE, MIGRATION_STARTED
from tests.builders import FakeClock
from tests.integration.kube_emulator.resources import KUBEFLOW_RESOURCES

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
SPOT_TOLERATION = {
    "key": "china.alibabacloud.com/spot",
    "operator": "Exists",
    "effect": "NoSchedule",
}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
MIGRATION_FROM_ANNOTATION, MIGRATION_KEY_ANNOTATION = MIGRATION_FROM.key, MIGRATION_KEY.key


def follow(actuator, progress=None, refusal="", **settings):
    """One cycle's follow-up: spot_deadline 600 s, settle 60 s unless said otherwise."""
    policy = MigrationSettings.model_validate({"spot_deadline": 600, "settle": 60, **settings})
    return actuator.follow_up(FollowUp(policy, progress or {}, refusal))


def node(name: str, pool: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"pool": pool}},
        "spec": {},
        "status": {"capacity": {"nvidia.com/gpu": "8"}},
    }


def job(roles: tuple[str, ...] = ("Master", "Worker")) -> dict:
    """``llm/pretrain`` on the on-demand pool, allowed to move, one replica per role."""
    template = {
        "metadata": {"annotations": {"gpuwatch.io/checkpoint": "true"}},
        "spec": {
            "nodeSelector": {"pool": "gpu-training"},
            "tolerations": [GPU_TOLERATION],
            "containers": [{"name": "pytorch", "image": "gpuwatch-train:0.1.0"}],
        },
    }
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {
            "name": "pretrain",
            "namespace": "llm",
            "annotations": {"gpuwatch.io/migrate-to-spot": "true"},
        },
        "spec": {
            "pytorchReplicaSpecs": {
                role: {"replicas": 1, "restartPolicy": "ExitCode", "template": template}
                for role in roles
            }
        },
    }


def pod(
    name: str, node_name: str | None, phase: str = "Running", started: datetime = T0, **notes
) -> dict:
    """A pod of ``llm/pretrain``; ``notes``: its annotations."""
    owner = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "name": "pretrain",
        "uid": "u",
        "controller": True,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "llm",
            "labels": {"training.kubeflow.org/job-name": "pretrain"},
            "ownerReferences": [owner],
            **({"annotations": notes} if notes else {}),
        },
        "spec": {
            **({"nodeName": node_name} if node_name else {}),
            "containers": [{"name": "pytorch", "image": "gpuwatch-train:0.1.0"}],
        },
        "status": {"phase": phase, "startTime": started.isoformat()},
    }


ACTION = Action(
    kind="migrate_to_spot",
    target="PyTorchJob/llm/pretrain",
    status=ActionStatus.PLANNED,
    reason="",
    key="migrate_to_spot:PyTorchJob/llm/pretrain",
    dry_run=False,
    pool="gpu-spot",
    mechanism="PyTorchJob",
    details={"node_selector": {"pool": "gpu-spot"}, "tolerations": [SPOT_TOLERATION]},
)


@pytest.fixture
def cluster(kube_emulator):
    kube_emulator.install(*KUBEFLOW_RESOURCES)
    kube_emulator.add_all(
        [
            node("od-1", "gpu-training"),
            node("spot-1", "gpu-spot"),
            job(),
            pod("pretrain-master-0", "od-1"),
            pod("pretrain-worker-0", "od-1"),
        ]
    )
    clock = FakeClock(T0)
    actuator = KubernetesActuator(
        kube_emulator.kube_api(sleep=clock.sleep, monotonic=clock.monotonic, now=clock.wall),
        DrainOptions(eviction_deadline_s=60),
    )
    return kube_emulator, actuator, clock


def _job(emulator) -> dict:
    return emulator.get("kubeflow.org/v1", "PyTorchJob", "pretrain", "llm")


def test_migration_patches_evicts_and_is_confirmed_on_spot(cluster):
    emulator, actuator, clock = cluster
    done = actuator.apply(ACTION)
    assert done.status is ActionStatus.DONE, done.reason
    assert sorted(done.details["evicted"]) == ["llm/pretrain-master-0", "llm/pretrain-worker-0"]
    assert emulator.objects("v1", "Pod") == [] and not emulator.deletes("pods")
    for role in ("Master", "Worker"):
        spec = _job(emulator)["spec"]["pytorchReplicaSpecs"][role]["template"]["spec"]
        assert spec["nodeSelector"] == {"pool": "gpu-spot"}
        assert spec["tolerations"] == [GPU_TOLERATION, SPOT_TOLERATION]
    annotations = _job(emulator)["metadata"]["annotations"]
    assert annotations[MIGRATION_PHASE.key] == "moved"
    # Rerunning the same action does not patch the templates again and evicts nothing.
    again = actuator.apply(ACTION)
    assert again.status is ActionStatus.DONE and again.details["evicted"] == []
    patches = emulator.requests_where(verb="patch", plural="pytorchjobs")
    assert len([p for p in patches if "spec" in p.body]) == 1
    # The operator recreates the pods from the patched template, on spot; they resume.
    started = T0 + timedelta(seconds=35)
    emulator.add_all(
        [pod("pretrain-master-0", "spot-1", started=started),
         pod("pretrain-worker-0", "spot-1", started=started)]
    )  # fmt: skip
    clock.now += timedelta(seconds=60)
    # Running on spot for 25 s, short of the settle time: the way back is kept.
    assert follow(actuator) == []
    assert MIGRATION_FROM_ANNOTATION in _job(emulator)["metadata"]["annotations"]
    clock.now += timedelta(seconds=35)
    (confirmed,) = follow(actuator)
    assert confirmed.kind == "migrate_to_spot_confirmed"
    assert confirmed.details["running_after_s"] == 95
    assert MIGRATION_KEY_ANNOTATION not in (_job(emulator)["metadata"].get("annotations") or {})
    assert follow(actuator) == []


def test_spot_never_arrives_and_the_job_moves_back(cluster):
    emulator, actuator, clock = cluster
    actuator.apply(ACTION)
    emulator.add_all(
        [pod("pretrain-master-0", None, "Pending"), pod("pretrain-worker-0", None, "Pending")]
    )
    clock.now += timedelta(minutes=5)
    assert follow(actuator) == []  # still waiting
    clock.now += timedelta(minutes=6)
    (fallback,) = follow(actuator)
    assert fallback.kind == "migrate_to_spot_fallback"
    annotations = _job(emulator)["metadata"].get("annotations") or {}
    assert MIGRATION_FROM_ANNOTATION not in annotations
    for role in ("Master", "Worker"):
        spec = _job(emulator)["spec"]["pytorchReplicaSpecs"][role]["template"]["spec"]
        assert spec["nodeSelector"] == {"pool": "gpu-training"}
        assert spec["tolerations"] == [GPU_TOLERATION]
    assert emulator.objects("v1", "Pod") == []  # pending spot pods evicted, to be recreated
    events = emulator.events_for("pretrain", kind="PyTorchJob", namespace="llm")
    assert [e["reason"] for e in events] == ["MigrateToSpot", "MigrateToSpotFallback"]


def batch_job() -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "finetune",
            "namespace": "llm",
            "annotations": {"gpuwatch.io/migrate-to-spot": "true"},
        },
        "spec": {
            "suspend": False,
            "backoffLimit": 6,
            "template": {
                "metadata": {"labels": {"batch.kubernetes.io/job-name": "finetune"}},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"pool": "gpu-training"},
                    "containers": [{"name": "train", "image": "gpuwatch-train:0.1.0"}],
                },
            },
        },
        "status": {"startTime": "2026-11-24T01:00:00Z", "active": 1},
    }


def batch_pod(name: str, node_name: str | None, job_uid: str, phase: str = "Running") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "llm",
            "labels": {"batch.kubernetes.io/job-name": "finetune"},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": "finetune",
                    "uid": "j",
                    "controller": True,
                }
            ],
        },
        "spec": {
            **({"nodeName": node_name} if node_name else {}),
            "containers": [{"name": "train", "image": "gpuwatch-train:0.1.0"}],
        },
        "status": {"phase": phase, "startTime": T0.isoformat()},
    }


def test_batch_job_is_suspended_patched_and_resumed(kube_emulator):
    kube_emulator.add_all([node("od-1", "gpu-training"), node("spot-1", "gpu-spot")])
    uid = kube_emulator.add(batch_job())["metadata"]["uid"]
    kube_emulator.add(batch_pod("finetune-abcde", "od-1", uid))
    clock = FakeClock(T0)
    actuator = KubernetesActuator(kube_emulator.kube_api(now=clock.wall))
    action = Action(
        **{
            **ACTION.__dict__,
            "target": "Job/llm/finetune",
            "mechanism": "Job",
            "key": "migrate_to_spot:Job/llm/finetune",
        }
    )
    done = actuator.apply(action)
    assert done.status is ActionStatus.DONE, done.reason
    job = kube_emulator.get("batch/v1", "Job", "finetune", "llm")
    assert job["spec"]["suspend"] is False
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "gpu-spot"}
    assert job["spec"]["template"]["spec"]["tolerations"] == [SPOT_TOLERATION]
    suspends = [
        r.body["spec"].get("suspend")
        for r in kube_emulator.requests_where(verb="patch", plural="jobs")
        if "spec" in r.body
    ]
    assert [s for s in suspends if s is not None] == [True, False]
    # gpuwatch neither deletes nor evicts a batch Job's pods: suspension stops them (the
    # Job controller's work; the test plays it), resumption recreates them on spot.
    assert not kube_emulator.deletes("pods")
    assert not kube_emulator.requests_where(subresource="eviction")
    kube_emulator.remove("v1", "Pod", "finetune-abcde", "llm")
    kube_emulator.add(batch_pod("finetune-fghij", "spot-1", uid))
    clock.now += timedelta(seconds=40)
    (confirmed,) = follow(actuator, settle=30)
    assert (confirmed.kind, confirmed.target) == ("migrate_to_spot_confirmed", "Job/llm/finetune")


def test_confirmation_waits_until_training_passes_its_checkpoint(cluster):
    emulator, actuator, clock = cluster
    action = Action(
        **{
            **ACTION.__dict__,
            "details": {**ACTION.details, "step_at_signal": 130, "checkpoint_step": 125},
        }
    )
    assert actuator.apply(action).status is ActionStatus.DONE
    emulator.add_all([pod("pretrain-master-0", "spot-1"), pod("pretrain-worker-0", "spot-1")])
    clock.now += timedelta(seconds=60)
    target = "PyTorchJob/llm/pretrain"
    # Running on spot, but still loading the checkpoint: not confirmed yet.
    assert follow(actuator, {target: (125, 125)}) == []
    clock.now += timedelta(seconds=30)
    (confirmed,) = follow(actuator, {target: (140, 135)})
    assert confirmed.details["steps_lost"] == 5  # signalled at 130, resumed from 125
    assert confirmed.details["step_now"] == 140


def test_a_batch_job_stopped_after_suspension_is_resumed_not_repeated(kube_emulator):
    """Killed after the first write (suspended, the move recorded): the next cycle's
    follow-up patches the template and resumes the Job, once."""
    kube_emulator.add_all([node("od-1", "gpu-training"), node("spot-1", "gpu-spot")])
    job = batch_job()
    to = {"Job": {"nodeSelector": {"pool": "gpu-spot"}, "tolerations": [SPOT_TOLERATION]}}
    job["spec"]["suspend"] = True
    job["status"] = {}  # the Job controller clears startTime when it suspends a Job
    job["metadata"]["annotations"] |= {
        MIGRATION_KEY.key: "migrate_to_spot:Job/llm/finetune",
        MIGRATION_FROM.key: '{"Job": {"nodeSelector": {"pool": "gpu-training"}}}',
        "gpuwatch.io/migration-to": json.dumps(to),
        MIGRATION_STARTED.key: T0.isoformat(),
        MIGRATION_PHASE.key: "suspended",
    }
    kube_emulator.add(job)
    actuator = KubernetesActuator(kube_emulator.kube_api(now=FakeClock(T0).wall))
    (resumed,) = follow(actuator)
    assert (resumed.kind, resumed.status) == ("migrate_to_spot", ActionStatus.DONE)
    job = kube_emulator.get("batch/v1", "Job", "finetune", "llm")
    assert job["spec"]["suspend"] is False
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "gpu-spot"}
    assert job["metadata"]["annotations"][MIGRATION_PHASE.key] == "moved"
    assert follow(actuator) == []  # now waiting for spot, nothing written twice


def test_the_kill_switch_stops_the_follow_up_too(cluster):
    emulator, actuator, clock = cluster
    actuator.apply(ACTION)
    emulator.add_all([pod("pretrain-master-0", None, "Pending")])
    clock.now += timedelta(minutes=30)  # long past the deadline: a fallback is due
    before = len(emulator.writes())
    (refused,) = follow(actuator, refusal="kill switch gpuwatch/gpuwatch-actions/enabled is off")
    assert refused.status is ActionStatus.REFUSED and "kill switch" in refused.reason
    assert len(emulator.writes()) == before  # nothing patched, nothing evicted


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (MIGRATION_STARTED.key, "1e300"),
        (MIGRATION_STARTED.key, "yesterday"),
        (MIGRATION_FROM.key, "{not json"),
        ("gpuwatch.io/migration-steps", '{"checkpoint_step": "12"}'),
    ],
)
def test_a_migration_record_a_tenant_broke_is_left_alone_and_said(cluster, key, value):
    emulator, actuator, clock = cluster
    actuator.apply(ACTION)

    def broken(obj: dict) -> None:
        obj["metadata"]["annotations"][key] = value

    emulator.mutate("kubeflow.org/v1", "PyTorchJob", "pretrain", "llm", change=broken)
    clock.now += timedelta(minutes=30)
    before = len(emulator.writes())
    (failed,) = follow(actuator)
    assert failed.status is ActionStatus.FAILED and key in failed.reason
    assert len(emulator.writes()) == before


def test_pods_protected_from_eviction_are_not_moved(cluster):
    emulator, actuator, _ = cluster
    emulator.remove("v1", "Pod", "pretrain-worker-0", "llm")
    emulator.add(pod("pretrain-worker-0", "od-1", **{"karpenter.sh/do-not-disrupt": "true"}))
    refused = actuator.apply(ACTION)
    assert refused.status is ActionStatus.REFUSED and "do-not-disrupt" in refused.reason
    assert not emulator.requests_where(verb="patch", plural="pytorchjobs")
    assert not emulator.requests_where(subresource="eviction")
