"""The numbers the weekly report shows, computed from its four tables and nothing else.

The HTML page is a view of these figures, and the figures are a view of the Parquet
tables finance receives, so that every number a reader sees can be recomputed from the
dataset with DuckDB or pyarrow. That is why this module is pure (tables in, frozen
dataclasses out) and why its definitions are spelled out here:

- A **GPU-hour** is a row of ``gpu_hourly``: one device (a whole GPU, or a MIG instance)
  present for one hour, whether or not it had samples. ``covered_gpu_hours`` is the sum
  of ``coverage_ratio``: the part of those hours the metrics actually saw.
- **Cost** and **idle cost** are sums of their columns, per currency; a null (an unpriced
  GPU, or a gap: a gap is not idle time) adds nothing. Money is ``Decimal`` and never
  summed across currencies: every money figure is a mapping currency -> amount.
- **Mean utilization** is the mean of ``util_mean_ratio`` weighted by ``coverage_ratio``
  over the rows that have a utilization: an hour half seen counts half, a gap not at all.
- **Savings available** is the sum of ``savings.monthly`` per currency (per 30 days).
- **Actions taken** are the actions with status ``done``; refused, failed and planned
  (dry-run) ones are counted separately.
- The **heatmap** keeps gaps as NaN: a GPU nobody could see is drawn as a gap, never as
  0 % (which would read as idle, and be billed to somebody as waste).

Everything over ``gpu_hourly`` (1.7 million rows for a 10,000-GPU week) is vectorised
with pyarrow.compute and numpy; Python loops only run over groups (teams, pools, GPUs).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gpuwatch.model.findings import DataQualityNote
from gpuwatch.report.data import ReportData, ReportPeriod

NO_TEAM = "(unallocated)"
"""The key of GPU-hours no team holds (nobody requested the GPU)."""
NO_POOL = "(no pool)"
NO_WORKLOAD = "(no workload)"
NO_CURRENCY = "XXX"
"""ISO 4217's code for "no currency", for a priced row whose currency is missing."""

NEAR_OOM_RULE = "gpu-near-oom"
NEAR_OOM_RATIO = 0.95
"""A GPU-hour whose highest memory sample is above this is a near-OOM event."""
HEADROOM_BIN_RATIO = 0.05

Money = Mapping[str, Decimal]
"""Currency code -> amount. Never summed across keys."""


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Headline:
    """The first lines of the page, for one period."""

    gpu_hours: int
    covered_gpu_hours: float
    mean_util_ratio: float | None
    """None when no GPU-hour has a utilization (no data at all)."""
    cost: Money
    idle_cost: Money
    savings_monthly: Money | None
    """None when the period's savings table is unknown (a previous week given as
    ``gpu_hourly`` only)."""
    actions_taken: int | None
    actions_refused: int | None


@dataclass(frozen=True)
class CostRow:
    """One team's (or pool's) priced GPU-hours in one currency."""

    key: str
    currency: str
    cost: Decimal
    gpu_hours: int
    mean_util_ratio: float | None
    share_ratio: float
    """This row's cost over the currency's total."""


@dataclass(frozen=True)
class IdleRow:
    """Idle cost of one team (or workload) in one currency."""

    key: str
    currency: str
    idle_cost: Decimal
    measured_cost: Decimal
    """Cost of the hours that have a utilization (the base idle cost is a part of)."""
    idle_ratio: float | None
    """``idle_cost / measured_cost``: the share of what was measured that was idle."""
    teams: tuple[str, ...] = ()
    """For a workload: the team(s) its GPU-hours were attributed to."""


@dataclass(frozen=True)
class NearOomFinding:
    """A ``gpu-near-oom`` finding: an unbroken run of hours above the threshold."""

    node: str
    gpu_uuid: str | None
    pool: str | None
    namespace: str | None
    pod: str | None
    workload: str | None
    team: str | None
    start: datetime
    end: datetime
    hours: int
    worst_value: float | None
    threshold: float | None
    message: str | None


