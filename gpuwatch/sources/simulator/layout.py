"""The simulated cluster's nodes, pods, owners and GPUs, laid out in the
common four-pool design of AI platforms on Kubernetes (training, inference, spot, CPU).

One *block* is 64 GPUs holding every scenario once; ``--gpus N`` repeats the block
(names of copies after the first carry a ``-<block>`` suffix) and keeps whole nodes
until N GPUs are reached. Per block:

| pool | nodes | workload | behaviour | role of the rule it triggers |
|---|---|---|---|---|
| gpu-training (A100-80GB, on-demand) | train-a100-0,1 | PyTorchJob llm/llm-pretrain, 2x8 GPUs, checkpointing | busy | none |
| | train-a100-2 | PyTorchJob vision/detector-train, 4 GPUs, no checkpoints | memory creeps towards OOM, resets every 8 h | near_oom |
| | train-a100-2 | Job vision/nightly-eval (from a CronJob), 2 GPUs | hung in a collective: 0 % | idle |
| | train-a100-2 | PyTorchJob vision/segmenter-finetune, 2 GPUs, no checkpoints | memory grows in steps of 5.5 % every 30 min (a curriculum raising the resolution), OOMs every 4 h at hh:50 | oom_forecast (at 02:00: 91 %, 95 % predicted in ~25 min, reached at 02:20), near_oom (hh:20-hh:50) |
| | train-a100-3 | nobody (6 GPUs) | unallocated | unallocated |
| | train-a100-3 | Notebooks research/alice and research/bob, 1 GPU each, opted in to reclamation | busy 09-19 UTC, idle overnight | idle (at night); a planned scale-down of the node |
| gpu-inference (A10) | infer-a10-0 | Deployment serving/llm-chat (vLLM), 4 replicas | daily traffic cycle, 90 % memory preallocated | none |
| | infer-a10-1 | Deployment serving/rerank (Triton), 2 replicas | light traffic (p95 15 %, 30 % memory): each replica holds a whole A10 it could share; GPU 1 reports XID 94 at 01:52, 07:52, 13:52, 19:52 | xid, idle (at night) |
| | infer-a10-1 | Deployment serving/code-assist (vLLM), 1 replica; 1 GPU free; the node's exporter is down 01:40-01:50 | daily cycle | unallocated, data_gap (rerank still judged idle on the 67 % with data) |
| gpu-inference (T4, cGPU shared) | infer-t4-0 | Deployments serving/embedding (4 x 6 GiB) and serving/ocr (4 x 4 GiB), two pods a GPU | shared GPUs, low use | none |
| | infer-t4-1 | Deployment serving/asr (2 x 8 GiB); 2 GPUs free | GPU 0 runs hot (88 C+) | overheat, unallocated |
| gpu-spot (A100-40GB, spot taint) | spot-a100-0 | PyTorchJob llm/sft-spot, 8 GPUs, checkpointing | busy | none |
| | spot-a100-1 | PyTorchJob research/hparam-sweep, 8 GPUs | nearly idle, exporter down 01:38-02:03 | data_gap (not idle: too little data) |
| | (none) | PyTorchJob research/big-sweep, 8 GPUs | Pending: no capacity | (blocks scale-down) |
| cpu | cpu-0, cpu-1 | Deployment platform/data-prep | no GPUs | none |

Times are UTC and repeat daily; ``SHOWCASE_AT`` (02:00) is when every rule fires at once.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum

from gpuwatch.model.cluster import (
    CGPU_COUNT_RESOURCE,
    CGPU_INDEX_ANNOTATION,
    CGPU_MEMORY_RESOURCE,
    WHOLE_GPU_RESOURCE,
    Controller,
    Namespace,
    Node,
    OwnerRef,
    Pod,
    Taint,
)
from gpuwatch.model.metrics import GpuDevice, PodRef

SHOWCASE_AT = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
BLOCK_GPUS = 64
CHECKPOINT_ANNOTATION = "gpuwatch.io/checkpoint"
CHECKPOINT_INTERVAL_ANNOTATION = "gpuwatch.io/checkpoint-interval"
MODEL_PARAMS_ANNOTATION = "gpuwatch.io/model-params"
RECLAIMABLE_ANNOTATION = "gpuwatch.io/reclaimable"
MIGRATE_ANNOTATION = "gpuwatch.io/migrate-to-spot"
LAST_CHECKPOINT_ANNOTATION = "gpuwatch.io/last-checkpoint"
TRAINING_IMAGE = "registry/llm-train:2.4"
NOTEBOOK_IMAGE = "kubeflownotebookswg/jupyter-pytorch-cuda:v1.9.0"
_UUID_NAMESPACE = uuid.UUID("6f1c2a52-7d0e-4c39-9a43-1f2b1b0d6c11")


class Behaviour(IntEnum):
    """How a simulated GPU's signals move over time (see ``signals.py``)."""

    TRAIN = 0
    CREEP = 1
    STUCK = 2
    NOTEBOOK = 3
    INFERENCE = 4
    SHARED = 5
    UNALLOCATED = 6
    SWEEP = 7
    LIGHT = 8
    STEPUP = 9


