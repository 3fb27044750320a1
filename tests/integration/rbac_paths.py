"""Writing cycles against the emulated API server, one fresh world per path of the actions.

A path is what gpuwatch really does to a cluster in one configuration: each cycle runs
the real ``gather`` (the cluster source, the state and silences ConfigMaps, the kill
switch) and the real ``effect`` (the actions Lease, the follow-up of migrations, the
actuator, its Events, the state saved), with only the planning replaced by the action
the path is about; the Lease is released when the cycle ends, as ``once`` does. What a
path asks the API server for is read back from the emulator's records, never listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gpuwatch.actuators.drain import DrainOptions
from gpuwatch.actuators.kubernetes import KubernetesActuator
from gpuwatch.actuators.rbac import Grant
from gpuwatch.analysis.pricing import load_price_book
from gpuwatch.config.settings import ActionsSettings, Settings, SimulatorSettings
from gpuwatch.kube.lease import Lease
from gpuwatch.model.actions import Action, ActionStatus
from gpuwatch.model.result import CycleResult
from gpuwatch.notify.console import RecordingNotifier
from gpuwatch.pipeline import Analysis, Components, effect, gather
from gpuwatch.sources.kubernetes import KubernetesClusterSource
from gpuwatch.sources.silences import SILENCES_KEY, ConfigMapSilences
from gpuwatch.sources.simulator import SimulatedCluster, SimulatorMetricsSource
from gpuwatch.state.configmap import ConfigMapState
from tests.builders import FakeClock
from tests.integration.kube_emulator import (
    CLUSTER_API_RESOURCES,
    KARPENTER_RESOURCES,
    KUBEFLOW_RESOURCES,
    KubeEmulator,
)

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
HOLDER = "gpuwatch-cycle-29111230-x7k2p"  # POD_NAME of a cycle's pod
CAPI = "cluster.x-k8s.io/v1beta1"
SPOT_TOLERATION = {"key": "spot", "operator": "Exists", "effect": "NoSchedule"}


@dataclass
class World:
    """One emulated cluster, and gpuwatch's adapters on it as the wiring builds them."""

    emulator: KubeEmulator
    settings: Settings
    clock: FakeClock
    lease: Lease
    components: Components

    def cycle(
        self, *actions: Action, progress: Mapping[str, tuple[int, int]] | None = None
    ) -> CycleResult:
        """One writing cycle whose planning came up with ``actions``."""
        at = self.clock.now
        gathered = gather(self.components, self.settings, at)
        assert not gathered.errors, gathered.errors
        assert gathered.writable and gathered.kill_switch_on, "the kill switch reads off"
        analysis = Analysis(at, gathered.source, actions=actions, progress=progress or {})
        result = effect(gathered, analysis, self.components, self.settings)
        self.lease.release()
        return result

    def later(self, seconds: float) -> None:
        self.clock.now += timedelta(seconds=seconds)


Run = Callable[[World], None]
"""One path: arranges its world, runs its cycles, asserts they did what they should."""


def build(emulator: KubeEmulator, settings: Settings) -> World:
    """gpuwatch writing with ``settings``; its kill switch on, no silences."""
    emulator.install(*CLUSTER_API_RESOURCES, *KARPENTER_RESOURCES, *KUBEFLOW_RESOURCES)
    clock = FakeClock(T0)
    api = emulator.kube_api(**clock.kube())
    actions = settings.actions
    lease_namespace, _, lease_name = actions.lease.partition("/")
    lease = Lease(api, lease_namespace, lease_name, HOLDER, actions.lease_duration_s)
    switch_namespace, switch_name, switch_key = actions.kill_switch.split("/")
    silences = settings.notify.silences_configmap
    assert silences, "the deployed settings name a silences ConfigMap"
    emulator.add_all(
        [
            _config_map(switch_namespace, switch_name, {switch_key: "true"}),
            _config_map(*silences.split("/"), {SILENCES_KEY: "[]"}),
        ]
    )
    state_namespace, _, state_name = settings.state.configmap.partition("/")
    simulated = SimulatedCluster(SimulatorSettings(gpus=8, days=1), end=T0 + timedelta(hours=1))
    components = Components(
        metrics=SimulatorMetricsSource(simulated),
        cluster=KubernetesClusterSource(api),
        rules=(),
        state=ConfigMapState(api, state_namespace, state_name),
        notifier=RecordingNotifier(),
        price_book=load_price_book(),
        actuator=KubernetesActuator(api, DrainOptions(actions.eviction_deadline_s), lease=lease),
        silences=ConfigMapSilences(api, silences),
        clock=clock.wall,
    )
    return World(emulator, settings, clock, lease, components)