@dataclass(frozen=True)
class MemoryHeadroom:
    """How full GPU memory got: a histogram of each GPU-hour's highest sample."""

    edges: tuple[float, ...]
    """21 edges, 0 to 1 by 5 %; bin ``i`` holds ``edges[i] < ratio <= edges[i+1]``
    (the first bin includes 0, the last anything above 1), so that the last bin is
    exactly the near-OOM GPU-hours."""
    counts: tuple[int, ...]
    measured_gpu_hours: int
    """GPU-hours that have a memory sample (the histogram's total)."""
    near_oom_gpu_hours: int
    """GPU-hours whose highest sample is above ``NEAR_OOM_RATIO``."""
    findings: tuple[NearOomFinding, ...]


@dataclass(frozen=True)
class SavingRow:
    """One saving from the ``savings`` table, with its JSON columns parsed."""

    index: int
    """The row's position in the ``savings`` table (to find it in the Parquet file)."""
    kind: str
    scope: Mapping[str, Any]
    monthly: Decimal
    currency: str
    confidence: str | None
    formula: str | None
    inputs: Mapping[str, Any]
    assumptions: tuple[str, ...]
    action: str | None
    at: datetime


@dataclass(frozen=True)
class ActionRow:
    at: datetime
    kind: str
    target: str
    pool: str | None
    status: str
    reason: str | None
    dry_run: bool
    key: str | None
    details: Mapping[str, Any]


@dataclass(frozen=True)
class NodeGaps:
    """GPU-hours with no samples at all (coverage 0) on one node: an exporter or
    Prometheus gap."""

    node: str
    gpu_hours: int
    hours: int
    """Distinct hours with a gap on any of the node's GPUs."""
    first: datetime
    last: datetime
    """Start of the last hour with a gap (the gap runs to ``last + 1h``)."""


@dataclass(frozen=True)
class DataQuality:
    notes: tuple[DataQualityNote, ...]
    gpu_hours: int
    incomplete_gpu_hours: int
    """GPU-hours with coverage below 1 (gaps included)."""
    gap_gpu_hours: int
    """GPU-hours with coverage 0."""
    unpriced_gpu_hours: int
    coverage_ratio: float | None
    """``covered_gpu_hours / gpu_hours``; None without GPU-hours."""
    node_gaps: tuple[NodeGaps, ...]

    @property
    def clean(self) -> bool:
        return not (
            self.notes or self.incomplete_gpu_hours or self.unpriced_gpu_hours or self.node_gaps
        )


@dataclass(frozen=True, eq=False)
class Heatmap:
    """Utilization per GPU (row) and hour (column); NaN where there was no data."""

    values: np.ndarray
    """float64, shape ``(len(row_labels), hours)``, 0..1 or NaN."""
    row_labels: tuple[str, ...]
    row_pools: tuple[str, ...]
    start: datetime
    gpus: int
    gpus_per_row: int
    """1, or the size of the groups of consecutive GPUs each row averages."""

    @property
    def hours(self) -> int:
        return int(self.values.shape[1])

    @property
    def grouped(self) -> bool:
        return self.gpus_per_row > 1


@dataclass(frozen=True)
class ReportFigures:
    cluster: str
    period: ReportPeriod
    generated_at: datetime
    headline: Headline
    previous: Headline | None
    """None when there is no previous week (not given, or no GPU-hours in it)."""
    cost_by_team: tuple[CostRow, ...]
    cost_by_pool: tuple[CostRow, ...]
    idle_by_team: tuple[IdleRow, ...]
    idle_by_workload: tuple[IdleRow, ...]
    memory: MemoryHeadroom
    savings: tuple[SavingRow, ...]
    actions: tuple[ActionRow, ...]
    action_counts: Mapping[str, int]
    quality: DataQuality
    heatmap: Heatmap
    currencies: tuple[str, ...]
    """Every currency some money figure is in, sorted."""

    @property
    def empty(self) -> bool:
        """Nothing to report: no GPU-hours, no savings, no actions."""
        return not (self.headline.gpu_hours or self.savings or self.actions)


