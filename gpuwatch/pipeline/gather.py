"""The first phase of a cycle: every read, and nothing else.

Whatever a cycle needs from outside (the state it left, the metrics, the cluster, the
hourly history the savings look back over, measured prices, training jobs' progress,
silences kept in the cluster, the kill switch) is read here, into one frozen
``Gathered``. A source that fails becomes an error or a note on it, never an exception:
the analysis decides what can still be judged, and the effects what may still be done.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from gpuwatch.analysis.rules.evaluate import required_specs
from gpuwatch.config.settings import Settings, Silence
from gpuwatch.model.cluster import ClusterState
from gpuwatch.model.cost import Price
from gpuwatch.model.errors import SourceError, StateError
from gpuwatch.model.findings import DataQualityNote
from gpuwatch.model.metrics import HistoryFrame, HistoryRequest, WindowRequest, WindowStats
from gpuwatch.model.result import SourceInfo
from gpuwatch.model.state import CycleState
from gpuwatch.pipeline.components import Components
from gpuwatch.pipeline.specs import ATTACHED_HOURLY, HOUR_S, cost_specs
from gpuwatch.sources.base import PodKey

log = logging.getLogger(__name__)


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
    """Hourly attachment over the reserved-capacity window; None when unread."""
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
    notes: list[DataQualityNote] = []
    errors: list[str] = []
    state, state_readable = _state(components, notes) if for_effects else (CycleState(), True)
    stats: WindowStats | None = None
    cluster: ClusterState | None = None
    try:
        specs = required_specs(components.rules) | cost_specs(settings)
        stats = components.metrics.window_stats(WindowRequest(at, specs))
    except SourceError as exc:
        errors.append(f"metrics ({components.metrics.name}, {exc.kind}): {exc}")
    try:
        cluster = components.cluster.snapshot(at)
    except SourceError as exc:
        errors.append(f"cluster ({components.cluster.name}, {exc.kind}): {exc}")
    for error in errors:
        log.error("%s", error)
    source = SourceInfo(
        metrics=components.metrics.name,
        cluster=components.cluster.name,
        gpus_in_metrics=len(stats.devices) if stats else 0,
        gpus_in_cluster=0,
        nodes=len(cluster.nodes) if cluster else 0,
        pods=len(cluster.pods) if cluster else 0,
    )
    gathered = Gathered(
        at=at,
        source=source,
        stats=stats,
        cluster=cluster,
        state=state,
        state_readable=state_readable,
        writable=for_effects and not settings.dry_run and components.actuator is not None,
        errors=tuple(errors),
    )
    if not gathered.complete:
        # Nothing will be judged: reading more would only cost time.
        return _with(gathered, notes)
    history = _history(components, settings, at, notes)
    node_prices = _node_prices(components, at, notes)
    times, progress = _training(components, at, notes)
    silences, unknown = _silences(components, at, notes) if for_effects else ((), False)
    kill_switch = (
        components.actuator.kill_switch_on(settings.actions.kill_switch)
        if gathered.writable and components.actuator is not None
        else False
    )
    return _with(
        gathered,
        notes,
        history=history,
        node_prices=node_prices,
        checkpoint_times=times,
        progress=progress,
        silences=tuple(silences),
        silences_unknown=unknown,
        kill_switch_on=kill_switch,
    )


def _with(gathered: Gathered, notes: Sequence[DataQualityNote], **more: object) -> Gathered:
    return replace(gathered, notes=(*gathered.notes, *notes), **more)  # type: ignore[arg-type]


def _state(components: Components, notes: list[DataQualityNote]) -> tuple[CycleState, bool]:
    """The state the last cycle left. Without it, people's messages cannot be told from
    new ones: a state that is still there but could not be read silences this cycle
    rather than repeat them all; one that was unreadable and set aside starts afresh."""
    try:
        return components.state.load(), True
    except StateError as exc:
        log.warning("%s", exc)
        notes.append(DataQualityNote(kind="state", message=str(exc)))
        return CycleState(), exc.set_aside


def _history(
    components: Components, settings: Settings, at: datetime, notes: list[DataQualityNote]
) -> HistoryFrame | None:
    window = settings.savings.reserved.window_s
    request = HistoryRequest(
        at - timedelta(seconds=window), at, HOUR_S, frozenset({ATTACHED_HOURLY})
    )
    try:
        return components.metrics.history(request)
    except SourceError as exc:
        notes.append(DataQualityNote(kind="history", message=f"no reserved-capacity saving: {exc}"))
        return None


def _node_prices(
    components: Components, at: datetime, notes: list[DataQualityNote]
) -> Mapping[str, Price]:
    if components.node_prices is None:
        return {}
    try:
        return components.node_prices.node_prices(at)
    except SourceError as exc:
        notes.append(DataQualityNote(kind="prices", message=f"OpenCost prices: {exc}"))
        return {}


def _training(
    components: Components, at: datetime, notes: list[DataQualityNote]
) -> tuple[Mapping[PodKey, datetime], Mapping[PodKey, tuple[int, int]]]:
    if components.checkpoints is None:
        return {}, {}
    try:
        return components.checkpoints.last_checkpoints(at), components.checkpoints.progress(at)
    except SourceError as exc:
        notes.append(DataQualityNote(kind="checkpoints", message=f"training metrics: {exc}"))
        return {}, {}


def _silences(
    components: Components, at: datetime, notes: list[DataQualityNote]
) -> tuple[Sequence[Silence], bool]:
    if components.silences is None:
        return (), False
    try:
        return components.silences.silences(at), False
    except SourceError as exc:
        notes.append(DataQualityNote(kind="silences", message=f"{exc}; no new group is posted"))
        return (), True
