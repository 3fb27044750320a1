"""Every setting of gpuwatch, with its unit, its default and why the default is what it is.

The models are strict: an unknown key is an error, not a silently ignored typo. Field
descriptions are the documentation (``gpuwatch config docs`` renders them).
"""

from __future__ import annotations

import string
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from gpuwatch.model import alerts as domain
from gpuwatch.model.durations import parse_duration_s

# Node labels that name a node pool on the clouds our users run, tried in this order
# after ``pool_label``.
CLOUD_POOL_LABELS = [
    "alibabacloud.com/nodepool-id",
    "cloud.google.com/gke-nodepool",
    "eks.amazonaws.com/nodegroup",
    "karpenter.sh/nodepool",
]


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, populate_by_name=True
    )


class SimulatorSettings(_Section):
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
        42, description="Random seed; the same seed gives bit-identical metrics and objects."
    )
    step_s: int = Field(
        60,
        ge=1,
        le=3600,
        description="Seconds between simulated samples. DCGM exporter's default is 30 s; "
        "60 s keeps a week of a large fleet small while every rule window still holds "
        "several samples.",
    )


class MetricsSettings(_Section):
    """Where DCGM exporter metrics come from."""

    source: Literal["simulator", "prometheus"] = Field(
        "simulator",
        description="`simulator`: the embedded simulated cluster; `prometheus`: any PromQL "
        "API (Prometheus, Thanos Query, Mimir, VictoriaMetrics) at `prometheus.url`.",
    )


class DcgmMetricNames(_Section):
    """DCGM exporter metric names; change them where recording rules rename the series."""

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


class DcgmLabels(_Section):
    """Label names on DCGM exporter series."""

    uuid: str = Field("UUID", description="GPU UUID: the identity of a physical GPU.")
    gpu: str = Field("gpu", description="GPU index on its node.")
    node: str = Field(
        "Hostname",
        description="Node name. The exporter sets `Hostname` to the node it runs on.",
    )
    model: str = Field("modelName", description="GPU model name.")
    pci_bus_id: str = Field("pci_bus_id", description="PCI bus id.")
    mig_profile: str = Field("GPU_I_PROFILE", description="MIG profile (MIG devices only).")
    mig_instance: str = Field("GPU_I_ID", description="MIG instance id (MIG devices only).")
    pod_labels: Literal["auto", "exported", "plain"] = Field(
        "auto",
        description="Which pod labels name the workload. Behind a ServiceMonitor without "
        "honorLabels they arrive as `exported_pod`/`exported_namespace`/"
        "`exported_container` and the plain ones name the exporter's own pod. `auto`: "
        "exported ones when any series has them.",
    )