# --------------------------------------------------------------------------- entry point


def compute_figures(data: ReportData, *, heatmap_max_rows: int = 240) -> ReportFigures:
    """Every figure of the page, from ``data``'s tables."""
    hourly = data.tables["gpu_hourly"]
    savings, saving_notes = ranked_savings(data.tables["savings"])
    current = headline(data.tables)
    previous = previous_headline(data.previous)
    currencies = (
        set(current.cost)
        | set(current.idle_cost)
        | {row.currency for row in savings}
        | set(previous.cost if previous else ())
        | set(previous.idle_cost if previous else ())
        | set(previous.savings_monthly or () if previous else ())
    )
    return ReportFigures(
        cluster=data.cluster,
        period=data.period,
        generated_at=data.generated_at,
        headline=current,
        previous=previous,
        cost_by_team=cost_by(hourly, "team", NO_TEAM),
        cost_by_pool=cost_by(hourly, "pool", NO_POOL),
        idle_by_team=idle_by(hourly, "team", NO_TEAM),
        idle_by_workload=idle_by(hourly, "workload", NO_WORKLOAD, with_teams=True),
        memory=memory_headroom(hourly, data.tables["findings"]),
        savings=savings,
        actions=recent_actions(data.tables["actions"]),
        action_counts=_count_statuses(data.tables["actions"]),
        quality=data_quality(hourly, (*data.notes, *saving_notes)),
        heatmap=heatmap(hourly, data.period, max_rows=heatmap_max_rows),
        currencies=tuple(sorted(currencies)),
    )


# --------------------------------------------------------------------------- headline


def headline(tables: Mapping[str, pa.Table]) -> Headline:
    """The headline figures of one period; savings and actions only where their table is
    among ``tables``."""
    hourly = tables["gpu_hourly"]
    coverage = _floats(hourly, "coverage_ratio")
    savings = tables.get("savings")
    actions = tables.get("actions")
    statuses = _count_statuses(actions) if actions is not None else None
    return Headline(
        gpu_hours=hourly.num_rows,
        covered_gpu_hours=float(coverage.sum()),
        mean_util_ratio=_weighted_util(hourly),
        cost=money_by_currency(hourly, "cost"),
        idle_cost=money_by_currency(hourly, "idle_cost"),
        savings_monthly=money_by_currency(savings, "monthly") if savings is not None else None,
        actions_taken=statuses.get("done", 0) if statuses is not None else None,
        actions_refused=statuses.get("refused", 0) if statuses is not None else None,
    )


def previous_headline(previous: Mapping[str, pa.Table] | None) -> Headline | None:
    """The previous period's headline; None when it is unknown or has no GPU-hours (a
    week gpuwatch did not record is not a week that cost nothing)."""
    if previous is None or "gpu_hourly" not in previous or not previous["gpu_hourly"].num_rows:
        return None
    return headline(previous)


def relative_change(
    current: float | Decimal | None, previous: float | Decimal | None
) -> float | None:
    """``current / previous - 1``; None when either is unknown or the previous is 0."""
    if current is None or previous is None or previous == 0:
        return None
    return float(current) / float(previous) - 1.0


def money_by_currency(table: pa.Table, column: str) -> dict[str, Decimal]:
    """Sum of a money column per currency, nulls skipped; currencies sorted."""
    narrow = table.select([column, "currency"])
    priced = narrow.filter(pc.is_valid(narrow[column]))
    if not priced.num_rows:
        return {}
    grouped = _with_currency(priced).group_by("currency").aggregate([(column, "sum")])
    pairs = zip(grouped["currency"].to_pylist(), grouped[f"{column}_sum"].to_pylist(), strict=True)
    return dict(sorted(pairs))


def _weighted_util(hourly: pa.Table) -> float | None:
    util = _floats(hourly, "util_mean_ratio")
    weight = np.where(np.isnan(util), 0.0, _floats(hourly, "coverage_ratio"))
    total = weight.sum()
    if total <= 0:
        return None
    return float(np.nansum(util * weight) / total)


