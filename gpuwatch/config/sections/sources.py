"""Settings of where gpuwatch's inputs come from: metrics and cluster state.

The simulator, the metrics source, the DCGM exporter's metric and label names, the
PromQL API, the cluster source, the Kubernetes API server and how GPUs are attributed to
pools and teams: everything the adapters in ``gpuwatch.sources`` are built from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from gpuwatch.config.sections.base import Section, secret

# Node labels that name a node pool on the platforms GPU teams run, tried in this
# order after ``pool_label`` (docs/cluster.md lists them with their sources).
CLOUD_POOL_LABELS = [
    "alibabacloud.com/nodepool-id",  # ACK
    "cloud.google.com/gke-nodepool",  # GKE standard and Autopilot
    "eks.amazonaws.com/nodegroup",  # EKS managed node groups
    "alpha.eksctl.io/nodegroup-name",  # eksctl self-managed node groups
    "karpenter.sh/nodepool",  # Karpenter v1 (and v1beta1)
    "karpenter.sh/provisioner-name",  # Karpenter v1alpha5
    "kubernetes.azure.com/agentpool",  # AKS
    "agentpool",  # AKS, older clusters
    "oke.oraclecloud.com/pool.name",  # OKE
]


class SimulatorSettings(Section):
    """The embedded simulated cluster (the default source of metrics and cluster state)."""

    gpus: int = Field(
        64,
        ge=1,
        le=200_000,
        description="GPUs in the simulated cluster, rounded up to whole nodes. 64 is one "
        "full copy of the scenario (every workload kind once); larger numbers repeat it.",
    )
    days: float = Field(
        7.0,
        gt=0,
        le=366,
        description="Days of metric history before the evaluation instant. A week is what "
        "the weekly report covers.",
    )
    seed: int = Field(
        42,
        ge=0,
        description="Random seed; the same seed gives bit-identical metrics and objects.",
    )
    step_s: int = Field(
        60,
        ge=1,
        le=3600,
        description="Seconds between simulated samples. DCGM exporter's default is 30 s; "
        "60 s keeps a week of a large fleet small while every rule window still holds "
        "several samples.",
    )


class MetricsSettings(Section):
    """Where DCGM exporter metrics come from."""

    source: Literal["simulator", "prometheus", "samples-file"] = Field(
        "simulator",
        description="`simulator`: the embedded simulated cluster; `prometheus`: any PromQL "
        "API (Prometheus, Thanos Query, Mimir, VictoriaMetrics) at `prometheus.url`; "
        "`samples-file`: a Parquet file of raw exporter samples at `metrics.samples_path`.",
    )
    samples_path: str | None = Field(
        None,
        description="A Parquet file of raw DCGM exporter samples, as exported from "
        "Prometheus: a row per GPU per scrape, a `timestamp` column, the exporter's labels "
        "(`UUID`, `gpu`, `Hostname`, `modelName`, `pod`, `namespace`, ...) and one column "
        "per metric (`DCGM_FI_DEV_GPU_UTIL`, ...); a row group per day, in time order. "
        "Reports on a week without querying the server.",
    )


class DcgmMetricNames(Section):
    """DCGM exporter metric names; change them where recording rules rename the series."""

    device_families: str = Field(
        "DCGM_FI_.*",
        description="Regular expression (PromQL `=~`) of the families whose series make a "
        "device exist: any family the exporter sends, because exporters differ in which "
        "(no GPU_UTIL for MIG instances, custom counter lists). The names below are "
        "always included.",
    )
    gpu_util: str = Field("DCGM_FI_DEV_GPU_UTIL", description="Utilization, percent.")
    gr_engine_active: str = Field(
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        description="Graphics engine active ratio 0..1; preferred over `gpu_util` where a "
        "GPU exports it.",
    )
    fb_used: str = Field("DCGM_FI_DEV_FB_USED", description="Framebuffer used, MiB.")
    fb_free: str = Field("DCGM_FI_DEV_FB_FREE", description="Framebuffer free, MiB.")
    fb_reserved: str = Field(
        "DCGM_FI_DEV_FB_RESERVED", description="Framebuffer reserved, MiB (newer exporters)."
    )
    temp: str = Field("DCGM_FI_DEV_GPU_TEMP", description="GPU temperature, C.")
    power: str = Field("DCGM_FI_DEV_POWER_USAGE", description="Power draw, W.")
    xid: str = Field("DCGM_FI_DEV_XID_ERRORS", description="Last XID error code.")
    tensor_active: str = Field(
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", description="Tensor pipe active ratio 0..1."
    )


def _names(value: object) -> object:
    """A label setting given as one name means a list of one."""
    return [value] if isinstance(value, str) else value


LabelNames = Annotated[list[str], BeforeValidator(_names), Field(min_length=1)]


class DcgmLabels(Section):
    """Label names on DCGM exporter series. Exporter versions and deployments name some
    of them differently; where a setting is a list, the first name present wins."""

    uuid: str = Field("UUID", description="GPU UUID: the identity of a physical GPU.")
    gpu: str = Field("gpu", description="GPU index on its node (older exporters may not set it).")
    node: LabelNames = Field(
        default_factory=lambda: ["Hostname", "hostname", "node", "kubernetes_node"],
        description="Labels that may name the GPU's node, in order of preference. The "
        "exporter sets `Hostname` (`hostname` in some versions) to its host's name, which "
        "on many deployments (AKS, the GPU operator without hostNetwork) is the exporter "
        "pod's own name; Prometheus relabeling often adds `node` or `kubernetes_node`. The "
        "first that names a node the cluster knows is used, else the node of the pod it "
        "names, and `data_quality[]` says when they disagree.",
    )
    model: str = Field("modelName", description="GPU model name.")
    pci_bus_id: str = Field("pci_bus_id", description="PCI bus id.")
    mig_profile: str = Field("GPU_I_PROFILE", description="MIG profile (MIG devices only).")
    mig_instance: str = Field("GPU_I_ID", description="MIG instance id (MIG devices only).")
    pod_labels: Literal["auto", "exported", "plain", "legacy"] = Field(
        "auto",
        description="Which labels name the pod using a GPU: `exported` "
        "(`exported_pod`/`exported_namespace`/`exported_container`, what a ServiceMonitor "
        "without honorLabels leaves, the plain ones then naming the exporter's own pod), "
        "`legacy` (`pod_name`/`pod_namespace`/`container_name`, older exporters), `plain` "
        "(`pod`/`namespace`/`container`). `auto`: the first of exported, legacy, plain "
        "that any series carries.",
    )


class PrometheusSettings(Section):
    """The PromQL API gpuwatch reads DCGM metrics from."""

    url: str | None = Field(
        None,
        description="Base URL, e.g. `http://prometheus.monitoring:9090` or a Thanos Query, "
        "Mimir (`.../prometheus`) or VictoriaMetrics URL.",
        json_schema_extra=secret("url"),
    )
    timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Per-request timeout. A request that runs out is split and retried, "
        "not failed.",
    )
    bearer_token_file: Path | None = Field(
        None,
        description="File holding a bearer token (re-read every cycle, so rotated "
        "service-account tokens work). The token itself is never logged.",
        json_schema_extra=secret("file"),
    )
    bearer_token_env: str | None = Field(
        None,
        description="Environment variable holding a bearer token.",
        json_schema_extra=secret("env"),
    )
    username: str | None = Field(None, description="Basic-auth user name.")
    password_file: Path | None = Field(
        None,
        description="File holding the basic-auth password.",
        json_schema_extra=secret("file"),
    )
    password_env: str | None = Field(
        None,
        description="Environment variable holding the basic-auth password.",
        json_schema_extra=secret("env"),
    )
    tenant: str | None = Field(
        None,
        description="Sent as `X-Scope-OrgID`, the tenant header of Mimir, Cortex and Loki.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra HTTP headers sent with every request (an `Authorization`, say).",
        json_schema_extra=secret("value"),
    )
    ca_file: Path | None = Field(None, description="CA bundle that signs the server's TLS cert.")
    cert_file: Path | None = Field(None, description="Client TLS certificate (PEM).")
    key_file: Path | None = Field(None, description="Client TLS key (PEM).")
    insecure_skip_verify: bool = Field(
        False, description="Accept any TLS certificate. For tests only."
    )
    scrape_interval_s: float = Field(
        30.0,
        gt=0,
        description="DCGM exporter collection interval (its default: 30 s). Turns sample "
        "counts into coverage, and is the subquery step: a finer step adds nothing.",
    )
    max_concurrency: int = Field(
        4, ge=1, le=64, description="Requests in flight at once, to stay gentle."
    )
    sample_budget: int = Field(
        5_000_000,
        ge=100,
        description="Most samples one request may make the server load: 10 % of "
        "Prometheus' default `--query.max-samples` (50,000,000). Larger requests are "
        "split by time and by GPU shards.",
    )
    max_points_per_series: int = Field(
        11_000,
        ge=100,
        le=11_000,
        description="Most points per series in one range request; Prometheus refuses "
        "more than 11,000.",
    )
    max_split_depth: int = Field(
        6,
        ge=0,
        le=12,
        description="How many times a request refused as too big (422, 503, timeout) is "
        "halved before the cycle gives up.",
    )
    metrics: DcgmMetricNames = Field(default_factory=DcgmMetricNames)
    labels: DcgmLabels = Field(default_factory=DcgmLabels)


class ClusterSettings(Section):
    """Where node, pod and owner state comes from."""

    source: Literal["auto", "simulator", "kubernetes", "snapshot"] = Field(
        "auto",
        description="`kubernetes`: the API server (in-cluster or kubeconfig); `snapshot`: "
        "a `kubectl get -o json` file at `cluster.snapshot_path`; `simulator`: the "
        "embedded cluster. `auto`: the simulator when metrics come from it, else the "
        "Kubernetes API, so that real metrics are never joined with simulated pods.",
    )
    snapshot_path: str | None = Field(
        None,
        description="Output of `kubectl get nodes,pods,replicasets,deployments,jobs,"
        "cronjobs,statefulsets,pytorchjobs -A -o json` (`-`: standard input). Analyses a "
        "cluster without installing anything in it.",
    )
    gpu_resource_aliases: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.shared": "nvidia.com/gpu"},
        description="Renamed GPU resources (time-slicing `renameByDefault`) and the "
        "resource each stands for.",
    )
    name: str = Field(
        "simulated",
        min_length=1,
        description="Cluster name written into every result and report row, so that a "
        "fleet of clusters can share one bucket.",
    )


class KubernetesSettings(Section):
    """How to reach the Kubernetes API server."""

    in_cluster: bool = Field(
        False,
        description="Use the pod's service account, as the deployed CronJob does; "
        "otherwise a kubeconfig is read.",
    )
    kubeconfig: Path | None = Field(
        None, description="Kubeconfig file. Unset: `$KUBECONFIG` or `~/.kube/config`."
    )
    context: str | None = Field(None, description="Kubeconfig context. Unset: the current one.")
    page_size: int = Field(
        500,
        ge=1,
        le=10_000,
        description="Objects per list request (kubectl's chunk size): memory stays bounded "
        "at one page while 10,000 pods take 20 requests.",
    )
    request_timeout_s: float = Field(30.0, gt=0, description="Per request.")
    retries: int = Field(
        5, ge=0, le=20, description="Retries after 429, 5xx or a connection failure."
    )


class AttributionSettings(Section):
    """How GPUs are attributed to pools and teams."""

    pool_label: str = Field(
        "pool",
        min_length=1,
        description="Node label naming the node pool. `pool` is the label of the common "
        "four-pool layout (`pool=gpu-training|gpu-inference|gpu-spot|cpu`).",
    )
    pool_label_fallbacks: list[str] = Field(
        default_factory=lambda: list(CLOUD_POOL_LABELS),
        description="Node labels tried in order when `pool_label` is absent: the node-pool "
        "labels of ACK, GKE, EKS (managed and eksctl), Karpenter (v1 and v1alpha5), AKS "
        "and OKE.",
    )
    team_label: str | None = Field(
        None,
        description="Pod label, then namespace label, naming the team that pays. Unset, "
        "or absent from both: the namespace is the team, the most common convention.",
    )