class PrometheusSettings(_Section):
    """The PromQL API gpuwatch reads DCGM metrics from."""

    url: str | None = Field(
        None,
        description="Base URL, e.g. `http://prometheus.monitoring:9090` or a Thanos Query, "
        "Mimir (`.../prometheus`) or VictoriaMetrics URL.",
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
    )
    bearer_token_env: str | None = Field(
        None, description="Environment variable holding a bearer token."
    )
    username: str | None = Field(None, description="Basic-auth user name.")
    password_file: Path | None = Field(None, description="File holding the basic-auth password.")
    password_env: str | None = Field(
        None, description="Environment variable holding the basic-auth password."
    )
    tenant: str | None = Field(
        None,
        description="Sent as `X-Scope-OrgID`, the tenant header of Mimir, Cortex and Loki.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra HTTP headers sent with every request."
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


class ClusterSettings(_Section):
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


class KubernetesSettings(_Section):
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


class AttributionSettings(_Section):
    """How GPUs are attributed to pools and teams."""

    pool_label: str = Field(
        "pool",
        min_length=1,
        description="Node label naming the node pool. `pool` is what the design document "
        "labels nodes with (`pool=gpu-training|gpu-inference|gpu-spot|cpu`).",
    )
    pool_label_fallbacks: list[str] = Field(
        default_factory=lambda: list(CLOUD_POOL_LABELS),
        description="Node labels tried in order when `pool_label` is absent: the node-pool "
        "labels of ACK, GKE, EKS and Karpenter.",
    )
    team_label: str | None = Field(
        None,
        description="Pod label, then namespace label, naming the team that pays. Unset, "
        "or absent from both: the namespace is the team, the most common convention.",
    )


class RulesSettings(_Section):
    """Which rule files are evaluated."""

    paths: list[Path] = Field(
        default_factory=list,
        description="Rule files or folders of `*.yaml`. Empty: the shipped `rules/gpu.yaml`.",
    )


class OutputSettings(_Section):
    """What a cycle prints and where it writes files."""

    format: Literal["table", "json"] = Field(
        "table", description="What goes to standard output: `table` for people, `json` for tools."
    )
    dir: Path = Field(
        Path("gpuwatch-out"),
        description="Folder for the cycle's JSON result (and, unless `state.path` says "
        "otherwise, its state file). Created when missing.",
    )


class StateSettings(_Section):
    """What persists between cycles: when each finding started firing, and what each
    channel was told (so that a CronJob every 5 minutes does not repeat itself)."""

    backend: Literal["file", "configmap", "memory"] = Field(
        "file",
        description="`file`: a JSON file (`state.path`); `configmap`: a ConfigMap "
        "(`state.configmap`), for a CronJob without a volume; `memory`: none kept, every "
        "run starts afresh (the demo).",
    )
    path: Path | None = Field(
        None, description="JSON state file. Unset: `state.json` in `output.dir`."
    )
    configmap: str = Field(
        "gpuwatch/gpuwatch-state",
        pattern=r"^[a-z0-9-]+/[a-z0-9.-]+$",
        description="`namespace/name` of the state ConfigMap (created when missing). "
        "Written with optimistic concurrency: a second writer is refused, not overwritten.",
    )


DurationS = Annotated[int, BeforeValidator(parse_duration_s)]


class CostSettings(_Section):
    """Pricing every GPU-hour."""

    window_s: DurationS = Field(
        3600,
        alias="window",
        gt=0,
        description="The recent window each cycle prices and allocates (a duration, e.g. "
        "`1h`); monthly figures extrapolate it to 30 days. The weekly report prices "
        "whole weeks.",
    )
    price_book: Path | None = Field(
        None, description="Price book YAML. Unset: the shipped `rules/pricing.yaml` (examples)."
    )
    opencost: bool = Field(
        False,
        description="Where OpenCost runs, its `node_gpu_hourly_cost` metric (read from "
        "`prometheus.url`) prices each node's GPUs instead of the book.",
    )
    opencost_currency: str = Field(
        "USD", pattern=r"^[A-Z]{3}$", description="The currency OpenCost is configured with."
    )


class SpotSavingsSettings(_Section):
    preemptions_per_hour: float = Field(
        0.05,
        ge=0,
        description="Expected spot preemptions per node-hour, where `pools` says nothing "
        "(0.05: one a day, a middling figure for GPU spot capacity).",
    )
    pools: dict[str, float] = Field(
        default_factory=dict, description="Preemptions per hour by target spot pool."
    )
    restart_s: int = Field(
        300, ge=0, description="Seconds to reschedule and reload after a preemption."
    )
    checkpoint_interval_s: int = Field(
        1800,
        gt=0,
        description="Checkpoint interval assumed when a job does not annotate "
        "`gpuwatch.io/checkpoint-interval` (seconds); half of it is lost per preemption.",
    )


class SharingSavingsSettings(_Section):
    window_s: DurationS = Field(
        7 * 86400,
        alias="window",
        gt=0,
        description="How far back utilization and memory are judged: a week sees daily "
        "peaks that a night would hide.",
    )
    util_p95_max: float = Field(
        0.3, ge=0, le=1, description="Share only GPUs whose p95 utilization is below this."
    )
    memory_max_ratio: float = Field(
        0.5, ge=0, le=1, description="Share only GPUs whose peak memory is below this ratio."
    )
    pack_util_max: float = Field(
        0.8, gt=0, le=1, description="The p95 utilizations packed onto one GPU sum to at most this."
    )
    pack_memory_max_ratio: float = Field(
        0.9, gt=0, le=1, description="The peak memories packed onto one GPU sum to at most this."
    )


class QuantizationSavingsSettings(_Section):
    headroom_ratio: float = Field(
        0.3,
        ge=0,
        description="Memory beyond the weights for KV cache, activations and runtime, as a "
        "fraction of the weights.",
    )
    usable_memory_ratio: float = Field(
        0.9, gt=0, le=1, description="Fraction of a GPU's memory a server may fill."
    )


class ReservedSavingsSettings(_Section):
    window_s: DurationS = Field(
        7 * 86400,
        alias="window",
        gt=0,
        description="History whose steady baseline could be reserved capacity.",
    )
    percentile: float = Field(
        10,
        ge=0,
        le=100,
        description="The baseline is this percentile of hourly on-demand GPUs in use: "
        "capacity busy 90 % of hours.",
    )


class SavingsSettings(_Section):
    """Savings calculations; each is documented in the README."""

    spot: SpotSavingsSettings = Field(default_factory=SpotSavingsSettings)
    sharing: SharingSavingsSettings = Field(default_factory=SharingSavingsSettings)
    quantization: QuantizationSavingsSettings = Field(default_factory=QuantizationSavingsSettings)
    reserved: ReservedSavingsSettings = Field(default_factory=ReservedSavingsSettings)
    floors: dict[str, int] = Field(
        default_factory=dict,
        description="Minimum nodes per pool that scale-down savings never go below.",
    )


class PoolActionPolicy(_Section):
    """What gpuwatch may do to one GPU pool. Only pools listed in ``actions.pools`` are
    ever acted on."""

    mechanism: Literal["cordon-drain", "cluster-api", "karpenter"] = Field(
        "cordon-drain",
        description="`cordon-drain`: cordon and evict, leaving node removal to the cluster "
        "autoscaler; `cluster-api`: mark the Machine and lower its MachineDeployment; "
        "`karpenter`: delete the node's NodeClaim.",
    )
    floor: int = Field(1, ge=0, description="Nodes the pool never goes below.")
    budget_percent: float = Field(
        10,
        gt=0,
        le=100,
        description="Most nodes removed per cycle, as a percentage of the pool (at least "
        "one): Karpenter's default disruption budget.",
    )
    cooldown_s: DurationS = Field(
        1800,
        alias="cooldown",
        ge=0,
        description="No scale-down this long after the pool last grew (a node joined).",
    )
    machine_deployment: str | None = Field(
        None, description="`namespace/name` of the pool's MachineDeployment (cluster-api)."
    )


class MaintenanceWindow(_Section):
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        description="Days the window opens on.",
    )
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM, local time.")
    end: str = Field(
        pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="HH:MM; before `start` means the window runs past midnight.",
    )
    timezone: str = Field("UTC", description="IANA time zone, e.g. Asia/Shanghai.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; expected e.g. Asia/Shanghai") from exc
        return value


