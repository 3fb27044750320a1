"""A PyTorchJob moves to spot while the reference training job really runs.

The emulated API server holds the cluster; the test plays the kubelet (a real SIGTERM to
the real training process when its pod is evicted) and the operator (the pod recreated on
the spot node, a new process started with the same flags and ``--resume auto``). The job
must lose nothing beyond its SIGTERM checkpoint: it ends bit-identical to a run that was
never interrupted.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

# torch is part of the test environment (make test installs the train extra): a missing
# torch fails here loudly rather than skipping the end-to-end migration.
from gpuwatch.actuators.drain import DrainOptions
from gpuwatch.actuators.kubernetes import KubernetesActuator
from gpuwatch.model.actions import ActionStatus
from gpuwatch.model.tenant import MIGRATION_KEY
from tests.integration.kube_emulator.resources import KUBEFLOW_RESOURCES
from tests.integration.test_spot_migration import (
    ACTION,
    GPU_TOLERATION,
    SPOT_TOLERATION,
    follow,
    job,
    node,
    pod,
)
from tests.workload.conftest import (
    STEP_LINE,
    TINY,
    Proc,
    Zygote,
    assert_same_state,
    checkpoint_at,
)

pytestmark = [pytest.mark.integration, pytest.mark.workload]

STEPS = 300  # a second or two on one CPU core with the tiny model
EVERY = 25  # periodic checkpoints, so that one is on disk before the migration starts
WORKER = "pretrain-worker-0"


def _argv(output: Path) -> list[str]:
    return [
        *TINY,
        f"--output={output}",
        f"--steps={STEPS}",
        "--seed=7",
        f"--checkpoint-every-steps={EVERY}",
        "--resume=auto",
    ]


def _latest_step(output: Path) -> int:
    return int((output / "checkpoint_latest.pt").readlink().name.split("_")[2].split(".")[0])


def _last_logged_step(proc: Proc) -> int:
    steps = STEP_LINE.findall(proc.text())
    return int(steps[-1]) if steps else 0


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    yield z
    z.close()


@pytest.fixture(scope="module")
def reference(zygote: Zygote, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The final state of the same job run once, never interrupted."""
    out = tmp_path_factory.mktemp("reference")
    run = zygote.spawn(_argv(out / "ckpt"), out / "run.log", threads=1)
    assert run.wait() == 0, run.text()
    return checkpoint_at(out / "ckpt", STEPS)


def test_pytorchjob_migrates_to_spot_and_resumes_bit_identical(
    zygote: Zygote, reference: dict, kube_emulator, tmp_path: Path
) -> None:
    emulator = kube_emulator
    emulator.install(*KUBEFLOW_RESOURCES)
    emulator.add_all(
        [
            node("od-1", "gpu-training"),
            node("spot-1", "gpu-spot"),
            job(roles=("Worker",)),
            pod(WORKER, "od-1"),
        ]
    )
    out = tmp_path / "ckpt"  # the job's shared volume: both pods see it
    # Made first: building the client takes most of a second, steps take milliseconds.
    actuator = KubernetesActuator(emulator.kube_api(), DrainOptions(eviction_deadline_s=10))

    # The pod's container: a real training process, past its first periodic checkpoint.
    first = zygote.spawn(_argv(out), tmp_path / "on-demand.log", threads=1)
    durable = first.wait_for(r"checkpoint_step_(\d+)\.pt durable")
    first_checkpoint = int(durable.group(1))
    assert first_checkpoint == EVERY

    # The kubelet: when the API server accepts the pod's eviction, SIGTERM the container.
    signalled: dict[str, int] = {}
    signalled_once = threading.Event()

    def kubelet(request, answer):
        if (
            request.subresource == "eviction"
            and request.name == WORKER
            and answer.status < 300
            and not signalled_once.is_set()
        ):
            signalled["step"] = _last_logged_step(first)
            first.kill(signal.SIGTERM)
            signalled_once.set()

    emulator.after_request = kubelet
    done = actuator.apply(ACTION)
    assert done.status is ActionStatus.DONE, done.reason
    assert done.details["evicted"] == [f"llm/{WORKER}"]
    assert signalled_once.is_set(), "the eviction never reached the emulator"
    assert emulator.objects("v1", "Pod", "llm") == [] and not emulator.deletes("pods")
    spec = emulator.get("kubeflow.org/v1", "PyTorchJob", "pretrain", "llm")["spec"]
    template = spec["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    assert template["nodeSelector"] == {"pool": "gpu-spot"}
    assert template["tolerations"] == [GPU_TOLERATION, SPOT_TOLERATION]

    # The container checkpoints at the next step boundary and exits 143.
    assert first.wait() == 143, first.text()
    stopped = _latest_step(out)
    assert first_checkpoint <= signalled["step"] <= stopped < STEPS, (signalled, stopped)
    manifest = json.loads((out / f"checkpoint_step_{stopped:09d}.json").read_text())
    assert "SIGTERM" in manifest["reason"], manifest
    assert f"SIGTERM: checkpoint of step {stopped} on disk" in first.text()

    # The operator: the pod recreated from the patched template, on the spot node.
    emulator.add(pod(WORKER, "spot-1"))
    second = zygote.spawn(_argv(out), tmp_path / "spot.log", threads=1)
    assert second.wait() == 0, second.text()
    resumed_from = out / f"checkpoint_step_{stopped:09d}.pt"
    assert f"resumed from {resumed_from}: step {stopped}," in second.text()
    assert _latest_step(out) == STEPS

    # The next cycle confirms the move and clears the migration's bookkeeping.
    (confirmed,) = follow(actuator)
    assert confirmed.kind == "migrate_to_spot_confirmed", confirmed
    assert confirmed.status is ActionStatus.DONE
    moved = emulator.get("kubeflow.org/v1", "PyTorchJob", "pretrain", "llm")
    assert MIGRATION_KEY.key not in (moved["metadata"].get("annotations") or {})
    events = emulator.events_for("pretrain", kind="PyTorchJob", namespace="llm")
    assert [e["reason"] for e in events] == ["MigrateToSpot", "MigrateToSpotConfirmed"]

    # Nothing lost: the same bits as the run that never stopped.
    assert_same_state(checkpoint_at(out, STEPS), reference)
