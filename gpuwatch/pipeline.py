"""One cycle: read sources, analyse, compose messages, deliver, remember.

Everything up to delivery is a pure function of (window stats, cluster state, rules,
state, at); the effects (messages, state) are recorded in the result whether they
succeed or not. A source failure never raises out of here: it is recorded, the cycle
takes no action, and ``result.ok`` is False so that the command exits non-zero.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from gpuwatch.actions.migration import MigrationInputs, plan_migrations
from gpuwatch.actions.scale_down import ScaleDownInputs, plan_scale_down
from gpuwatch.analysis.attribution import Attribution, attribute
from gpuwatch.analysis.cost import allocate_cost
from gpuwatch.analysis.ownership import OwnerIndex, team_of
from gpuwatch.analysis.pricing import PriceBook
from gpuwatch.analysis.rules.evaluate import evaluate, lookback_s, required_specs
from gpuwatch.analysis.rules.schema import Rule
from gpuwatch.analysis.savings import SavingsInputs, SavingsResult, compute_savings
from gpuwatch.analysis.savings.overlap import totals
from gpuwatch.config.settings import Settings, Silence
from gpuwatch.model.actions import Action, ActionStatus
from gpuwatch.model.alerts import RulePolicy
from gpuwatch.model.cluster import ClusterState, gpu_share
from gpuwatch.model.cost import CostReport, Price
from gpuwatch.model.errors import SourceError, StateError
from gpuwatch.model.findings import DataQualityNote, Finding, PendingGpuPod
from gpuwatch.model.metrics import (
    Aggregate,
    AggregateSpec,
    HistoryRequest,
    Signal,
    WindowRequest,
    WindowStats,
)
from gpuwatch.model.result import AlertSummary, CycleResult, Notification, SourceInfo
from gpuwatch.model.state import CycleState
from gpuwatch.notify.base import Notifier
from gpuwatch.notify.lifecycle import notify_cycle
from gpuwatch.notify.outbox import flush_outbox
from gpuwatch.sources.base import ClusterSource, MetricsSource
from gpuwatch.state.base import StateStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class Actuator(Protocol):
    name: str

    def exclusive(self) -> bool: ...

    def kill_switch_on(self, reference: str) -> bool: ...

    def apply(self, action: Action) -> Action: ...

    def follow_up(
        self, deadline_s: float, progress: Mapping[str, tuple[int, int]]
    ) -> list[Action]: ...


class Checkpoints(Protocol):
    name: str

    def last_checkpoints(self, at: datetime) -> Mapping[tuple[str, str], datetime]: ...

    def progress(self, at: datetime) -> Mapping[tuple[str, str], tuple[int, int]]: ...


class Silences(Protocol):
    name: str

    def silences(self, at: datetime) -> list[Silence]:
        """Silences active at ``at``; raises SourceError when they cannot be read."""
        ...


class NodePrices(Protocol):
    name: str

    def node_prices(self, at: datetime) -> Mapping[str, Price]: ...


@dataclass(frozen=True)
class Components:
    """The concrete adapters of one run, built in one place (``gpuwatch.wiring``)."""

    metrics: MetricsSource
    cluster: ClusterSource
    rules: tuple[Rule, ...]
    state: StateStore
    notifier: Notifier
    price_book: PriceBook
    node_prices: NodePrices | None = None
    """Measured per-node prices (OpenCost), replacing the book where present."""
    actuator: Actuator | None = None
    """Writes actions to the cluster; None where there is no cluster to act on."""
    checkpoints: Checkpoints | None = None
    """When training jobs last checkpointed (their metric), where it is scraped."""
    silences: Silences | None = None
    """Silences kept in the cluster (a ConfigMap), besides those in the settings."""


def cost_specs(settings: Settings) -> frozenset[AggregateSpec]:
    """Aggregates that pricing and the savings calculations need besides the rules'."""
    sharing = settings.savings.sharing.window_s
    return frozenset(
        {
            _util_avg(settings),
            AggregateSpec(Signal.UTIL_RATIO, Aggregate.P95, sharing),
            AggregateSpec(Signal.FB_USED_RATIO, Aggregate.MAX, sharing),
            AggregateSpec(Signal.FB_TOTAL_MIB, Aggregate.MAX, sharing),
        }
    )