class MigrationSettings(_Section):
    """Checkpoint-and-migrate of training jobs to spot capacity."""

    opt_in_annotation: str = Field(
        "gpuwatch.io/migrate-to-spot",
        description='Only jobs annotated `"true"` with this (on the job or its pods) '
        "are ever moved.",
    )
    checkpoint_max_age_s: DurationS = Field(
        900,
        alias="checkpoint_max_age",
        gt=0,
        description="A job moves only with a checkpoint younger than this (from "
        "`gpuwatch.io/last-checkpoint` or the training job's metric): the work a move "
        "can lose.",
    )
    spot_deadline_s: DurationS = Field(
        600,
        alias="spot_deadline",
        gt=0,
        description="How long a moved job's pods may wait for spot capacity before the job "
        "is moved back to on-demand.",
    )
    min_saving_monthly: float = Field(
        1000,
        ge=0,
        description="A job moves only when its spot saving per 30 days is at least this, "
        "in the price book's currency.",
    )


class ActionsSettings(_Section):
    """Actions on the cluster. Planned and reported every cycle; written only when
    ``dry_run`` is false."""

    migration: MigrationSettings = Field(default_factory=MigrationSettings)

    pools: dict[str, PoolActionPolicy] = Field(
        default_factory=dict,
        description="The pools gpuwatch may scale down, with their policy. Empty: none.",
    )
    maintenance_windows: list[MaintenanceWindow] = Field(
        default_factory=list,
        description="When actions may run. Empty: any time.",
    )
    reclaimable_annotation: str = Field(
        "gpuwatch.io/reclaimable",
        description='Pods annotated `"true"` (idle notebooks, say) may be evicted to '
        "free a node when they are idle; any other pod keeps its node.",
    )
    lease: str = Field(
        "gpuwatch/gpuwatch-actions",
        description="`namespace/name` of the coordination.k8s.io Lease taken before any "
        "write, so that two instances never act at once.",
    )
    kill_switch: str = Field(
        "gpuwatch/gpuwatch-actions/enabled",
        description="`namespace/configmap/key` read every cycle: anything but `true` "
        "stops all writes.",
    )


