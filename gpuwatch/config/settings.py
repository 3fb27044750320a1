"""Every setting of gpuwatch, with its unit, its default and why the default is what it is.

The models are strict: an unknown key is an error, not a silently ignored typo. Field
descriptions are the documentation (``gpuwatch config docs`` renders them). The sections
live in ``gpuwatch.config.sections`` by the part of gpuwatch they configure; this module
assembles them into ``Settings`` and re-exports each, so that every model is imported
from here.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from gpuwatch.config.sections.actions import (
    ActionsSettings,
    MaintenanceWindow,
    MigrationSettings,
    PoolActionPolicy,
)
from gpuwatch.config.sections.analysis import (
    CostSettings,
    QuantizationSavingsSettings,
    ReservedSavingsSettings,
    RulesSettings,
    SavingsSettings,
    SharingSavingsSettings,
    SpotSavingsSettings,
)
from gpuwatch.config.sections.base import DurationS, Section
from gpuwatch.config.sections.budgets import BudgetItem, BudgetsSettings
from gpuwatch.config.sections.notify import (
    AlertMatch,
    MatchPatterns,
    NotifySettings,
    Route,
    Silence,
    SlackSettings,
)
from gpuwatch.config.sections.runtime import (
    DaemonSettings,
    OutputSettings,
    ReportSettings,
    SelfMetricsSettings,
    StateSettings,
)
from gpuwatch.config.sections.sources import (
    CLOUD_POOL_LABELS,
    AttributionSettings,
    ClusterSettings,
    DcgmLabels,
    DcgmMetricNames,
    KubernetesSettings,
    MetricsSettings,
    PrometheusSettings,
    SimulatorSettings,
)
from gpuwatch.model.alerts import AlertPolicy, Matcher
from gpuwatch.model.alerts import Route as RouteRule
from gpuwatch.model.budgets import budget_subject

__all__ = [
    "CLOUD_POOL_LABELS",
    "ActionsSettings",
    "AlertMatch",
    "AttributionSettings",
    "BudgetItem",
    "BudgetsSettings",
    "ClusterSettings",
    "CostSettings",
    "DaemonSettings",
    "DcgmLabels",
    "DcgmMetricNames",
    "DurationS",
    "KubernetesSettings",
    "MaintenanceWindow",
    "MatchPatterns",
    "MetricsSettings",
    "MigrationSettings",
    "NotifySettings",
    "OutputSettings",
    "PoolActionPolicy",
    "PrometheusSettings",
    "QuantizationSavingsSettings",
    "ReportSettings",
    "ReservedSavingsSettings",
    "Route",
    "RulesSettings",
    "SavingsSettings",
    "Section",
    "SelfMetricsSettings",
    "Settings",
    "SharingSavingsSettings",
    "Silence",
    "SimulatorSettings",
    "SlackSettings",
    "SpotSavingsSettings",
    "StateSettings",
]


class Settings(Section):
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
    budgets: BudgetsSettings = Field(default_factory=BudgetsSettings)

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
        if self.metrics.source == "samples-file" and not self.metrics.samples_path:
            raise ValueError("metrics.source is samples-file but metrics.samples_path is unset")
        if self.cluster.source == "snapshot" and not self.cluster.snapshot_path:
            raise ValueError(
                "cluster.source is snapshot but cluster.snapshot_path is unset "
                "(set it, or pass --cluster-snapshot FILE)"
            )
        if self.metrics.source == "simulator" and self.cluster.source in ("kubernetes", "snapshot"):
            # The simulator's GPUs, nodes and pods are made up: joined with a real cluster
            # they would report findings on nodes that do not exist.
            raise ValueError(
                f"cluster.source is {self.cluster.source} but metrics.source is simulator: "
                "real cluster objects are never joined with simulated metrics. Read the "
                "real metrics too (--prometheus-url URL, or metrics.source: prometheus), "
                "or leave --cluster-snapshot out to run the simulated cluster whole"
            )
        return self

    @property
    def cluster_source(self) -> str:
        """The cluster source in effect, ``auto`` resolved."""
        if self.cluster.source != "auto":
            return self.cluster.source
        return "simulator" if self.metrics.source == "simulator" else "kubernetes"

    def alert_policy(self) -> AlertPolicy:
        """``notify``'s policy, with a route first for each budget that names its own
        channel (a budget's findings go where its owner said)."""
        policy = self.notify.policy()
        own = tuple(
            RouteRule(b.channel, Matcher(gpu=(budget_subject(b.name),)))
            for b in self.budgets.to_domain()
            if b.channel
        )
        return replace(policy, routes=own + policy.routes)

    @property
    def state_path(self) -> Path:
        return self.state.path or self.output.dir / "state.json"