def _util_avg(settings: Settings) -> AggregateSpec:
    return AggregateSpec(Signal.UTIL_RATIO, Aggregate.AVG, settings.cost.window_s)


def _savings(
    components: Components,
    book: PriceBook,
    settings: Settings,
    at: datetime,
    stats: WindowStats,
    cluster: ClusterState,
    attribution: Attribution,
    findings: Sequence[Finding],
    notes: list[DataQualityNote],
) -> SavingsResult:
    window = settings.savings.reserved.window_s
    attached = AggregateSpec(Signal.POD_ATTACHED, Aggregate.MAX, 3600)
    history = None
    try:
        history = components.metrics.history(
            HistoryRequest(at - timedelta(seconds=window), at, 3600, frozenset({attached}))
        )
    except SourceError as exc:
        notes.append(DataQualityNote(kind="history", message=f"no reserved-capacity saving: {exc}"))
    sharing = settings.savings.sharing.window_s
    return compute_savings(
        SavingsInputs(
            at=at,
            contexts=attribution.contexts,
            cluster=cluster,
            book=book,
            findings=findings,
            settings=settings.savings,
            util_p95=stats.get(AggregateSpec(Signal.UTIL_RATIO, Aggregate.P95, sharing)),
            fb_used_max_ratio=stats.get(
                AggregateSpec(Signal.FB_USED_RATIO, Aggregate.MAX, sharing)
            ),
            fb_total_mib=stats.get(AggregateSpec(Signal.FB_TOTAL_MIB, Aggregate.MAX, sharing)),
            attached_hourly=history,
        )
    )


def _act(
    components: Components,
    settings: Settings,
    at: datetime,
    attribution: Attribution,
    cluster: ClusterState,
    findings: Sequence[Finding],
    savings: SavingsResult,
    notes: list[DataQualityNote],
) -> list[Action]:
    """Plan, and where writes are allowed, carry out. Dry run unless configured otherwise;
    the kill switch is read every cycle before anything is written."""
    actuator = components.actuator if not settings.dry_run else None
    checkpoint_times, progress = _training(components, cluster, at, notes)
    kill_switch_on = actuator is not None and actuator.kill_switch_on(settings.actions.kill_switch)
    planned = plan_scale_down(
        ScaleDownInputs(
            at,
            attribution.contexts,
            cluster,
            findings,
            settings.actions,
            dry_run=actuator is None,
            kill_switch_on=kill_switch_on,
        )
    )
    planned += plan_migrations(
        MigrationInputs(
            at,
            savings.savings,
            attribution.contexts,
            cluster,
            settings.actions,
            settings.attribution.pool_label,
            dry_run=actuator is None,
            kill_switch_on=kill_switch_on,
            checkpoint_times=checkpoint_times,
            progress=progress,
        )
    )
    if not settings.dry_run and actuator is None and planned:
        notes.append(
            DataQualityNote(
                kind="actions",
                message=f"dry_run is off, but the {components.cluster.name} cluster source "
                "cannot be acted on: nothing was written",
            )
        )
    if actuator is None:
        return planned
    if not actuator.exclusive():
        reason = "another gpuwatch instance holds the actions lease"
        return [
            replace(a, status=ActionStatus.REFUSED, reason=reason)
            if a.status is ActionStatus.PLANNED
            else a
            for a in planned
        ]
    # Migrations started in earlier cycles are confirmed, or moved back, first.
    followed = actuator.follow_up(settings.actions.migration.spot_deadline_s, progress)
    return followed + [actuator.apply(action) for action in planned]