MatchPatterns = list[str] | None


class AlertMatch(_Section):
    """Which findings a route or a silence applies to. Each field is a list of shell-style
    patterns (`gpu-*`, `team-?`); a finding matches when every field that is set has a
    pattern matching it. No field set: every finding."""

    rule: MatchPatterns = Field(None, description="Rule ids.")
    severity: MatchPatterns = Field(None, description="`info`, `warning`, `critical`.")
    pool: MatchPatterns = Field(None, description="Node pools.")
    namespace: MatchPatterns = Field(None, description="Namespaces of the pods holding the GPU.")
    team: MatchPatterns = Field(None, description="Teams (see `attribution.team_label`).")
    node: MatchPatterns = Field(None, description="Node names.")
    gpu: MatchPatterns = Field(
        None, description="GPU UUIDs, or `node/gpuN` for the GPU with index N on a node."
    )

    def to_domain(self) -> domain.Matcher:
        return domain.Matcher(
            **{name: tuple(getattr(self, name) or ()) for name in AlertMatch.model_fields}
        )


class Route(_Section):
    """Send the findings a match selects to a channel. The first route that matches wins;
    findings no route claims go to `notify.channel`."""

    match: AlertMatch = Field(default_factory=AlertMatch)
    channel: str = Field(min_length=1, description="Slack channel name (`#gpu-team-a`) or id.")

    def to_domain(self) -> domain.Route:
        return domain.Route(self.channel, self.match.to_domain())


class Silence(_Section):
    """Mute the findings a match selects until a time. Muted findings stay in the cycle
    result and the reports; only messages are held back."""

    match: AlertMatch
    until: datetime = Field(description="RFC 3339 instant at which the silence ends.")
    comment: str = Field("", description="Why, and who to ask.")

    @field_validator("until")
    @classmethod
    def _zoned(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("expected an instant with a time zone, e.g. 2026-12-01T09:00:00Z")
        return value

    @model_validator(mode="after")
    def _not_everything(self) -> Silence:
        if not any(getattr(self.match, name) for name in AlertMatch.model_fields):
            raise ValueError("a silence must match something: set at least one match field")
        return self

    def to_domain(self) -> domain.Silence:
        return domain.Silence(self.match.to_domain(), self.until, self.comment)


class SlackSettings(_Section):
    """Slack. With a bot token, gpuwatch posts through the Web API: it updates messages in
    place and replies in their threads. An incoming webhook is the simpler alternative:
    it can only post, so updates and resolutions arrive as new messages, to the
    webhook's own channel. Neither configured (or no token found): messages go to the
    console when `notify.console` is on."""

    token_env: str = Field(
        "SLACK_BOT_TOKEN",
        description="Environment variable holding the bot token (`xoxb-...`). Needs the "
        "`chat:write` scope (and `files:write` for the weekly report). The token is "
        "never logged or printed.",
    )
    token_file: Path | None = Field(
        None,
        description="File holding the bot token, e.g. a mounted Secret; read every cycle, "
        "so a rotated token needs no restart. Takes precedence over `token_env`.",
    )
    webhook_url_env: str | None = Field(
        None,
        description="Environment variable holding an incoming-webhook URL, used when no "
        "bot token is found. The URL is a secret and is never logged.",
    )
    webhook_url_file: Path | None = Field(
        None, description="File holding an incoming-webhook URL (e.g. a mounted Secret)."
    )
    base_url: str = Field(
        "https://slack.com/api/",
        description="Web API base URL (GovSlack: `https://slack-gov.com/api/`).",
    )
    timeout_s: float = Field(10.0, gt=0, le=120, description="Per request.")
    min_interval_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description="Least time between two messages to one channel. Slack allows about "
        "one per second per channel and answers 429 above it.",
    )
    rate_limit_retries: int = Field(
        3,
        ge=0,
        le=10,
        description="Times a 429 is waited out (for its `Retry-After`) before the "
        "message is left for the next cycle.",
    )
    max_retry_after_s: float = Field(
        30.0,
        gt=0,
        description="Longest `Retry-After` waited out within a cycle; a longer one "
        "leaves the message for the next cycle rather than stalling the cycle.",
    )
    connection_retries: int = Field(
        2, ge=0, le=10, description="Retries after a connection error or a 5xx answer."
    )