@dataclass(frozen=True)
class GpuModel:
    dcgm_name: str  # the exporter's modelName label
    product_label: str  # GPU feature discovery's nvidia.com/gpu.product
    fb_total_mib: float
    fb_reserved_mib: float
    idle_w: float
    max_w: float
    profiling: bool  # whether DCGM_FI_PROF_* metrics are collected


A100_80 = GpuModel("NVIDIA A100-SXM4-80GB", "NVIDIA-A100-SXM4-80GB", 81920, 625, 62, 400, True)
A100_40 = GpuModel("NVIDIA A100-SXM4-40GB", "NVIDIA-A100-SXM4-40GB", 40960, 586, 55, 400, True)
A10 = GpuModel("NVIDIA A10", "NVIDIA-A10", 24576, 548, 18, 150, True)
# Profiling metrics disabled on the T4s, as on many fleets: util falls back to GPU_UTIL.
T4 = GpuModel("Tesla T4", "Tesla-T4", 15360, 255, 10, 70, False)


@dataclass(frozen=True)
class SimGpu:
    device: GpuDevice
    gpu_model: GpuModel
    behaviour: Behaviour
    hot: bool = False
    xid_code: int = 0
    gaps: tuple[tuple[int, int], ...] = ()
    """Daily exporter gaps as (start second of day, duration seconds)."""
    mem_share: float = 0.0  # cGPU: memory share in use by the pods sharing it


@dataclass
class Layout:
    nodes: list[Node] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    controllers: list[Controller] = field(default_factory=list)
    gpus: list[SimGpu] = field(default_factory=list)
    namespaces: list[Namespace] = field(default_factory=list)


# Namespaces carry a `team` label, for clusters that set `attribution.team_label: team`.
TEAMS = {
    "llm": "foundation-models",
    "vision": "perception",
    "research": "research",
    "serving": "inference-platform",
    "platform": "ml-platform",
}


def build_layout(gpus: int, history_start: datetime, history_end: datetime | None = None) -> Layout:
    """The layout for at least ``gpus`` GPUs (whole nodes), deterministic in its inputs."""
    layout = Layout()
    blocks = math.ceil(gpus / BLOCK_GPUS)
    for block in range(blocks):
        remaining = gpus - block * BLOCK_GPUS
        _Block(layout, block, remaining, history_start, history_end or history_start).build()
    layout.namespaces = [
        Namespace(ns, {"kubernetes.io/metadata.name": ns, "team": team})
        for ns, team in TEAMS.items()
    ]
    return layout


def gpu_uuid(node: str, index: int) -> str:
    return f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{node}/{index}')}"


