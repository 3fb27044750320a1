"""The lists of the page: savings ranked, recent actions, and what limits the report."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gpuwatch.model.findings import DataQualityNote
from gpuwatch.report.figures.columns import floats


@dataclass(frozen=True)
class SavingRow:
    """One saving from the ``savings`` table, with its JSON columns parsed."""

    index: int
    """The row's position in the ``savings`` table (to find it in the Parquet file)."""
    kind: str
    scope: Mapping[str, Any]
    monthly: Decimal
    """Gross: the lever alone."""
    currency: str
    confidence: str | None
    formula: str | None
    inputs: Mapping[str, Any]
    assumptions: tuple[str, ...]
    action: str | None
    at: datetime
    net_monthly: Decimal | None = None
    """What it adds to the plan's cash; None in a week written before 1.1."""
    cash: bool = True
    reclaimed_gpu_hours_monthly: float = 0.0
    reclaimed_monthly: Decimal | None = None
    gpus: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    blocked: str | None = None
    unblock: str | None = None
    lookback_s: int | None = None
    hours_counted: float | None = None
    order: int = 0

    @property
    def reclaims(self) -> bool:
        """Capacity freed without a bill changing: shown beside the cash, never in it."""
        return not self.cash


_JSON_COLUMNS = (
    ("scope", dict),
    ("inputs", dict),
    ("assumptions", list),
    ("gpus", list),
    ("nodes", list),
)


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
    decision: str | None = None
    """``approve`` or ``reject`` (approval in Slack), with who and when."""
    decided_by: str | None = None
    decided_at: datetime | None = None


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


def ranked_savings(savings: pa.Table) -> tuple[tuple[SavingRow, ...], tuple[DataQualityNote, ...]]:
    """Savings per currency (currencies in order), in the plan's order, the larger first
    within one place; and a note for every JSON cell that does not parse (the saving is
    still shown, with that cell as text)."""
    rows: list[SavingRow] = []
    notes: list[DataQualityNote] = []
    for index, row in enumerate(savings.to_pylist()):
        parsed = {}
        for column, expected in _JSON_COLUMNS:
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
                net_monthly=row["net_monthly"],
                cash=row["cash"] is not False,
                reclaimed_gpu_hours_monthly=row["reclaimed_gpu_hours_monthly"] or 0.0,
                reclaimed_monthly=row["reclaimed_monthly"],
                gpus=tuple(str(item) for item in parsed["gpus"]),
                nodes=tuple(str(item) for item in parsed["nodes"]),
                blocked=row["blocked"],
                unblock=row["unblock"],
                lookback_s=row["lookback_s"],
                hours_counted=row["hours_counted"],
                order=row["order"] or 0,
            )
        )
    rows.sort(key=lambda row: (row.currency, row.order, -row.monthly, row.index))
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
                # Weeks written before 1.2 have no decision columns.
                decision=row.get("decision"),
                decided_by=row.get("decided_by"),
                decided_at=row.get("decided_at"),
            )
        )
    rows.sort(key=lambda row: (row.kind, row.target))
    rows.sort(key=lambda row: row.at, reverse=True)
    return tuple(rows)


def count_statuses(actions: pa.Table) -> dict[str, int]:
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


def data_quality(hourly: pa.Table, notes: Sequence[DataQualityNote]) -> DataQuality:
    """What limits the figures: the notes given, incomplete and unpriced GPU-hours, and
    the gaps (GPU-hours with no sample at all), per node."""
    coverage = floats(hourly, "coverage_ratio")
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
