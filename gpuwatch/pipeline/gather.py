"""The first phase of a cycle: every read, and nothing else.

Whatever a cycle needs from outside (the state it left, the metrics, the cluster, the
hourly history the savings look back over, measured prices, training jobs' progress,
silences kept in the cluster, the kill switch) is read here, into one frozen
``Gathered``. A source that fails becomes an error or a note on it, never an exception:
the analysis decides what can still be judged, and the effects what may still be done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TypeVar

import numpy as np

from gpuwatch.analysis.budgets import month_bounds
from gpuwatch.analysis.rules.evaluate import required_specs, series_request
from gpuwatch.analysis.rules.schema import BudgetRule
from gpuwatch.analysis.savings.use import ATTACHED_HOURLY, HOUR_S, UTIL_HOURLY
from gpuwatch.analysis.savings.use import SPECS as SAVINGS_SPECS
from gpuwatch.config.sections.approval import approval_policy
from gpuwatch.config.settings import Settings, Silence
from gpuwatch.model.approvals import ApprovalPolicy
from gpuwatch.model.budgets import RecordedSpend
from gpuwatch.model.cluster import ClusterState
from gpuwatch.model.cost import Price
from gpuwatch.model.errors import SourceError, StateError
from gpuwatch.model.findings import DataQualityNote
from gpuwatch.model.metrics import (
    HistoryFrame,
    HistoryRequest,
    HolderHistory,
    WindowRequest,
    WindowStats,
)
from gpuwatch.model.result import SourceInfo
from gpuwatch.model.state import CycleState
from gpuwatch.notify.base import Answers, Asked
from gpuwatch.pipeline.components import Components
from gpuwatch.pipeline.specs import cost_specs
from gpuwatch.sources.base import PodKey
from gpuwatch.state.base import StateStore

log = logging.getLogger(__name__)
MONTH_SPECS = frozenset({UTIL_HOURLY, ATTACHED_HOURLY})
"""What budgets read of every hour of the month: whether it had samples (the mean
utilization's presence) and whether a pod held it; the holders come apart."""
T = TypeVar("T")


@dataclass(frozen=True)
class Gathered:
    """What one cycle read, as of ``at``."""

    at: datetime
    source: SourceInfo
    stats: WindowStats | None = None
    """None when the metrics could not be read (then ``errors`` says why)."""
    cluster: ClusterState | None = None
    """None when the cluster could not be read."""
    history: HistoryFrame | None = None
    """Every GPU's hours over the savings lookback; None when unread."""
    series: HistoryFrame | None = None
    """The recent samples forecast rules fit lines through; None without such a rule,
    or when unread (then those rules judge no GPU, and a note says so)."""
    month: tuple[HistoryFrame, HolderHistory, RecordedSpend | None] | None = None
    """The month so far, hourly, who held each GPU in each hour, and the spend the
    report's dataset recorded for the hours the metrics lack: what budgets are judged
    on. None without budgets and a budget rule, or when unread."""
    node_prices: Mapping[str, Price] = field(default_factory=dict)
    checkpoint_times: Mapping[PodKey, datetime] = field(default_factory=dict)
    progress: Mapping[PodKey, tuple[int, int]] = field(default_factory=dict)
    state: CycleState = field(default_factory=CycleState)
    state_readable: bool = True
    """False when a state exists but could not be read: the effects then send nothing
    and save nothing, rather than repeat every message people were already sent."""
    silences: tuple[Silence, ...] = ()
    """Silences kept in the cluster, active at ``at``."""
    silences_unknown: bool = False
    """The cluster's silences could not be read: no new group is posted."""
    writable: bool = False
    """Writes are asked for (no dry run) and there is an actuator to make them."""
    kill_switch_on: bool = False
    """The kill switch read this cycle; False when it was not or could not be read."""
    clock_at: datetime | None = None
    """The wall clock when the data was read; None for a read-only analysis."""
    approval: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    """Which actions wait for a person (``actions.approval``), and how people answer."""
    answers: Answers = field(default_factory=Answers)
    """What people said in Slack since the last cycle (decisions, snoozes)."""
    errors: tuple[str, ...] = ()
    notes: tuple[DataQualityNote, ...] = ()

    @property
    def complete(self) -> bool:
        """Both halves are there: the cycle can judge and act."""
        return self.stats is not None and self.cluster is not None


def gather(
    components: Components, settings: Settings, at: datetime, *, for_effects: bool = True
) -> Gathered:
    """Read everything a cycle at ``at`` needs. ``for_effects=False`` skips what only
    the effects use (the state, silences, the kill switch) and plans as a dry run, for
    a read-only analysis such as the weekly report's savings."""
    state, state_readable, state_note = (
        _state(components.state) if for_effects else (CycleState(), True, None)
    )
    stats, metrics_error = _required(
        "metrics",
        components.metrics.name,
        lambda: components.metrics.window_stats(
            WindowRequest(at, required_specs(components.rules) | cost_specs(settings))
        ),
    )
    cluster, cluster_error = _required(
        "cluster", components.cluster.name, lambda: components.cluster.snapshot(at)
    )
    if stats is not None and cluster is not None and stats.devices and not cluster.nodes:
        # Judging these GPUs against an empty cluster would put every one on an unknown
        # node: the wrong cluster, or credentials that may not list nodes.
        cluster_error = (
            f"cluster ({components.cluster.name}, empty): it has no nodes while the metrics "
            f"show {len(stats.devices)} GPUs; check that it is the cluster the metrics come "
            "from and that gpuwatch may list its nodes"
        )
        log.error("%s", cluster_error)
        cluster = None
    gathered = Gathered(
        at=at,
        source=SourceInfo(
            metrics=components.metrics.name,
            cluster=components.cluster.name,
            gpus_in_metrics=len(stats.devices) if stats else 0,
            gpus_in_cluster=0,
            nodes=len(cluster.nodes) if cluster else 0,
            pods=len(cluster.pods) if cluster else 0,
            price_book=components.price_book.path,
            prices_are_examples=components.price_book.is_example,
        ),
        stats=stats,
        cluster=cluster,
        state=state,
        state_readable=state_readable,
        writable=for_effects and not settings.dry_run and components.actuator is not None,
        clock_at=components.clock() if for_effects else None,
        errors=tuple(e for e in (metrics_error, cluster_error) if e),
        notes=tuple(n for n in (state_note,) if n),
    )
    if not gathered.complete:
        return gathered  # nothing will be judged: reading more would only cost time
    return _with_optional_reads(gathered, components, settings, for_effects)


def _with_optional_reads(
    gathered: Gathered, components: Components, settings: Settings, for_effects: bool
) -> Gathered:
    """``gathered`` with the reads a cycle can do without: each that fails is a note."""
    at = gathered.at
    # The recent series before the week: a source that keeps its newest samples from the
    # window statistics (the simulator, a samples file) still has them, and the week's
    # history, read from the newest, then starts where they end.
    recent = series_request(components.rules, at)
    series, series_note = _optional(
        "series",
        "no forecast this cycle",
        lambda: components.metrics.history(recent) if recent else None,
    )
    window = timedelta(seconds=settings.savings.lookback_s)
    hourly = HistoryRequest(at - window, at, HOUR_S, SAVINGS_SPECS)
    history, history_note = _optional(
        "history",
        "savings measured on no history (none counted)",
        lambda: components.metrics.history(hourly),
    )
    month, month_note = _optional(
        "budgets", "no budget judged this cycle", lambda: _month(components, settings, at)
    )
    prices = components.node_prices
    node_prices, prices_note = _optional(
        "prices", "OpenCost prices", lambda: prices.node_prices(at) if prices else {}
    )
    training = components.checkpoints
    both, training_note = _optional(
        "checkpoints",
        "training metrics",
        lambda: (training.last_checkpoints(at), training.progress(at)) if training else ({}, {}),
    )
    silences_source = components.silences if for_effects else None
    silences, silences_note = _optional(
        "silences",
        "no new group is posted",
        lambda: silences_source.silences(at) if silences_source else (),
        after=True,
    )
    actuator = components.actuator
    switch = (
        actuator.kill_switch(settings.actions.kill_switch)
        if gathered.writable and actuator is not None
        else None
    )
    switch_note = (
        DataQualityNote(kind="actions", message=switch.note)
        if switch is not None and switch.note
        else None
    )
    times, progress = both if both is not None else ({}, {})
    notes = (
        history_note,
        series_note,
        month_note,
        prices_note,
        training_note,
        silences_note,
        switch_note,
    )
    policy, answers = _answers(gathered, components, settings, for_effects)
    return replace(
        gathered,
        history=history,
        series=series,
        month=month,
        node_prices=node_prices or {},
        checkpoint_times=times,
        progress=progress,
        silences=tuple(silences or ()),
        silences_unknown=silences_note is not None,
        kill_switch_on=switch is not None and switch.on,
        approval=policy,
        answers=answers,
        notes=(
            *gathered.notes,
            *(n for n in notes if n),
            *(DataQualityNote(kind="approval", message=e) for e in answers.errors),
        ),
    )


def _answers(
    gathered: Gathered, components: Components, settings: Settings, for_effects: bool
) -> tuple[ApprovalPolicy, Answers]:
    """The approval policy, and what people said: decisions on the open requests and
    snoozes (none for a read-only analysis, or without an approval source)."""
    source = components.approvals if for_effects else None
    policy = approval_policy(
        settings.actions.approval,
        settings.actions.pools,
        settings.notify.channel,
        interactive=source is not None and source.interactive,
    )
    if source is None:
        return policy, Answers()
    open_requests = [r for r in gathered.state.approvals.values() if r.open]
    owners = settings.notify.slack.interactivity.owners().values()
    owner_groups = frozenset(g for o in owners for g in o.groups)
    return policy, source.read(Asked(open_requests, policy, gathered.at, owner_groups))


def _month(
    components: Components, settings: Settings, at: datetime
) -> tuple[HistoryFrame, HolderHistory, RecordedSpend | None] | None:
    """The month's hours so far, when a budget is set and an enabled rule judges it:
    two range queries of at most 744 hourly points a GPU, and the report's dataset when
    the metrics lack some of the month's hours."""
    judged = any(isinstance(r, BudgetRule) and r.enabled for r in components.rules)
    if not (judged and settings.budgets.monthly):
        return None
    start, _ = month_bounds(at, settings.budgets.time_zone)
    hours = int((at - start).total_seconds() // HOUR_S)
    if hours <= 0:
        return None
    end = start + timedelta(seconds=hours * HOUR_S)
    request = HistoryRequest(start, end, HOUR_S, MONTH_SPECS)
    frame = components.metrics.history(request)
    holders = components.metrics.holders(request)
    util = frame.values.get(UTIL_HOURLY)
    measured = int(np.any(~np.isnan(util), axis=0).sum()) if util is not None and util.size else 0
    recorded = None
    if components.recorded is not None and measured < hours:
        recorded = components.recorded.recorded_spend(start, end)
    return frame, holders, recorded


def _state(store: StateStore) -> tuple[CycleState, bool, DataQualityNote | None]:
    """The state the last cycle left, whether it could be read, and why not. Without it,
    people's messages cannot be told from new ones: a state that is still there but
    could not be read silences this cycle rather than repeat them all; one that was
    unreadable and set aside starts afresh."""
    try:
        return store.load(), True, None
    except StateError as exc:
        log.warning("%s", exc)
        return CycleState(), exc.set_aside, DataQualityNote(kind="state", message=str(exc))


def _required(what: str, name: str, read: Callable[[], T]) -> tuple[T | None, str | None]:
    """A read the cycle cannot judge without: its value, or the error that says why not."""
    try:
        return read(), None
    except SourceError as exc:
        error = f"{what} ({name}, {exc.kind}): {exc}"
        log.error("%s", error)
        return None, error


def _optional(
    kind: str, context: str, read: Callable[[], T], *, after: bool = False
) -> tuple[T | None, DataQualityNote | None]:
    """A read the cycle can do without: its value, or the note that says what is missing
    (``context: error``, or ``error; context`` when ``after``)."""
    try:
        return read(), None
    except SourceError as exc:
        message = f"{exc}; {context}" if after else f"{context}: {exc}"
        return None, DataQualityNote(kind=kind, message=message)