class _Block:
    def __init__(
        self,
        layout: Layout,
        block: int,
        budget: int,
        history_start: datetime,
        history_end: datetime,
    ) -> None:
        self.history_end = history_end
        self.layout = layout
        self.b = block
        self.s = "" if block == 0 else f"-{block}"
        self.budget = budget  # GPUs this block may still add (whole nodes)
        self.started = history_start - timedelta(days=1)
        self.nodes: dict[str, Node] = {}
        self.images: dict[str, str] = {}  # owner name -> its pods' image

    # -- nodes ---------------------------------------------------------------------------
    def _node(
        self,
        base: str,
        i: int,
        pool: str,
        model: GpuModel | None,
        count: int,
        instance: str,
        spot: bool = False,
        cgpu: bool = False,
    ) -> str | None:
        if count and self.budget <= 0:
            return None
        name = f"{base}-{self.b * 2 + i if base != 'train-a100' else self.b * 4 + i}"
        labels = {
            "kubernetes.io/hostname": name,
            "node.kubernetes.io/instance-type": instance,
            "topology.kubernetes.io/zone": "cn-hangzhou-h",
            "pool": pool,
        }
        capacity: dict[str, float] = {"cpu": 96.0, "memory": 768.0 * 2**30}
        taints: list[Taint] = []
        if model is not None:
            labels["nvidia.com/gpu.product"] = model.product_label
            labels["nvidia.com/gpu.count"] = str(count)
            taints.append(Taint("nvidia.com/gpu", "", "NoSchedule"))
            if cgpu:
                labels["ack.node.gpu.schedule"] = "cgpu"
                gib = int(model.fb_total_mib / 1024)
                capacity[CGPU_MEMORY_RESOURCE] = float(gib * count)
                capacity[CGPU_COUNT_RESOURCE] = float(count)
            else:
                capacity[WHOLE_GPU_RESOURCE] = float(count)
        if spot:
            taints.append(Taint("china.alibabacloud.com/spot", "true", "NoSchedule"))
        node = Node(name, labels, tuple(taints), capacity, False, self.started)
        self.layout.nodes.append(node)
        self.nodes[name] = node
        self.budget -= count
        return name

    def _gpu(
        self,
        node: str | None,
        index: int,
        model: GpuModel,
        behaviour: Behaviour,
        pod: Pod | None = None,
        **extra: object,
    ) -> None:
        if node is None:
            return
        labelled = pod is not None and WHOLE_GPU_RESOURCE in pod.requests
        device = GpuDevice(
            uuid=gpu_uuid(node, index),
            index=index,
            node=node,
            model_name=model.dcgm_name,
            pci_bus_id=f"00000000:{0x10 + index * 0x10:02X}:00.0",
            pod=PodRef(pod.namespace, pod.name) if labelled and pod else None,
            container=("main" if labelled else None),
        )
        self.layout.gpus.append(SimGpu(device, model, behaviour, **extra))  # type: ignore[arg-type]

    # -- owners and pods -----------------------------------------------------------------
    def _controller(
        self,
        kind: str,
        ns: str,
        name: str,
        owner: OwnerRef | None = None,
        annotations: dict[str, str] | None = None,
    ) -> OwnerRef:
        self.layout.controllers.append(
            Controller(kind, ns, name, owner, {"app": name}, annotations or {})
        )
        return OwnerRef(kind, name)

    def _pod(
        self,
        ns: str,
        name: str,
        node: str | None,
        requests: dict[str, float],
        owner: OwnerRef | None,
        phase: str = "Running",
        annotations: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        node_selector: dict[str, str] | None = None,
    ) -> Pod | None:
        if node is None and phase == "Running":
            return None
        image = self.images.get(owner.name if owner else "", TRAINING_IMAGE)
        pod = Pod(
            namespace=ns,
            name=name,
            node_name=node,
            phase=phase,
            requests=requests,
            labels={"app": name.rsplit("-", 1)[0], **(labels or {})},
            annotations=annotations or {},
            owner=owner,
            uid=str(uuid.uuid5(_UUID_NAMESPACE, f"pod/{ns}/{name}")),
            started_at=self.started if phase == "Running" else None,
            images=(image,),
            node_selector=node_selector or {},
        )
        self.layout.pods.append(pod)
        return pod

    def _deployment(
        self, ns: str, name: str, image: str, annotations: dict[str, str] | None = None
    ) -> OwnerRef:
        deploy = self._controller("Deployment", ns, name, annotations=annotations)
        rs_hash = uuid.uuid5(_UUID_NAMESPACE, f"rs/{ns}/{name}").hex[:9]
        replica_set = self._controller("ReplicaSet", ns, f"{name}-{rs_hash}", deploy)
        self.images[replica_set.name] = image
        return replica_set

    def _pytorchjob(self, ns: str, name: str, checkpoint: bool) -> OwnerRef:
        ann = {CHECKPOINT_ANNOTATION: "true"} if checkpoint else {}
        return self._controller("PyTorchJob", ns, name, annotations=ann)

    def build(self) -> None:
        s = self.s
        gpu = {WHOLE_GPU_RESOURCE: 1.0}
        eight = {WHOLE_GPU_RESOURCE: 8.0}
        job_labels = lambda job: {"training.kubeflow.org/job-name": job}  # noqa: E731

        # gpu-training: four 8x A100-80GB on-demand nodes.
        train = [
            self._node("train-a100", i, "gpu-training", A100_80, 8, "ecs.gn7e-c16g1.32xlarge")
            for i in range(4)
        ]
        job = self._pytorchjob("llm", f"llm-pretrain{s}", checkpoint=True)
        for worker in range(2):
            pod = self._pod(
                "llm",
                f"llm-pretrain{s}-worker-{worker}",
                train[worker],
                eight,
                job,
                annotations={
                    CHECKPOINT_ANNOTATION: "true",
                    CHECKPOINT_INTERVAL_ANNOTATION: "300",
                    MIGRATE_ANNOTATION: "true",
                    # The reference job's checkpoint every 5 minutes, last one 3 min ago.
                    LAST_CHECKPOINT_ANNOTATION: str(
                        int((self.history_end - timedelta(minutes=3)).timestamp())
                    ),
                },
                labels=job_labels(f"llm-pretrain{s}"),
            )
            for i in range(8):
                self._gpu(train[worker], i, A100_80, Behaviour.TRAIN, pod)

        job = self._pytorchjob("vision", f"detector-train{s}", checkpoint=False)
        pod = self._pod(
            "vision",
            f"detector-train{s}-worker-0",
            train[2],
            {WHOLE_GPU_RESOURCE: 4.0},
            job,
            labels=job_labels(f"detector-train{s}"),
        )
        for i in range(4):
            self._gpu(train[2], i, A100_80, Behaviour.CREEP, pod)
        cron = self._controller("CronJob", "vision", f"nightly-eval{s}")
        batch = self._controller("Job", "vision", f"nightly-eval{s}-29400000", cron)
        pod = self._pod(
            "vision", f"nightly-eval{s}-29400000-x7k2p", train[2], {WHOLE_GPU_RESOURCE: 2.0}, batch
        )
        for i in (4, 5):
            self._gpu(train[2], i, A100_80, Behaviour.STUCK, pod)
        job = self._pytorchjob("vision", f"segmenter-finetune{s}", checkpoint=False)
        pod = self._pod(
            "vision",
            f"segmenter-finetune{s}-worker-0",
            train[2],
            {WHOLE_GPU_RESOURCE: 2.0},
            job,
            labels=job_labels(f"segmenter-finetune{s}"),
        )
        for i in (6, 7):
            self._gpu(train[2], i, A100_80, Behaviour.STEPUP, pod)

        for i, user in enumerate(("alice", "bob")):
            nb = self._controller("Notebook", "research", f"{user}{s}")
            sts = self._controller("StatefulSet", "research", f"{user}{s}", nb)
            self.images[sts.name] = NOTEBOOK_IMAGE
            pod = self._pod(
                "research",
                f"{user}{s}-0",
                train[3],
                gpu,
                sts,
                labels={"notebook-name": f"{user}{s}"},
                # Opted in: idle at night, gpuwatch may evict it to free the node.
                annotations={RECLAIMABLE_ANNOTATION: "true"},
            )
            self._gpu(train[3], i, A100_80, Behaviour.NOTEBOOK, pod)
        for i in range(2, 8):
            self._gpu(train[3], i, A100_80, Behaviour.UNALLOCATED)

        # gpu-inference: A10 nodes with whole GPUs, T4 nodes shared through cGPU.
        a10 = [
            self._node("infer-a10", i, "gpu-inference", A10, 4, "ecs.gn7i-c32g1.32xlarge")
            for i in range(2)
        ]
        rs = self._deployment(
            "serving", f"llm-chat{s}", "vllm/vllm-openai:v0.6.3", {MODEL_PARAMS_ANNOTATION: "7B"}
        )
        for i in range(4):
            pod = self._pod("serving", f"llm-chat{s}-{_suffix('chat', s, i)}", a10[0], gpu, rs)
            self._gpu(a10[0], i, A10, Behaviour.INFERENCE, pod)
        rs = self._deployment("serving", f"rerank{s}", "nvcr.io/nvidia/tritonserver:24.08-py3")
        a10_gap = ((1 * 3600 + 40 * 60, 10 * 60),)  # exporter down 01:40-01:50
        for i in range(2):
            pod = self._pod("serving", f"rerank{s}-{_suffix('rerank', s, i)}", a10[1], gpu, rs)
            self._gpu(
                a10[1], i, A10, Behaviour.LIGHT, pod, xid_code=94 if i == 1 else 0, gaps=a10_gap
            )
        rs = self._deployment(
            "serving", f"code-assist{s}", "vllm/vllm-openai:v0.6.3", {MODEL_PARAMS_ANNOTATION: "7B"}
        )
        pod = self._pod("serving", f"code-assist{s}-{_suffix('code', s, 0)}", a10[1], gpu, rs)
        self._gpu(a10[1], 2, A10, Behaviour.INFERENCE, pod, gaps=a10_gap)
        self._gpu(a10[1], 3, A10, Behaviour.UNALLOCATED, gaps=a10_gap)

        t4 = [
            self._node("infer-t4", i, "gpu-inference", T4, 4, "ecs.gn6i-c24g1.24xlarge", cgpu=True)
            for i in range(2)
        ]
        per_gpu: dict[tuple[str | None, int], float] = {}

        def shared(deploy: str, gib: float, node: str | None, index: int, n: int) -> None:
            rs = self._deployment("serving", f"{deploy}{s}", f"registry/{deploy}:1.4")
            for replica in range(n):
                self._pod(
                    "serving",
                    f"{deploy}{s}-{_suffix(deploy, s, replica)}",
                    node,
                    {CGPU_MEMORY_RESOURCE: gib},
                    rs,
                    annotations={CGPU_INDEX_ANNOTATION: str(index + replica // 2)},
                )
                key = (node, index + replica // 2)
                per_gpu[key] = per_gpu.get(key, 0.0) + gib / int(T4.fb_total_mib / 1024)

        shared("embedding", 6.0, t4[0], 0, 4)  # GPUs 0 and 1, two replicas each
        shared("ocr", 4.0, t4[0], 2, 4)  # GPUs 2 and 3, two replicas each
        rs = self._deployment("serving", f"asr{s}", "registry/asr:2.0")
        for replica in range(2):
            self._pod(
                "serving",
                f"asr{s}-{_suffix('asr', s, replica)}",
                t4[1],
                {CGPU_MEMORY_RESOURCE: 8.0},
                rs,
                annotations={CGPU_INDEX_ANNOTATION: str(replica)},
            )
            per_gpu[(t4[1], replica)] = 8.0 / int(T4.fb_total_mib / 1024)
        for node in t4:
            for i in range(4):
                share = per_gpu.get((node, i), 0.0)
                behaviour = Behaviour.SHARED if share else Behaviour.UNALLOCATED
                hot = node == t4[1] and i == 0
                self._gpu(node, i, T4, behaviour, mem_share=share, hot=hot)

        # gpu-spot: A100-40GB spot nodes carrying the ACK spot taint.
        spot = [
            self._node("spot-a100", i, "gpu-spot", A100_40, 8, "ecs.gn7-c13g1.26xlarge", spot=True)
            for i in range(2)
        ]
        job = self._pytorchjob("llm", f"sft-spot{s}", checkpoint=True)
        pod = self._pod(
            "llm",
            f"sft-spot{s}-worker-0",
            spot[0],
            eight,
            job,
            annotations={CHECKPOINT_ANNOTATION: "true"},
            labels=job_labels(f"sft-spot{s}"),
        )
        for i in range(8):
            self._gpu(spot[0], i, A100_40, Behaviour.TRAIN, pod)
        job = self._pytorchjob("research", f"hparam-sweep{s}", checkpoint=False)
        pod = self._pod(
            "research",
            f"hparam-sweep{s}-worker-0",
            spot[1],
            eight,
            job,
            labels=job_labels(f"hparam-sweep{s}"),
        )
        sweep_gap = ((1 * 3600 + 38 * 60, 25 * 60),)
        for i in range(8):
            self._gpu(spot[1], i, A100_40, Behaviour.SWEEP, pod, gaps=sweep_gap)
        job = self._pytorchjob("research", f"big-sweep{s}", checkpoint=True)
        self._pod(
            "research",
            f"big-sweep{s}-worker-0",
            None,
            eight,
            job,
            phase="Pending",
            labels=job_labels(f"big-sweep{s}"),
            node_selector={"pool": "gpu-spot"},
        )

        # cpu: data preparation, no GPUs.
        cpu = [self._node("cpu", i, "cpu", None, 0, "ecs.g7.8xlarge") for i in range(2)]
        rs = self._deployment("platform", f"data-prep{s}", "registry/data-prep:3.1")
        self._pod("platform", f"data-prep{s}-{_suffix('prep', s, 0)}", cpu[0], {"cpu": 8.0}, rs)


def _suffix(name: str, block: str, i: int) -> str:
    digest = uuid.uuid5(_UUID_NAMESPACE, f"{name}{block}/{i}").hex
    return f"{digest[:9]}-{digest[9:14]}"