def _training(
    components: Components, cluster: ClusterState, at: datetime, notes: list[DataQualityNote]
) -> tuple[dict[str, datetime], dict[str, tuple[int, int]]]:
    """Per workload, from the training jobs' own metrics: the newest checkpoint's time, and
    (step, newest checkpoint's step). Each is the least advanced of the job's pods: a job
    is only as fresh as its least fresh worker."""
    if components.checkpoints is None:
        return {}, {}
    try:
        times = components.checkpoints.last_checkpoints(at)
        progress = components.checkpoints.progress(at)
    except SourceError as exc:
        notes.append(DataQualityNote(kind="checkpoints", message=f"training metrics: {exc}"))
        return {}, {}
    owners = OwnerIndex(cluster.controllers)
    return _per_workload(times, cluster, owners), _per_workload(progress, cluster, owners)


def _per_workload(
    by_pod: Mapping[tuple[str, str], T], cluster: ClusterState, owners: OwnerIndex
) -> dict[str, T]:
    """Pod figures rolled up to their workloads, keeping the smallest."""
    rolled: dict[str, T] = {}
    for pod in cluster.pods:
        seen = by_pod.get(pod.key)
        workload = owners.workload_of(pod)
        if seen is not None and workload is not None:
            rolled[workload] = min(rolled.get(workload, seen), seen)  # type: ignore[type-var]
    return rolled


def run_cycle(components: Components, settings: Settings, at: datetime) -> CycleResult:
    started = time.monotonic()
    notes: list[DataQualityNote] = []
    errors: list[str] = []
    rules = components.rules

    # Without the state, people's messages cannot be told from new ones: a state that is
    # still there but could not be read silences this cycle rather than repeat them all.
    state_readable = True
    try:
        state = components.state.load()
    except StateError as exc:
        log.warning("%s", exc)
        notes.append(DataQualityNote(kind="state", message=str(exc)))
        state = CycleState()
        state_readable = exc.set_aside

    stats: WindowStats | None = None
    cluster: ClusterState | None = None
    try:
        specs = required_specs(rules) | cost_specs(settings)
        stats = components.metrics.window_stats(WindowRequest(at, specs))
    except SourceError as exc:
        errors.append(f"metrics ({components.metrics.name}, {exc.kind}): {exc}")
    try:
        cluster = components.cluster.snapshot(at)
    except SourceError as exc:
        errors.append(f"cluster ({components.cluster.name}, {exc.kind}): {exc}")

    source = SourceInfo(
        metrics=components.metrics.name,
        cluster=components.cluster.name,
        gpus_in_metrics=len(stats.devices) if stats else 0,
        gpus_in_cluster=0,
        nodes=len(cluster.nodes) if cluster else 0,
        pods=len(cluster.pods) if cluster else 0,
    )
    if stats is None or cluster is None:
        # Without both halves nothing can be judged fairly: record, keep the state as it
        # was (a finding does not "resolve" because Prometheus was down), act on nothing.
        # Messages already owed (the outbox) are still delivered.
        for error in errors:
            log.error("%s", error)
        outcome = flush_outbox(state, components.notifier, at, settings.notify.policy())
        notes.extend(outcome.notes)
        if outcome.notifications:
            _save(components, state, notes)
        return CycleResult(
            at=at,
            cluster_name=settings.cluster.name,
            source=source,
            data_quality=tuple(notes),
            notifications=tuple(outcome.notifications),
            alerts=AlertSummary(outbox=len(state.outbox)),
            errors=tuple(errors),
            dry_run=settings.dry_run,
            duration_s=time.monotonic() - started,
        )

    attribution = attribute(stats.devices, cluster, settings.attribution, at, lookback_s(rules))
    evaluation = evaluate(rules, stats, attribution.contexts, state.findings_since)
    notes.extend(attribution.notes)
    notes.extend(evaluation.notes)

    book = components.price_book
    if components.node_prices is not None:
        try:
            book = book.with_node_prices(components.node_prices.node_prices(at))
        except SourceError as exc:
            notes.append(DataQualityNote(kind="prices", message=f"OpenCost prices: {exc}"))
    cost = allocate_cost(
        attribution.contexts,
        stats.get(_util_avg(settings)),
        cluster.pods,
        book,
        at,
        settings.cost.window_s,
    )
    savings = _savings(
        components, book, settings, at, stats, cluster, attribution, evaluation.findings, notes
    )

    actions = _act(
        components, settings, at, attribution, cluster, evaluation.findings, savings, notes
    )

    new_state = CycleState(
        findings_since={f.key: f.since for f in evaluation.findings}, last_cycle_at=at
    )
    if state_readable:
        delivered, summary = _notify(
            components, settings, at, evaluation.findings, actions, cost, state, new_state, notes
        )
        _save(components, new_state, notes)
    else:
        delivered, summary = (), AlertSummary()
        notes.append(
            DataQualityNote(
                kind="notify",
                message="no messages sent and no state saved: the state could not be read",
            )
        )

    gpus_in_cluster = sum(1 for c in attribution.contexts if c.node is not None)
    owners = OwnerIndex(cluster.controllers)
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
    return CycleResult(
        at=at,
        cluster_name=settings.cluster.name,
        source=SourceInfo(**{**source.__dict__, "gpus_in_cluster": gpus_in_cluster}),
        findings=evaluation.findings,
        data_quality=tuple(notes),
        notifications=delivered,
        alerts=summary,
        pending_gpu_pods=pending,
        cost=cost,
        savings=savings.savings,
        savings_excluded=savings.excluded,
        savings_totals=totals(savings.savings),
        actions=tuple(actions),
        dry_run=settings.dry_run,
        duration_s=time.monotonic() - started,
    )