def used(emulator: KubeEmulator, own_namespace: str) -> set[Grant]:
    """What the recorded requests needed granted: in ``own_namespace`` by a Role there,
    anywhere else (another namespace, or a cluster-scoped object) by a ClusterRole."""
    return {
        Grant(
            r.group,
            f"{r.plural}/{r.subresource}" if r.subresource else r.plural,
            r.verb,
            r.namespace if r.namespace == own_namespace else None,
        )
        for r in emulator.requests
        if r.verb
    }


# ---------------------------------------------------------------- objects


def _config_map(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def _node(name: str, pool: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"pool": pool}},
        "spec": {},
        "status": {"capacity": {"nvidia.com/gpu": "8"}},
    }


def _pod(namespace: str, name: str, node: str | None, owner: dict[str, Any]) -> dict[str, Any]:
    labels = {
        "Job": {"batch.kubernetes.io/job-name": owner["name"]},
        "PyTorchJob": {"training.kubeflow.org/job-name": owner["name"]},
    }.get(owner["kind"], {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [{**owner, "uid": "u", "controller": True}],
        },
        "spec": {**({"nodeName": node} if node else {}), "containers": [{"name": "c"}]},
        "status": {"phase": "Running" if node else "Pending"},
    }


def _owner(api_version: str, kind: str, name: str) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": name}


# ---------------------------------------------------------------- scale-down


def _drain(mechanism: str) -> Action:
    return Action(
        kind="scale_down_node",
        target="Node/gpu-1",
        status=ActionStatus.PLANNED,
        reason="8 of 8 GPUs unallocated",
        key="scale_down_node:gpu-1",
        dry_run=False,
        pool="gpu-training",
        mechanism=mechanism,
        details={"evict": ["research/nb-0"], "machine_deployment": "capi/gpu-md"},
    )


def _idle_node(world: World, mechanism: str) -> None:
    notebook = _owner("apps/v1", "StatefulSet", "nb")
    world.emulator.add_all(
        [_node("gpu-1", "gpu-training"), _pod("research", "nb-0", "gpu-1", notebook)]
    )
    if mechanism == "cluster-api":
        machine_meta = {
            "name": "gpu-md-abc12",
            "namespace": "capi",
            "labels": {"cluster.x-k8s.io/deployment-name": "gpu-md"},
        }
        world.emulator.add_all(
            [
                {
                    "apiVersion": CAPI,
                    "kind": "Machine",
                    "metadata": machine_meta,
                    "spec": {"clusterName": "prod"},
                    "status": {"nodeRef": {"kind": "Node", "name": "gpu-1"}},
                },
                {
                    "apiVersion": CAPI,
                    "kind": "MachineDeployment",
                    "metadata": {"name": "gpu-md", "namespace": "capi"},
                    "spec": {"clusterName": "prod", "replicas": 3},
                },
            ]
        )
    if mechanism == "karpenter":
        world.emulator.add(
            {
                "apiVersion": "karpenter.sh/v1",
                "kind": "NodeClaim",
                "metadata": {"name": "gpu-claim-x"},
                "spec": {},
                "status": {"nodeName": "gpu-1"},
            }
        )


def scale_down(mechanism: str) -> Run:
    """The node drained and removed by ``mechanism``; the next cycle has nothing to do."""

    def run(world: World) -> None:
        _idle_node(world, mechanism)
        (done,) = world.cycle(_drain(mechanism)).actions
        assert done.status is ActionStatus.DONE, done.reason
        world.later(300)
        assert world.cycle().actions == ()

    run.__name__ = f"scale_down_{mechanism}"
    return run


def _schedulable(world: World) -> bool:
    node = world.emulator.get("v1", "Node", "gpu-1")
    return node is not None and not (node.get("spec") or {}).get("unschedulable")


def drain_rolled_back(world: World) -> None:
    """A disruption budget never lets the pod go: the node is uncordoned."""
    _idle_node(world, "cordon-drain")
    world.emulator.refuse_evictions(10_000, pod="nb-0")
    (failed,) = world.cycle(_drain("cordon-drain")).actions
    assert failed.status is ActionStatus.FAILED and _schedulable(world), failed.reason