class NotifySettings(_Section):
    """Messages to people: one per incident group, updated in place as the group changes,
    resolved in its thread. The timing settings follow Alertmanager's meaning."""

    console: bool = Field(
        True,
        description="Print the messages that would be sent when no Slack is configured, so "
        "that a dry run shows exactly what people would read.",
    )
    channel: str = Field(
        "#gpu-alerts", min_length=1, description="Channel for messages no route claims."
    )
    max_rows: int = Field(
        10,
        ge=1,
        le=50,
        description="GPU rows listed in one message; the rest are counted. Slack truncates "
        "long messages and people stop reading after ten rows.",
    )
    group_by: list[domain.GroupLabel] = Field(
        default_factory=lambda: ["rule", "pool"],
        min_length=1,
        description="Findings with equal values of these fields (within a channel) share "
        'one message: `rule, pool` gives "5 idle A100s in gpu-training".',
    )
    group_wait_s: DurationS = Field(
        0,
        alias="group_wait",
        description="How long a new group waits before its first message, so that "
        "findings arriving together are sent together. A cycle already batches what it "
        "finds, so the default sends on the first cycle; a rule's own `for` delays its "
        "findings.",
    )
    group_interval_s: DurationS = Field(
        300,
        alias="group_interval",
        description="Least time between two changes of a group's message (GPUs added "
        "or resolved): changes within it are gathered into one update.",
    )
    repeat_interval_s: DurationS = Field(
        14400,
        alias="repeat_interval",
        description="A group still firing after this long is posted again as a new "
        "message (a reminder); Alertmanager's default, 4 h.",
    )
    send_resolved: bool = Field(
        True,
        description="When a group stops firing, mark its message resolved and say so in "
        "its thread.",
    )
    digest_over: int = Field(
        10,
        ge=1,
        description="A cycle that would post more new messages than this to one channel "
        "posts one digest listing them instead.",
    )
    undelivered_max_age_s: DurationS = Field(
        86400,
        alias="undelivered_max_age",
        description="A message that could not be delivered is retried on every cycle "
        "for this long, then given up with a data-quality note.",
    )
    routes: list[Route] = Field(
        default_factory=list,
        description="Channel per rule, severity, pool, namespace or team; the first "
        "matching route wins.",
    )
    silences: list[Silence] = Field(
        default_factory=list, description="Findings muted until a time."
    )
    silences_configmap: str | None = Field(
        "gpuwatch/gpuwatch-silences",
        description="`namespace/name` of a ConfigMap whose `silences.yaml` key holds more "
        "silences (a list in the form of `notify.silences`), read every cycle from "
        "the cluster; missing is fine. Unset: none.",
    )
    grafana_url: str | None = Field(
        None,
        description="Dashboard link put on messages; `{node}`, `{pool}` and `{rule}` are "
        "replaced (URL-encoded) by the group's values.",
    )
    report_url: str | None = Field(None, description="Link to the latest report, on messages.")
    slack: SlackSettings = Field(default_factory=SlackSettings)

    @field_validator("grafana_url")
    @classmethod
    def _known_placeholders(cls, url: str | None) -> str | None:
        if url is None:
            return None
        for _, name, _, _ in string.Formatter().parse(url):
            if name is not None and name not in {"node", "pool", "rule"}:
                raise ValueError(f"unknown placeholder {{{name}}}; expected node, pool or rule")
        return url

    def policy(self) -> domain.AlertPolicy:
        """What the alert lifecycle needs of these settings (silences come separately:
        the cluster holds more of them)."""
        # The policy's fields are these settings under the same names and meanings.
        same = {f.name: getattr(self, f.name) for f in fields(domain.AlertPolicy)}
        return domain.AlertPolicy(
            **{
                **same,
                "group_by": tuple(self.group_by),
                "routes": tuple(route.to_domain() for route in self.routes),
            }
        )


class SelfMetricsSettings(_Section):
    """gpuwatch's own metrics (findings, costs, savings, actions, cycle time, deliveries)."""

    pushgateway_url: str | None = Field(
        None,
        description="Pushgateway to push to after each cycle (CronJob mode). Unset: no push.",
    )
    job: str = Field("gpuwatch", min_length=1, description="Pushgateway job label.")
    address: str = Field(
        "0.0.0.0", description="Daemon mode: address `/metrics` and `/healthz` listen on."
    )
    port: int = Field(9400, ge=1, le=65535, description="Daemon mode: port for `/metrics`.")