def _notify(
    components: Components,
    settings: Settings,
    at: datetime,
    findings: Sequence[Finding],
    actions: Sequence[Action],
    cost: CostReport,
    state: CycleState,
    new_state: CycleState,
    notes: list[DataQualityNote],
) -> tuple[tuple[Notification, ...], AlertSummary]:
    """Tell people what changed; record in ``new_state`` what they were told. Runs after
    the actions, so that a chat service that is down never holds them up."""
    rules = components.rules
    policy = RulePolicy(
        titles={rule.id: rule.title or rule.id for rule in rules},
        hold_s={rule.id: rule.for_s for rule in rules if rule.for_s},
        waste=frozenset(rule.id for rule in rules if rule.waste),
    )
    silences = list(settings.notify.silences)
    silences_unknown = False
    if components.silences is not None:
        try:
            silences += components.silences.silences(at)
        except SourceError as exc:
            silences_unknown = True
            notes.append(DataQualityNote(kind="silences", message=f"{exc}; no new group is posted"))
    told = notify_cycle(
        findings,
        actions,
        state,
        components.notifier,
        at,
        settings.notify.policy(),
        policy,
        [silence.to_domain() for silence in silences],
        gpu_prices(cost),
        settings.dry_run,
        hold_new=silences_unknown,
    )
    new_state.alerts = told.state.alerts
    new_state.outbox = told.state.outbox
    new_state.reported_actions = told.state.reported_actions
    notes.extend(told.notes)
    return tuple(told.notifications), told.summary


def gpu_prices(cost: CostReport) -> dict[tuple[str, str], Price]:
    """(node, GPU UUID) -> the price of one of its GPU-hours, from the cost lines."""
    prices: dict[tuple[str, str], Price] = {}
    for line in cost.lines:
        if line.price is not None:
            prices.setdefault((line.node, line.gpu_uuid or ""), line.price)
    return prices


def _save(components: Components, state: CycleState, notes: list[DataQualityNote]) -> None:
    try:
        components.state.save(state)
    except (OSError, StateError) as exc:
        notes.append(DataQualityNote(kind="state", message=f"state not saved: {exc}"))
