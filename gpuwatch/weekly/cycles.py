"""The cycles' JSON results in ``output.dir``: what each cycle did and what its plan
projected, as the report reads them.

A cycle at ``t`` judged ``(t - window, t]``: it belongs to the period that ends at or
after ``t``, so a cycle exactly at a week's boundary is in the week before. Results
from before the period are read too: a job moved last week and confirmed this week
takes its projection from the move.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from gpuwatch.model.durations import parse_instant
from gpuwatch.model.findings import DataQualityNote
from gpuwatch.report.data import ReportPeriod
from gpuwatch.report.schema import ACTIONS

Json = Mapping[str, Any]


@dataclass(frozen=True)
class RecordedCycle:
    at: datetime
    actions: tuple[Json, ...]
    savings: tuple[Json, ...]
    """The cycle's ``savings[]``: what its plan projected for each lever."""
    forecasts: tuple[Json, ...] = ()
    """The cycle's findings of the rule with role ``oom_forecast``: its warnings."""


def read_cycles(cycles_dir: Path | None, notes: list[DataQualityNote]) -> list[RecordedCycle]:
    """Every cycle result (``cycle-<instant>.json``) in ``cycles_dir``, oldest first; a
    note for each that cannot be read."""
    if cycles_dir is None or not cycles_dir.is_dir():
        return []
    cycles = []
    for path in sorted(cycles_dir.glob("cycle-2*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            at = parse_instant(str(data["at"])).astimezone(UTC)
            actions = tuple(dict(a) for a in data.get("actions") or [])
            savings = tuple(dict(s) for s in data.get("savings") or [])
            forecasts = tuple(
                dict(f) for f in data.get("findings") or [] if f.get("role") == "oom_forecast"
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            notes.append(DataQualityNote(kind="actions", message=f"{path}: unreadable: {exc}"))
            continue
        cycles.append(RecordedCycle(at, actions, savings, forecasts))
    cycles.sort(key=lambda cycle: cycle.at)
    return cycles


def in_period(cycles: Sequence[RecordedCycle], period: ReportPeriod) -> list[RecordedCycle]:
    return [cycle for cycle in cycles if period.start < cycle.at <= period.end]


def period_actions(
    cycles: Sequence[RecordedCycle], period: ReportPeriod
) -> list[tuple[datetime, Json]]:
    """The actions of the period's cycles; each once per (key, status), at its first
    cycle."""
    seen: dict[tuple[str, str], tuple[datetime, Json]] = {}
    for cycle in in_period(cycles, period):
        for action in cycle.actions:
            key = (str(action.get("key") or action.get("target")), str(action.get("status")))
            seen.setdefault(key, (cycle.at, action))
    return list(seen.values())


def actions_table(actions: Sequence[tuple[datetime, Json]]) -> pa.Table:
    """Actions as the cycle JSON records them (``actions[]``), with the cycle's time."""
    return pa.Table.from_pylist(
        [
            {
                "at": at,
                "kind": a["kind"],
                "target": a["target"],
                "pool": a.get("pool"),
                "status": a["status"],
                "reason": a.get("reason"),
                "dry_run": bool(a.get("dry_run", True)),
                "key": a.get("key"),
                "details": json.dumps(a.get("details") or {}, sort_keys=True),
                **_decision((a.get("details") or {}).get("approval")),
            }
            for at, a in sorted(actions, key=lambda item: item[0], reverse=True)
        ],
        schema=ACTIONS,
    )


def _decision(approval: object) -> dict[str, Any]:
    """The actions table's decision columns, from an action's ``details.approval``."""
    if not isinstance(approval, dict):
        return {"decision": None, "decided_by": None, "decided_at": None}
    at = approval.get("at")
    return {
        "decision": approval.get("decision"),
        "decided_by": approval.get("by"),
        "decided_at": parse_instant(at) if isinstance(at, str) else None,
    }
