"""Small builders for domain objects, so that unit tests state only what matters."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gpuwatch.analysis.attribution import APPROXIMATE, EXACT, NONE, GpuContext
from gpuwatch.analysis.pricing import load_price_book
from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.model.cluster import WHOLE_GPU_RESOURCE, Node
from gpuwatch.model.findings import Finding, GpuHolder, Role, Severity
from gpuwatch.model.metrics import (
    Aggregate,
    AggregateSpec,
    GpuDevice,
    PodRef,
    Signal,
    WindowStats,
)
from gpuwatch.notify.console import RecordingNotifier
from gpuwatch.pipeline import Components
from gpuwatch.sources.simulator import (
    SimulatedCluster,
    SimulatorClusterSource,
    SimulatorMetricsSource,
)
from gpuwatch.state.base import MemoryState

AT = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
SHIPPED_RULES = frozenset(
    {
        "gpu-idle",
        "gpu-near-oom",
        "gpu-unallocated",
        "gpu-overheat",
        "gpu-xid",
        "data-gap",
        "gpu-oom-forecast",
        "team-budget",
    }
)
"""The ids of the rules in ``rules/``: the demo fires each of them once."""
STEP_S = 60.0


def gpu_node(name: str = "node-a", gpus: int = 8, pool: str = "gpu-training") -> Node:
    return Node(
        name=name,
        labels={"pool": pool, "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        capacity={WHOLE_GPU_RESOURCE: float(gpus)},
    )


def device(index: int = 0, node: str = "node-a", pod: str | None = None) -> GpuDevice:
    return GpuDevice(
        uuid=f"GPU-{node}-{index}",
        index=index,
        node=node,
        model_name="NVIDIA A100-SXM4-80GB",
        pod=PodRef("team-a", pod) if pod else None,
    )


def context(
    dev: GpuDevice | None,
    *,
    allocated: bool = True,
    node: Node | None = None,
    workload: str | None = "PyTorchJob/team-a/train",
    recently_released: bool = False,
    approximate: bool = False,
) -> GpuContext:
    node = node or gpu_node(dev.node if dev else "node-a")
    holders = (GpuHolder("team-a", "train-worker-0", workload, "team-a", 1.0),) if allocated else ()
    attribution = (APPROXIMATE if approximate else EXACT) if allocated else NONE
    return GpuContext(
        node_name=node.name,
        device=dev,
        node=node,
        pool=node.labels.get("pool"),
        capacity_type="on-demand",
        model="NVIDIA-A100-SXM4-80GB",
        holders=holders,
        attribution=attribution,
        recently_released=recently_released,
    )


def stats(
    devices: Sequence[GpuDevice],
    values: Mapping[tuple[Signal, Aggregate, int], Sequence[float]],
    at: datetime = AT,
    step_s: float = STEP_S,
) -> WindowStats:
    """WindowStats from {(signal, aggregate, window_s): [per-device values]}."""
    arrays = {
        AggregateSpec(sig, agg, w): np.asarray(v, dtype=np.float64)
        for (sig, agg, w), v in values.items()
    }
    return WindowStats(at, step_s, tuple(devices), arrays)


def full_count(window_s: int, step_s: float = STEP_S) -> float:
    """Samples a fully covered window holds."""
    return window_s / step_s


def run_gpuwatch(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m gpuwatch ARGS`` as a user runs it, without the caller's GPUWATCH_*."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GPUWATCH_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gpuwatch", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def finding(
    gpu: int,
    node: str = "node-a",
    pool: str = "gpu-training",
    team: str = "team-a",
    since=AT,
    rule="gpu-idle",
    severity=Severity.WARNING,
    **kw,
) -> Finding:
    """An idle-GPU finding (or another rule's, by ``rule``/``severity``) on ``node``."""
    kw.setdefault("role", Role.IDLE if rule == "gpu-idle" else None)
    return Finding(
        rule=rule,
        severity=severity,
        gpu_uuid=f"GPU-{node}-{gpu}",
        node=node,
        pool=pool,
        value=0.02,
        threshold=0.1,
        window_s=1800,
        since=since,
        message="idle",
        gpu_index=gpu,
        model="NVIDIA A100-SXM4-80GB",
        team=team,
        workload=f"PyTorchJob/{team}/job",
        unit="ratio",
        **kw,
    )


def grants(rules: Sequence[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    """RBAC rules as (API group, resource, verb) triples, to compare rule sets."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


class FakeClock:
    """Time that moves only when the code under test sleeps (or a test moves it): the
    monotonic seconds, the sleeps asked for, and the wall clock ``now``."""

    def __init__(self, now: datetime = AT) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []
        self.now = now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return self.now

    def kube(self) -> dict[str, Any]:
        """The keyword arguments that put a ``KubeApi`` on this clock."""
        return {"sleep": self.sleep, "monotonic": self.monotonic, "now": self.wall}


def simulated_components(cluster: SimulatedCluster, **replacing: Any) -> Components:
    """A cycle's parts over a simulated cluster: its metrics and objects, the shipped
    rules and price book, state in memory, messages recorded; ``replacing`` any of them."""
    defaults: dict[str, Any] = {
        "metrics": SimulatorMetricsSource(cluster),
        "cluster": SimulatorClusterSource(cluster),
        "rules": tuple(load_rules()),
        "state": MemoryState(),
        "notifier": RecordingNotifier(),
        "price_book": load_price_book(),
    }
    return Components(**{**defaults, **replacing})


class RecordingGenerator:
    """A simulated cluster's sample generator that records the sample times of every
    generation (``record(cluster)`` puts it in place): how often each sample is made."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator
        self.calls: list[np.ndarray] = []

    @classmethod
    def record(cls, cluster: SimulatedCluster) -> RecordingGenerator:
        recording = cls(cluster.generator)
        cluster.generator = recording
        return recording

    def __getattr__(self, name: str) -> Any:
        return getattr(self.generator, name)

    def generate(self, times: np.ndarray, history_start_s: int) -> Any:
        self.calls.append(np.array(times, copy=True))
        return self.generator.generate(times, history_start_s)

    def times(self) -> np.ndarray:
        """Every sample time generated, once per generation."""
        return np.concatenate(self.calls) if self.calls else np.empty(0, dtype=np.int64)