# --------------------------------------------------------------------------- cost and idle


def cost_by(hourly: pa.Table, column: str, missing: str) -> tuple[CostRow, ...]:
    """Priced GPU-hours grouped by ``column`` (team, pool) and currency, cost desc."""
    narrow = hourly.select([column, "currency", "cost", "util_mean_ratio", "coverage_ratio"])
    priced = _with_currency(narrow.filter(pc.is_valid(narrow["cost"])))
    if not priced.num_rows:
        return ()
    util = pc.fill_null(priced["util_mean_ratio"], 0.0)
    weight = pc.if_else(pc.is_valid(priced["util_mean_ratio"]), priced["coverage_ratio"], 0.0)
    grouped = (
        priced.set_column(
            priced.schema.get_field_index(column), column, _keyed(priced[column], missing)
        )
        .append_column("_uw", pc.multiply(util, weight))
        .append_column("_w", weight)
        .group_by([column, "currency"])
        .aggregate([("cost", "sum"), ("cost", "count"), ("_uw", "sum"), ("_w", "sum")])
    )
    totals = money_by_currency(priced, "cost")
    rows = [
        CostRow(
            key=key,
            currency=currency,
            cost=cost,
            gpu_hours=count,
            mean_util_ratio=uw / w if w > 0 else None,
            share_ratio=float(cost / totals[currency]) if totals[currency] else 0.0,
        )
        for key, currency, cost, count, uw, w in zip(
            grouped[column].to_pylist(),
            grouped["currency"].to_pylist(),
            grouped["cost_sum"].to_pylist(),
            grouped["cost_count"].to_pylist(),
            grouped["_uw_sum"].to_pylist(),
            grouped["_w_sum"].to_pylist(),
            strict=True,
        )
    ]
    return tuple(sorted(rows, key=lambda row: (row.currency, -row.cost, row.key)))


def idle_by(
    hourly: pa.Table, column: str, missing: str, *, with_teams: bool = False
) -> tuple[IdleRow, ...]:
    """Idle cost grouped by ``column`` (team, workload) and currency, idle cost desc.
    Only hours with a utilization count (idle cost is null in a gap)."""
    columns = list(dict.fromkeys([column, "team", "currency", "idle_cost", "cost"]))
    narrow = hourly.select(columns)
    measured = _with_currency(narrow.filter(pc.is_valid(narrow["idle_cost"])))
    if not measured.num_rows:
        return ()
    aggregates: list[tuple[str, str]] = [("idle_cost", "sum"), ("cost", "sum")]
    if with_teams:
        aggregates.append(("team", "distinct"))
        measured = measured.set_column(
            measured.schema.get_field_index("team"), "team", _keyed(measured["team"], NO_TEAM)
        )
    index = measured.schema.get_field_index(column)
    grouped = (
        measured.set_column(index, column, _keyed(measured[column], missing))
        .group_by([column, "currency"])
        .aggregate(aggregates)
    )
    teams = grouped["team_distinct"].to_pylist() if with_teams else [[]] * grouped.num_rows
    rows = []
    for key, currency, idle, measured_cost, team_list in zip(
        grouped[column].to_pylist(),
        grouped["currency"].to_pylist(),
        grouped["idle_cost_sum"].to_pylist(),
        grouped["cost_sum"].to_pylist(),
        teams,
        strict=True,
    ):
        cost = measured_cost if measured_cost is not None else Decimal(0)
        rows.append(
            IdleRow(
                key=key,
                currency=currency,
                idle_cost=idle,
                measured_cost=cost,
                idle_ratio=float(idle / cost) if cost else None,
                teams=tuple(sorted(team_list)),
            )
        )
    return tuple(sorted(rows, key=lambda row: (row.currency, -row.idle_cost, row.key)))


# --------------------------------------------------------------------------- memory