def cluster_api_rolled_back(world: World) -> None:
    """Scaling the MachineDeployment fails: the Machine is unmarked, the node uncordoned."""
    _idle_node(world, "cluster-api")
    world.emulator.fail_scale(CAPI, "MachineDeployment", "gpu-md", "capi", times=100)
    (failed,) = world.cycle(_drain("cluster-api")).actions
    assert failed.status is ActionStatus.FAILED and _schedulable(world), failed.reason
    machine = world.emulator.get(CAPI, "Machine", "gpu-md-abc12", "capi")
    assert machine is not None
    assert "cluster.x-k8s.io/delete-machine" not in (machine["metadata"].get("annotations") or {})


# ---------------------------------------------------------------- migration


def _pytorchjob() -> dict[str, Any]:
    template = {"spec": {"nodeSelector": {"pool": "gpu-training"}, "containers": [{"name": "c"}]}}
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "pretrain", "namespace": "llm"},
        "spec": {
            "pytorchReplicaSpecs": {
                role: {"replicas": 1, "template": template} for role in ("Master", "Worker")
            }
        },
    }


def _batch_job() -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "finetune", "namespace": "llm"},
        "spec": {
            "suspend": False,
            "template": {
                "metadata": {"labels": {"batch.kubernetes.io/job-name": "finetune"}},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"pool": "gpu-training"},
                    "containers": [{"name": "c"}],
                },
            },
        },
        "status": {"startTime": "2026-11-24T01:00:00Z", "active": 1},
    }


JOBS = {
    "PyTorchJob": (_pytorchjob, ("pretrain-master-0", "pretrain-worker-0")),
    "Job": (_batch_job, ("finetune-abcde",)),
}


def _migrate(kind: str, name: str) -> Action:
    return Action(
        kind="migrate_to_spot",
        target=f"{kind}/llm/{name}",
        status=ActionStatus.PLANNED,
        reason="",
        key=f"migrate_to_spot:{kind}/llm/{name}",
        dry_run=False,
        pool="gpu-spot",
        mechanism=kind,
        details={
            "node_selector": {"pool": "gpu-spot"},
            "tolerations": [SPOT_TOLERATION],
            "step_at_signal": 130,
            "checkpoint_step": 125,
        },
    )


def _job_pods(kind: str, node: str | None) -> Iterable[dict[str, Any]]:
    make, pods = JOBS[kind]
    job = make()
    owner = _owner(job["apiVersion"], kind, job["metadata"]["name"])
    return [_pod("llm", pod, node, owner) for pod in pods]


def _moved(world: World, kind: str) -> Action:
    """The job on on-demand nodes, moved to spot by one cycle."""
    make, pods = JOBS[kind]
    job = make()
    world.emulator.add_all([_node("od-1", "gpu-training"), _node("spot-1", "gpu-spot"), job])
    world.emulator.add_all(_job_pods(kind, "od-1"))
    (moved,) = world.cycle(_migrate(kind, job["metadata"]["name"])).actions
    assert moved.status is ActionStatus.DONE, moved.reason
    for pod in pods:  # gone: evicted, or stopped by the suspended Job's controller
        world.emulator.remove("v1", "Pod", pod, "llm")
    return moved


def migration_confirmed(kind: str) -> Run:
    """The job's pods come back on spot and train past their checkpoint: confirmed."""

    def run(world: World) -> None:
        moved = _moved(world, kind)
        world.emulator.add_all(_job_pods(kind, "spot-1"))
        world.later(95)
        result = world.cycle(progress={moved.target: (140, 135)})
        kinds = [a.kind for a in result.actions]
        assert kinds == ["migrate_to_spot_confirmed"], [(a.kind, a.reason) for a in result.actions]

    run.__name__ = f"migration_confirmed_{kind}"
    return run


def migration_falls_back(world: World) -> None:
    """Spot capacity never comes: the job is moved back to on-demand."""
    _moved(world, "PyTorchJob")
    world.emulator.add_all(_job_pods("PyTorchJob", None))
    world.later(world.settings.actions.migration.spot_deadline_s + 60)
    result = world.cycle()
    kinds = [a.kind for a in result.actions]
    assert kinds == ["migrate_to_spot_fallback"], [(a.kind, a.reason) for a in result.actions]


def writing(settings: Settings, actions: dict[str, Any]) -> Settings:
    """``settings`` with writes on and these ``actions`` settings (validated)."""
    merged = settings.actions.model_dump(by_alias=True) | actions
    return settings.model_copy(
        update={"dry_run": False, "actions": ActionsSettings.model_validate(merged)}
    )
