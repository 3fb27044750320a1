"""Settings of the actions gpuwatch may take on a cluster: per-pool scale-down policy,
maintenance windows, checkpoint-and-migrate to spot, and the safeguards around writes
(the lease and the kill switch).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from gpuwatch.config.sections.approval import ApprovalSettings, Mode, SlackId
from gpuwatch.config.sections.base import Count, DurationS, Section, known_time_zone


class PoolActionPolicy(Section):
    """What gpuwatch may do to one GPU pool. Only pools listed in ``actions.pools`` are
    ever acted on."""

    mechanism: Literal["cordon-drain", "cluster-api", "karpenter"] = Field(
        "cordon-drain",
        description="`cordon-drain`: cordon and evict, leaving node removal to the cluster "
        "autoscaler; `cluster-api`: mark the Machine and lower its MachineDeployment; "
        "`karpenter`: delete the node's NodeClaim.",
    )
    floor: Count = Field(1, description="Nodes the pool never goes below.")
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
    approval: Mode | None = Field(
        None,
        description="`slack` or `auto` for this pool's actions; unset: `actions.approval`'s mode.",
    )
    approvers: list[SlackId] | None = Field(
        None, description="Who may approve this pool's actions; unset: `actions.approval`'s."
    )


class MaintenanceWindow(Section):
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
        return known_time_zone(value, hint="; expected e.g. Asia/Shanghai")


class MigrationSettings(Section):
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
        allow_inf_nan=False,
        description="A job moves only when its spot saving per 30 days is at least this, "
        "in the price book's currency.",
    )
    max_per_cycle: Count = Field(
        1,
        description="Most jobs moved to spot per cycle (0: none): a bad guess costs one "
        "job's restart, not the fleet's.",
    )
    settle_s: DurationS = Field(
        900,
        alias="settle",
        gt=0,
        description="Without the training job's step metric, a move is confirmed (and its "
        "on-demand scheduling forgotten) only once every pod has run on spot this long.",
    )


class ActionsSettings(Section):
    """Actions on the cluster. Planned and reported every cycle; written only when
    ``dry_run`` is false."""

    migration: MigrationSettings = Field(default_factory=MigrationSettings)
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)

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
        pattern=r"^[^/]+/[^/]+/[^/]+$",
        description="`namespace/configmap/key` read every cycle: anything but `true` "
        "stops all writes, follow-ups of earlier migrations included.",
    )
    max_data_age_s: DurationS = Field(
        300,
        alias="max_data_age",
        gt=0,
        description="Writes happen only when the cycle's instant is within this of the "
        "clock: a cycle evaluated in the past (`--at`) or on a backlog never acts.",
    )
    lease_duration_s: DurationS = Field(
        120,
        alias="lease_duration",
        gt=0,
        description="How long the actions Lease lasts without renewal; it is renewed before "
        "every write and released when `once` ends. Shorter than the CronJob's schedule, "
        "so that a run killed mid-way does not block the next.",
    )
    eviction_deadline_s: DurationS = Field(
        120,
        alias="eviction_deadline",
        gt=0,
        description="How long PodDisruptionBudgets may keep refusing a node's evictions "
        "before its drain is rolled back (uncordoned).",
    )
    deadline_s: DurationS = Field(
        210,
        alias="deadline",
        gt=0,
        description="No write starts later than this after the cycle began, and a drain "
        "that would run past it is rolled back. Keep it under the CronJob's "
        "`activeDeadlineSeconds` (270) by the time a rollback takes.",
    )

    @model_validator(mode="after")
    def _approvers_named(self) -> ActionsSettings:
        modes = [(None, self.approval.mode, self.approval.approvers)] + [
            (name, p.approval or self.approval.mode, self.approval.approvers
             if p.approvers is None else p.approvers)
            for name, p in self.pools.items()
        ]  # fmt: skip
        for pool, mode, approvers in modes:
            if mode == "slack" and not approvers:
                where = f"actions.pools.{pool}" if pool else "actions.approval"
                raise ValueError(
                    f"{where}: approval is slack but nobody may approve: set approvers "
                    "(Slack user ids U…, user groups S…)"
                )
        return self

    @model_validator(mode="after")
    def _deadlines_agree(self) -> ActionsSettings:
        if self.eviction_deadline_s > self.deadline_s:
            raise ValueError(
                f"actions.eviction_deadline ({self.eviction_deadline_s} s) is longer than "
                f"actions.deadline ({self.deadline_s} s): a drain could never finish in time"
            )
        return self