class ReportSettings(_Section):
    """The weekly report: Parquet tables and one self-contained HTML file."""

    location: str = Field(
        "gpuwatch-reports",
        description="Where the dataset and the HTML go: a local folder, or a URI that "
        "pyarrow opens (`s3://bucket/prefix`, `gs://bucket/prefix`; Alibaba OSS and MinIO "
        "through `s3://` with `s3_endpoint_url`). Credentials come from the usual "
        "environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, instance roles).",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint, e.g. `https://oss-cn-hangzhou.aliyuncs.com`.",
    )
    s3_region: str | None = Field(None, description="S3 region; unset: the SDK's default.")
    templates: Path | None = Field(
        None,
        description="Folder holding `weekly.html.j2` (and what it includes), to change the "
        "report's look. Unset: the shipped `reports/` templates.",
    )
    heatmap_max_rows: int = Field(
        240,
        ge=8,
        le=2000,
        description="Rows of the utilization heatmap. A larger fleet is drawn a row per "
        "group of GPUs (same pool and node, in order), each the mean of its GPUs.",
    )
    slack_channel: str | None = Field(
        None,
        description="Where the weekly summary and the HTML go when Slack is configured. "
        "Unset: `notify.channel`.",
    )


class DaemonSettings(_Section):
    """`gpuwatch run`: the long-lived process that schedules cycles and reports itself
    (the alternative to the two CronJobs)."""

    interval_s: DurationS = Field(
        300,
        alias="interval",
        ge=1,
        description="Time between cycles. A cycle still running when the next is due "
        "is not started twice; missed runs are coalesced into one.",
    )
    report_cron: str | None = Field(
        "0 9 * * mon",
        description="When the weekly report runs (crontab: minute hour day month "
        "weekday), in `report_timezone`; it reports the last full ISO week. Unset: never.",
    )
    report_timezone: str = Field("UTC", description="IANA time zone of `report_cron`.")
    misfire_grace_s: DurationS = Field(
        60,
        alias="misfire_grace",
        ge=1,
        description="A run that could not start on time (the process was busy or "
        "paused) still starts if it is at most this late; later, it is skipped.",
    )
    unhealthy_after: int = Field(
        3,
        ge=1,
        description="`/healthz` answers 503 when no cycle has succeeded for this many intervals.",
    )
    lease: str | None = Field(
        "gpuwatch/gpuwatch-daemon",
        description="`namespace/name` of the Lease that lets one replica run cycles (the "
        "others wait); unset: no election (one replica, or no cluster).",
    )

    @field_validator("report_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class Settings(_Section):
    """All of gpuwatch's settings."""

    at: datetime | None = Field(
        None,
        description="Evaluate as of this instant (RFC 3339). Unset: now. Re-examines a past "
        "incident and makes runs reproducible.",
    )
    dry_run: bool = Field(
        True, description="Plan and report actions without writing to the cluster."
    )
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)
    attribution: AttributionSettings = Field(default_factory=AttributionSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    self_metrics: SelfMetricsSettings = Field(default_factory=SelfMetricsSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    cost: CostSettings = Field(default_factory=CostSettings)
    savings: SavingsSettings = Field(default_factory=SavingsSettings)
    actions: ActionsSettings = Field(default_factory=ActionsSettings)

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("expected an instant with a time zone, e.g. 2026-11-24T02:00:00Z")
        return value

    @model_validator(mode="after")
    def _sources_have_what_they_need(self) -> Settings:
        if self.metrics.source == "prometheus" and not self.prometheus.url:
            raise ValueError(
                "metrics.source is prometheus but prometheus.url is unset "
                "(set it, or pass --prometheus-url)"
            )
        if self.cluster.source == "snapshot" and not self.cluster.snapshot_path:
            raise ValueError(
                "cluster.source is snapshot but cluster.snapshot_path is unset "
                "(set it, or pass --cluster-snapshot FILE)"
            )
        return self

    @property
    def cluster_source(self) -> str:
        """The cluster source in effect, ``auto`` resolved."""
        if self.cluster.source != "auto":
            return self.cluster.source
        return "simulator" if self.metrics.source == "simulator" else "kubernetes"

    @property
    def state_path(self) -> Path:
        return self.state.path or self.output.dir / "state.json"
