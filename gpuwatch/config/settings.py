"""Every setting of gpuwatch, with its unit, its default and why the default is what it is.

The models are strict: an unknown key is an error, not a silently ignored typo. Field
descriptions are the documentation (``gpuwatch config docs`` renders them).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Node labels that name a node pool on the clouds our users run, tried in this order
# after ``pool_label``.
CLOUD_POOL_LABELS = [
    "alibabacloud.com/nodepool-id",
    "cloud.google.com/gke-nodepool",
    "eks.amazonaws.com/nodegroup",
    "karpenter.sh/nodepool",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


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

    source: Literal["simulator"] = Field(
        "simulator", description="`simulator`: the embedded simulated cluster."
    )


class ClusterSettings(_Section):
    """Where node, pod and owner state comes from."""

    source: Literal["simulator"] = Field(
        "simulator", description="`simulator`: the embedded simulated cluster."
    )
    name: str = Field(
        "simulated",
        min_length=1,
        description="Cluster name written into every result and report row, so that a "
        "fleet of clusters can share one bucket.",
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
        description="Pod label (then namespace label) naming the team that pays. Unset: "
        "the namespace is the team, the most common convention.",
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
    """What persists between cycles (when each finding started firing)."""

    path: Path | None = Field(
        None,
        description="JSON state file. Unset: `state.json` in `output.dir`. A CronJob "
        "without a volume keeps its state in a ConfigMap instead.",
    )


class NotifySettings(_Section):
    """Messages to people."""

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
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)
    attribution: AttributionSettings = Field(default_factory=AttributionSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("expected an instant with a time zone, e.g. 2026-11-24T02:00:00Z")
        return value

    @property
    def state_path(self) -> Path:
        return self.state.path or self.output.dir / "state.json"
