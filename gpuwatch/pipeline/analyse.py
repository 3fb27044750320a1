"""The second phase of a cycle: what the gathered data means. Pure.

From one ``Gathered`` and the rules, price book and settings: who holds each GPU, the
findings, the cost of the window, the savings, the actions the planners would take
(planned, or refused with the guard that said no), the pods waiting for GPUs, and the
data-quality notes, all as return values. No I/O, no clock: the same inputs give the
same ``Analysis``, which is what lets the weekly report reuse it for its savings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypeVar

from gpuwatch.analysis.attribution import GpuContext, attribute
from gpuwatch.analysis.budgets import (
    BudgetLimits,
    budget_findings,
    budget_status,
    month_use,
    prices_of,
)
from gpuwatch.analysis.cost import allocate_cost
from gpuwatch.analysis.mig import with_gpu_fractions
from gpuwatch.analysis.ownership import OwnerIndex, team_of
from gpuwatch.analysis.pricing import PriceBook
from gpuwatch.analysis.rules.evaluate import evaluate, lookback_s
from gpuwatch.analysis.rules.roles import rule_for
from gpuwatch.analysis.rules.schema import BudgetRule, Rule
from gpuwatch.analysis.savings import SavingsInputs, SavingsResult, compute_savings
from gpuwatch.analysis.savings.base import IDLE_THRESHOLD
from gpuwatch.analysis.savings.use import hourly_use
from gpuwatch.analysis.savings.words import saving_words
from gpuwatch.config.settings import Settings
from gpuwatch.model.actions import Action
from gpuwatch.model.budgets import BudgetStatus
from gpuwatch.model.cluster import ClusterState, gpu_share
from gpuwatch.model.cost import CostReport, Price
from gpuwatch.model.findings import DataQualityNote, Finding, PendingGpuPod, Role
from gpuwatch.model.metrics import WindowStats
from gpuwatch.model.result import SourceInfo
from gpuwatch.model.tenant import notes_for
from gpuwatch.pipeline.gather import Gathered
from gpuwatch.pipeline.specs import NEWEST_SAMPLE, fb_total_max, util_avg
from gpuwatch.planners.approval import Admission, ApprovalInputs, admit
from gpuwatch.planners.freshness import DEFAULT_STALE_AFTER_S, Freshness
from gpuwatch.planners.migration import MigrationInputs, plan_migrations
from gpuwatch.planners.scale_down import ScaleDownInputs, plan_scale_down
from gpuwatch.sources.base import PodKey

T = TypeVar("T")

OPTIONAL_ROLES = {
    Role.IDLE: "idle-release saving, and no draining of nodes with idle opted-in pods",
    Role.NEAR_OOM: "near-OOM hours in the weekly report",
}
"""Roles whose consumers still run without them, with less to say: a note, not an error.
(Roles the actions need are required when the rules are loaded.)"""


@dataclass(frozen=True)
class Analysis:
    """What a cycle concluded, before anything is done about it."""

    at: datetime
    source: SourceInfo
    contexts: tuple[GpuContext, ...] = ()
    """Every GPU (or MIG instance) with its node, pool, holders and share of a card:
    the devices in the metrics first, then those the nodes advertise but no metric
    shows."""
    findings: tuple[Finding, ...] = ()
    cost: CostReport | None = None
    savings: SavingsResult = field(default_factory=SavingsResult)
    actions: tuple[Action, ...] = ()
    """Planned, or refused with the guard that said no; dry runs when not writable.
    Under approval: waiting ones ``awaiting_approval``, rejected ones refused."""
    admission: Admission | None = None
    """The approval requests after this cycle's decisions (None: no action waits for
    anybody)."""
    progress: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """Workload -> (step, newest checkpoint's step): what follow-ups confirm moves by."""
    pending: tuple[PendingGpuPod, ...] = ()
    budgets: tuple[BudgetStatus, ...] = ()
    """Each budget's month so far and projection (none without a budget rule)."""
    notes: tuple[DataQualityNote, ...] = ()
    errors: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.errors

    def findings_since(self) -> dict[str, datetime]:
        """The state to remember: since when each finding has fired without a break."""
        return {f.key: f.since for f in self.findings}

    def gpu_prices(self) -> dict[tuple[str, str], Price]:
        """(node, GPU UUID) -> the price of one of its GPU-hours, from the cost lines."""
        prices: dict[tuple[str, str], Price] = {}
        for line in self.cost.lines if self.cost is not None else ():
            if line.price is not None:
                prices.setdefault((line.node, line.gpu_uuid or ""), line.price)
        return prices


def analyse(
    gathered: Gathered, rules: tuple[Rule, ...], book: PriceBook, settings: Settings
) -> Analysis:
    """The meaning of ``gathered``. Without both the metrics and the cluster nothing is
    judged: a finding does not "resolve" because Prometheus was down."""
    stats, cluster, at = gathered.stats, gathered.cluster, gathered.at
    if stats is None or cluster is None:
        return Analysis(at, gathered.source, notes=gathered.notes, errors=gathered.errors)
    notes = list(gathered.notes)
    notes.extend(
        DataQualityNote(kind="rules", message=f"no enabled rule has role {role}: no {what}")
        for role, what in OPTIONAL_ROLES.items()
        if rule_for(rules, role) is None
    )
    actions_settings = settings.actions
    notes.extend(
        notes_for(
            cluster,
            (actions_settings.migration.opt_in_annotation, actions_settings.reclaimable_annotation),
        )
    )
    attribution = attribute(stats.devices, cluster, settings.attribution, at, lookback_s(rules))
    evaluation = evaluate(
        rules,
        stats,
        attribution.contexts,
        gathered.state.findings_since,
        series=gathered.series,
    )
    notes.extend(attribution.notes)
    notes.extend(evaluation.notes)
    if gathered.node_prices:
        book = book.with_node_prices(gathered.node_prices)
    contexts, partitioned, mig_notes = with_gpu_fractions(attribution.contexts, book)
    notes.extend(mig_notes)
    cost = allocate_cost(
        contexts,
        stats.get(util_avg(settings)),
        cluster.pods,
        book,
        at,
        settings.cost.window_s,
        partitioned,
    )
    budgets = _budgets(gathered, rules, contexts, cost, settings)
    findings = evaluation.findings + tuple(
        budget_findings(limits, budgets) if (limits := _limits(rules)) else ()
    )
    idle = rule_for(rules, Role.IDLE)
    savings = compute_savings(
        SavingsInputs(
            at=at,
            contexts=contexts,
            cluster=cluster,
            book=book,
            findings=evaluation.findings,
            settings=settings.savings,
            use=hourly_use(
                gathered.history,
                contexts,
                {p.key: p for p in cluster.pods},
                settings.savings.lookback_s,
            ),
            fb_total_mib=stats.get(fb_total_max(settings)),
            actions=settings.actions,
            idle_threshold=float(getattr(idle, "threshold", IDLE_THRESHOLD)),
        )
    )
    owners = OwnerIndex(cluster.controllers)
    checkpoint_times = _per_workload(gathered.checkpoint_times, cluster, owners)
    progress = _per_workload(gathered.progress, cluster, owners)
    dry_run = not gathered.writable
    freshness = _freshness(gathered, stats, rules, settings)
    actions = plan_scale_down(
        ScaleDownInputs(
            at,
            contexts,
            cluster,
            evaluation.findings,
            settings.actions,
            dry_run=dry_run,
            kill_switch_on=gathered.kill_switch_on,
            freshness=freshness,
        )
    ) + plan_migrations(
        MigrationInputs(
            at,
            savings.savings,
            contexts,
            cluster,
            settings.actions,
            settings.attribution.pool_label,
            dry_run=dry_run,
            kill_switch_on=gathered.kill_switch_on,
            checkpoint_times=checkpoint_times,
            progress=progress,
            freshness=freshness,
            book=book,
        )
    )
    admission = None
    if gathered.approval.active or gathered.state.approvals:
        admission = admit(
            ApprovalInputs(
                at,
                actions,
                gathered.state.approvals,
                gathered.answers.decisions,
                gathered.approval,
                gathered.answers.members,
                savings=saving_words(actions, savings.savings),
            )
        )
        actions = list(admission.actions)
    if not settings.dry_run and not gathered.writable and actions:
        notes.append(
            DataQualityNote(
                kind="actions",
                message=f"dry_run is off, but the {gathered.source.cluster} cluster source "
                "cannot be acted on: nothing was written",
            )
        )
    namespace_labels = {ns.name: ns.labels for ns in cluster.namespaces}
    pending = tuple(
        PendingGpuPod(
            pod.namespace,
            pod.name,
            owners.workload_of(pod),
            team_of(pod, settings.attribution.team_label, namespace_labels),
            gpu_share(pod.requests),
        )
        for pod in attribution.pending_gpu_pods
    )
    placed = sum(1 for c in attribution.contexts if c.node is not None)
    return Analysis(
        at=at,
        source=replace(gathered.source, gpus_in_cluster=placed),
        contexts=contexts,
        findings=findings,
        cost=cost,
        savings=savings,
        actions=tuple(actions),
        admission=admission,
        progress=progress,
        pending=pending,
        budgets=budgets,
        notes=tuple(notes),
    )


def _limits(rules: tuple[Rule, ...]) -> BudgetLimits | None:
    rule = next((r for r in rules if r.enabled and isinstance(r, BudgetRule)), None)
    if rule is None:
        return None
    return BudgetLimits(
        rule.id, rule.severity, tuple(rule.spent_ratios), rule.projected_ratio, rule.window_s
    )


def _budgets(
    gathered: Gathered,
    rules: tuple[Rule, ...],
    contexts: tuple[GpuContext, ...],
    cost: CostReport,
    settings: Settings,
) -> tuple[BudgetStatus, ...]:
    """Every budget's month so far, priced as the cycle's cost lines price each GPU."""
    rule = next((r for r in rules if r.enabled and isinstance(r, BudgetRule)), None)
    if rule is None or gathered.month is None or gathered.cluster is None:
        return ()
    frame, holders, recorded = gathered.month
    use = month_use(frame, holders, contexts, gathered.cluster, settings.attribution.team_label)
    by_gpu = {(line.node, line.gpu_uuid or ""): line.price for line in cost.lines if line.price}
    prices = prices_of(contexts, by_gpu)
    zone = settings.budgets.time_zone
    return tuple(
        budget_status(
            b, use, contexts, prices, gathered.at, rule.window_s, zone, rule.top_workloads, recorded
        )
        for b in settings.budgets.to_domain()
    )


def _freshness(
    gathered: Gathered, stats: WindowStats, rules: tuple[Rule, ...], settings: Settings
) -> Freshness | None:
    """Whether the data is live, by the clock read when it was gathered (None when the
    clock was not read: a read-only analysis writes nothing)."""
    if gathered.clock_at is None:
        return None
    gap = rule_for(rules, Role.DATA_GAP)
    newest = stats.get(NEWEST_SAMPLE)
    return Freshness(
        at=gathered.at,
        clock=gathered.clock_at,
        max_data_age_s=settings.actions.max_data_age_s,
        stale_after_s=getattr(gap, "stale_after_s", DEFAULT_STALE_AFTER_S),
        newest_s={d.device_id: float(t) for d, t in zip(stats.devices, newest, strict=True)},
    )


def _per_workload(
    by_pod: Mapping[PodKey, T], cluster: ClusterState, owners: OwnerIndex
) -> dict[str, T]:
    """Pod figures rolled up to their workloads, keeping the smallest: a job is only as
    fresh (or as far along) as its least advanced worker."""
    rolled: dict[str, T] = {}
    for pod in cluster.pods:
        seen = by_pod.get(pod.key)
        workload = owners.workload_of(pod)
        if seen is not None and workload is not None:
            rolled[workload] = min(rolled.get(workload, seen), seen)  # type: ignore[type-var]
    return rolled