def memory_headroom(hourly: pa.Table, findings: pa.Table) -> MemoryHeadroom:
    """Histogram of ``fb_used_max_ratio`` in 5 % bins, near-OOM hours and findings."""
    bins = round(1 / HEADROOM_BIN_RATIO)
    # i / bins is the double nearest to the decimal edge, as the literal 0.95 is: a ratio
    # of exactly 0.95 falls in the (0.90, 0.95] bin, not the near-OOM one.
    edges = np.arange(bins + 1) / bins
    ratio = _floats(hourly, "fb_used_max_ratio")
    ratio = ratio[~np.isnan(ratio)]
    index = np.clip(np.searchsorted(edges, ratio, side="left") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    rows = findings.filter(pc.equal(findings["rule"], NEAR_OOM_RULE)).to_pylist()
    near_oom = [
        NearOomFinding(
            node=row["node"],
            gpu_uuid=row["gpu_uuid"],
            pool=row["pool"],
            namespace=row["namespace"],
            pod=row["pod"],
            workload=row["workload"],
            team=row["team"],
            start=row["start"],
            end=row["end"],
            hours=row["hours"],
            worst_value=row["worst_value"],
            threshold=row["threshold"],
            message=row["message"],
        )
        for row in rows
    ]
    near_oom.sort(key=lambda f: (-(f.worst_value or 0.0), f.start, f.node, f.gpu_uuid or ""))
    return MemoryHeadroom(
        edges=tuple(float(edge) for edge in edges),
        counts=tuple(int(count) for count in counts),
        measured_gpu_hours=int(ratio.size),
        near_oom_gpu_hours=int(np.count_nonzero(ratio > NEAR_OOM_RATIO)),
        findings=tuple(near_oom),
    )


# --------------------------------------------------------------------------- savings, actions


def ranked_savings(savings: pa.Table) -> tuple[tuple[SavingRow, ...], tuple[DataQualityNote, ...]]:
    """Savings per currency (currencies in order), monthly desc; and a note for every JSON
    cell that does not parse (the saving is still shown, with that cell as text)."""
    rows: list[SavingRow] = []
    notes: list[DataQualityNote] = []
    for index, row in enumerate(savings.to_pylist()):
        parsed = {}
        for column, expected in (("scope", dict), ("inputs", dict), ("assumptions", list)):
            value, problem = _parse_json(row[column], expected)
            parsed[column] = value
            if problem:
                notes.append(
                    DataQualityNote(
                        kind="report",
                        message=f"savings row {index} ({row['kind']}): {column} {problem}",
                    )
                )
        rows.append(
            SavingRow(
                index=index,
                kind=row["kind"],
                scope=parsed["scope"],
                monthly=row["monthly"],
                currency=row["currency"],
                confidence=row["confidence"],
                formula=row["formula"],
                inputs=parsed["inputs"],
                assumptions=tuple(str(item) for item in parsed["assumptions"]),
                action=row["action"],
                at=row["at"],
            )
        )
    rows.sort(key=lambda row: (row.currency, -row.monthly, row.index))
    return tuple(rows), tuple(notes)


def recent_actions(actions: pa.Table) -> tuple[ActionRow, ...]:
    """Every action (done, refused, failed, planned), newest first."""
    rows = []
    for row in actions.to_pylist():
        details, _ = _parse_json(row["details"], dict)
        rows.append(
            ActionRow(
                at=row["at"],
                kind=row["kind"],
                target=row["target"],
                pool=row["pool"],
                status=row["status"],
                reason=row["reason"],
                dry_run=row["dry_run"],
                key=row["key"],
                details=details,
            )
        )
    rows.sort(key=lambda row: (row.kind, row.target))
    rows.sort(key=lambda row: row.at, reverse=True)
    return tuple(rows)


def _count_statuses(actions: pa.Table) -> dict[str, int]:
    if not actions.num_rows:
        return {}
    counts = pc.value_counts(actions["status"]).to_pylist()
    return {item["values"]: item["counts"] for item in sorted(counts, key=lambda i: i["values"])}


def _parse_json(text: str | None, expected: type) -> tuple[Any, str | None]:
    if text is None or text == "":
        return expected(), None
    try:
        value = json.loads(text)
    except ValueError as exc:
        return ({"text": text} if expected is dict else [text]), f"is not JSON ({exc})"
    if not isinstance(value, expected):
        return (
            ({"value": value} if expected is dict else [value]),
            f"is a JSON {type(value).__name__}, expected {expected.__name__}",
        )
    return value, None


# --------------------------------------------------------------------------- data quality


def data_quality(hourly: pa.Table, notes: Sequence[DataQualityNote]) -> DataQuality:
    """What limits the figures: the notes given, incomplete and unpriced GPU-hours, and
    the gaps (GPU-hours with no sample at all), per node."""
    coverage = _floats(hourly, "coverage_ratio")
    narrow = hourly.select(["node", "hour", "coverage_ratio"])
    gaps = narrow.filter(pc.equal(narrow["coverage_ratio"], 0.0))
    node_gaps: list[NodeGaps] = []
    if gaps.num_rows:
        grouped = gaps.group_by("node").aggregate(
            [("hour", "count"), ("hour", "count_distinct"), ("hour", "min"), ("hour", "max")]
        )
        node_gaps = [
            NodeGaps(node=node, gpu_hours=count, hours=distinct, first=first, last=last)
            for node, count, distinct, first, last in zip(
                grouped["node"].to_pylist(),
                grouped["hour_count"].to_pylist(),
                grouped["hour_count_distinct"].to_pylist(),
                grouped["hour_min"].to_pylist(),
                grouped["hour_max"].to_pylist(),
                strict=True,
            )
        ]
        node_gaps.sort(key=lambda gap: (-gap.gpu_hours, gap.node))
    return DataQuality(
        notes=tuple(notes),
        gpu_hours=hourly.num_rows,
        incomplete_gpu_hours=int(np.count_nonzero(coverage < 1.0)),
        gap_gpu_hours=gaps.num_rows,
        unpriced_gpu_hours=hourly["cost"].null_count,
        coverage_ratio=float(coverage.mean()) if coverage.size else None,
        node_gaps=tuple(node_gaps),
    )


# --------------------------------------------------------------------------- heatmap


def heatmap(hourly: pa.Table, period: ReportPeriod, *, max_rows: int = 240) -> Heatmap:
    """Utilization per GPU and hour of ``period``.

    Rows are the GPUs (devices: a MIG instance is its own row) sorted by pool, node and
    index. With more GPUs than ``max_rows``, each row is a group of consecutive GPUs of
    one pool (a group never spans pools while that fits), the coverage-weighted mean of
    the group's GPUs. A cell no GPU of its row has data for is NaN.
    """
    hours = max(period.hours, 0)
    devices = _sorted_devices(hourly)
    group_size, group_of = _group_devices([pool for _, pool, *_ in devices], max_rows)
    rows = int(group_of.max()) + 1 if devices else 0
    values = np.full((rows, hours), np.nan)
    if devices and hours:
        device_ids = pa.array([device for device, *_ in devices], pa.string())
        device_row = pc.index_in(hourly["device_id"], value_set=device_ids).to_numpy(
            zero_copy_only=False
        )
        hour_s = pc.cast(hourly["hour"], pa.int64()).to_numpy(zero_copy_only=False)
        column = (hour_s - int(period.start.timestamp())) // 3600
        util = _floats(hourly, "util_mean_ratio")
        coverage = _floats(hourly, "coverage_ratio")
        inside = (column >= 0) & (column < hours)
        weight = np.where(np.isnan(util) | ~inside, 0.0, np.clip(coverage, 0.0, 1.0))
        cell = group_of[device_row] * hours + np.where(inside, column, 0)
        weighted = np.bincount(cell, weights=np.nan_to_num(util) * weight, minlength=rows * hours)
        total = np.bincount(cell, weights=weight, minlength=rows * hours)
        with np.errstate(invalid="ignore", divide="ignore"):
            flat = np.where(total > 0, weighted / total, np.nan)
        values = np.clip(flat.reshape(rows, hours), 0.0, 1.0)
    labels, pools = _row_labels(devices, group_of, rows)
    return Heatmap(
        values=values,
        row_labels=labels,
        row_pools=pools,
        start=period.start,
        gpus=len(devices),
        gpus_per_row=group_size,
    )


_Device = tuple[str, str, str, int | None, str | None]
"""device_id, pool (keyed), node, gpu_index, mig_profile."""


def _sorted_devices(hourly: pa.Table) -> list[_Device]:
    if not hourly.num_rows:
        return []
    grouped = hourly.group_by("device_id").aggregate(
        [("pool", "min"), ("node", "min"), ("gpu_index", "min"), ("mig_profile", "min")]
    )
    devices = list(
        zip(
            grouped["device_id"].to_pylist(),
            grouped["pool_min"].to_pylist(),
            grouped["node_min"].to_pylist(),
            grouped["gpu_index_min"].to_pylist(),
            grouped["mig_profile_min"].to_pylist(),
            strict=True,
        )
    )
    devices.sort(key=lambda d: (d[1] is None, d[1] or "", d[2], d[3] is None, d[3] or 0, d[0]))
    return [
        (device, pool or NO_POOL, node, index, mig) for device, pool, node, index, mig in devices
    ]


def _group_devices(pools: Sequence[str], max_rows: int) -> tuple[int, np.ndarray]:
    """Group size and each device's row. Groups are consecutive devices of one pool, the
    smallest size for which all rows fit; when even that cannot fit (more pools than
    rows), groups span pools."""
    count = len(pools)
    if count <= max_rows:
        return 1, np.arange(count, dtype=np.int64)
    # Pool runs: the devices are sorted by pool, so each pool is one run.
    starts = np.flatnonzero(np.r_[True, np.asarray(pools[1:]) != np.asarray(pools[:-1])])
    lengths = np.diff(np.r_[starts, count])
    size = math.ceil(count / max_rows)
    if starts.size <= max_rows:
        while int(np.ceil(lengths / size).sum()) > max_rows:
            size += 1
        position = np.arange(count) - np.repeat(starts, lengths)
        rows_before = np.r_[0, np.cumsum(np.ceil(lengths / size).astype(np.int64))[:-1]]
        return size, np.repeat(rows_before, lengths) + position // size
    return size, np.arange(count, dtype=np.int64) // size


def _row_labels(
    devices: Sequence[_Device], group_of: np.ndarray, rows: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    labels: list[str] = []
    pools: list[str] = []
    if not rows:
        return (), ()
    starts = np.searchsorted(group_of, np.arange(rows), side="left")
    ends = np.r_[starts[1:], len(devices)]
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        _, pool, node, index, mig = devices[start]
        pools.append(pool)
        if end - start == 1:
            name = f"{node}/{index}" if index is not None else node
            labels.append(f"{name} {mig}" if mig else name)
            continue
        last_node = devices[end - 1][2]
        nodes = node if node == last_node else f"{node} … {last_node}"
        labels.append(f"{nodes} ({end - start} GPUs)")
    return tuple(labels), tuple(pools)


# --------------------------------------------------------------------------- helpers


def _floats(table: pa.Table, column: str) -> np.ndarray:
    """A float column as numpy, null as NaN."""
    array = table[column]
    if not len(array):
        return np.zeros(0)
    return pc.fill_null(array, math.nan).to_numpy(zero_copy_only=False).astype(np.float64)


def _keyed(array: pa.ChunkedArray, missing: str) -> pa.ChunkedArray:
    return pc.fill_null(array, missing)


def _with_currency(table: pa.Table) -> pa.Table:
    index = table.schema.get_field_index("currency")
    return table.set_column(index, "currency", pc.fill_null(table["currency"], NO_CURRENCY))
