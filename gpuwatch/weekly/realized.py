"""The ``realized`` table: for each action of the period that changes a bill (a node
removed, a job moved to spot), the saving projected when it was taken and the cost
change measured since.

Projected: the action's ``details.monthly_saving`` where it has one (a move's, for its
confirmation), else the lever of the cycle's own plan that matches it (a saving whose
``nodes`` name the node, its ``monthly`` split evenly between the nodes it removes; a
``spot`` saving of the job's workload). Measured: the cost of the action's scope (the
node's GPUs in ``gpu_hourly``; the workload's GPU-hours in ``holder_hourly``) in the
``hours_compared`` whole hours before the action and as many after it, as far as the
data reaches on both sides, the difference scaled to 30 days. So a reader sees
"projected X, measured Y per 30 days", both from the Parquet.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import pyarrow as pa
import pyarrow.compute as pc

from gpuwatch.report.data import ReportPeriod
from gpuwatch.report.schema import REALIZED
from gpuwatch.weekly.cycles import Json, RecordedCycle, in_period

NODE_REMOVED = "scale_down_node"
MOVED = "migrate_to_spot"
CONFIRMED = "migrate_to_spot_confirmed"
HOURS_A_MONTH = 720
HOUR = timedelta(hours=1)
MICRO = Decimal("0.000001")


@dataclass(frozen=True)
class Taken:
    """An action that changed a bill, and what was projected for it."""

    at: datetime
    """When it took effect (a move: when the job was moved, even if confirmed later)."""
    kind: str
    target: str
    key: str | None
    scope: Mapping[str, str]
    """``{"node": name}`` or ``{"workload": Kind/namespace/name}``."""
    projected: Decimal | None
    currency: str | None
    projected_from: str | None


@dataclass(frozen=True)
class CostHistory:
    """Hourly cost rows (``hour``, ``cost``, ``currency`` and the scope's columns) and
    the first hour they cover."""

    rows: pa.Table
    since: datetime


def taken_in(cycles: Sequence[RecordedCycle], period: ReportPeriod) -> list[Taken]:
    """The node removals and job moves done in the period, each once, oldest first."""
    found: dict[tuple[str, str], Taken] = {}
    for cycle in in_period(cycles, period):
        for action in cycle.actions:
            kind, target = str(action.get("kind")), str(action.get("target"))
            if action.get("status") != "done" or action.get("dry_run"):
                continue
            if kind == NODE_REMOVED:
                scope, at, source = {"node": target.split("/", 1)[-1]}, cycle.at, cycle
                projected = _projected(action, scope, source)
            elif kind in (MOVED, CONFIRMED):
                kind, scope = MOVED, {"workload": target}
                move = _move_of(cycles, target, cycle.at) if action["kind"] == CONFIRMED else None
                at, source = (move[0].at, move[0]) if move else (cycle.at, cycle)
                projected = _projected(move[1] if move else action, scope, source)
            else:
                continue
            if (kind, target) not in found:
                key = action.get("key")
                found[(kind, target)] = Taken(at, kind, target, key, scope, *projected)
    return sorted(found.values(), key=lambda taken: (taken.at, taken.target))


def _move_of(
    cycles: Sequence[RecordedCycle], target: str, until: datetime
) -> tuple[RecordedCycle, Json] | None:
    """The newest ``migrate_to_spot`` of ``target`` done at or before ``until``."""
    for cycle in reversed(cycles):
        if cycle.at > until:
            continue
        for action in cycle.actions:
            if (action.get("kind"), action.get("target"), action.get("status")) == (
                MOVED,
                target,
                "done",
            ):
                return cycle, action
    return None


def _projected(
    action: Json, scope: Mapping[str, str], cycle: RecordedCycle
) -> tuple[Decimal | None, str | None, str | None]:
    """(monthly, currency, where it came from) of the saving projected for ``action``."""
    saving, share = _matching_saving(cycle.savings, scope)
    currency = str(saving["currency"]) if saving and saving.get("currency") else None
    stated = (action.get("details") or {}).get("monthly_saving")
    if stated is not None:
        return Decimal(str(stated)), currency, "action details.monthly_saving"
    if saving is not None and saving.get("monthly") is not None:
        monthly = Decimal(str(saving["monthly"])) * share
        where = f"the {saving.get('kind')} saving of the cycle at {cycle.at.isoformat()}"
        return monthly, currency, where
    return None, currency, None


def _matching_saving(
    savings: Sequence[Json], scope: Mapping[str, str]
) -> tuple[Json | None, Decimal]:
    """The plan's lever for ``scope``, and the part of it that is this action's."""
    node, workload = scope.get("node"), scope.get("workload")
    for saving in savings:
        nodes = [str(n) for n in saving.get("nodes") or []]
        where = saving.get("scope") or {}
        if node is not None and node in nodes:
            return saving, Decimal(1) / Decimal(len(nodes))
        if node is not None and where.get("node") == node:
            return saving, Decimal(1)
        if (
            workload is not None
            and saving.get("kind") == "spot"
            and where.get("workload") == workload
        ):
            return saving, Decimal(1)
    return None, Decimal(1)


def realized_table(
    taken: Sequence[Taken], nodes: CostHistory, workloads: CostHistory, end: datetime
) -> pa.Table:
    """One row per action taken; ``nodes`` are ``gpu_hourly`` rows, ``workloads``
    ``holder_hourly`` rows, both up to ``end``."""
    rows = []
    for action in taken:
        history = nodes if "node" in action.scope else workloads
        scoped = _scoped(history.rows, action.scope)
        currency = action.currency or _first_currency(scoped)
        after = _ceil_hour(action.at)
        before = after if after == action.at else after - HOUR
        hours = max(min((before - history.since) // HOUR, (end - after) // HOUR), 0)
        span = timedelta(hours=hours)
        cost_before = _cost(scoped, before - span, before, currency)
        cost_after = _cost(scoped, after, after + span, currency)
        measured = (
            ((cost_before - cost_after) * HOURS_A_MONTH / hours).quantize(MICRO, ROUND_HALF_EVEN)
            if hours
            else None
        )
        rows.append(
            {
                "at": action.at,
                "kind": action.kind,
                "target": action.target,
                "key": action.key,
                "scope": json.dumps(dict(action.scope), sort_keys=True),
                "currency": currency,
                "projected_monthly": (
                    action.projected.quantize(MICRO, ROUND_HALF_EVEN)
                    if action.projected is not None
                    else None
                ),
                "projected_from": action.projected_from,
                "hours_compared": hours,
                "before_start": before - span,
                "before_cost": cost_before if hours else None,
                "after_start": after,
                "after_cost": cost_after if hours else None,
                "measured_monthly": measured,
            }
        )
    return pa.Table.from_pylist(rows, schema=REALIZED)


def _scoped(rows: pa.Table, scope: Mapping[str, str]) -> pa.Table:
    """The rows of a node, or of a workload (and of its pods gone by the end of the
    period, which keep their namespace and no workload: those named ``<name>-...``)."""
    if "node" in scope:
        return rows.filter(pc.equal(rows["node"], scope["node"]))
    workload = scope["workload"]
    mine = pc.equal(rows["workload"], workload)
    parts = workload.split("/")
    if len(parts) == 3:
        gone = pc.and_(
            pc.and_(pc.is_null(rows["workload"]), pc.equal(rows["namespace"], parts[1])),
            pc.starts_with(rows["pod"], f"{parts[2]}-"),
        )
        mine = pc.or_(pc.fill_null(mine, False), pc.fill_null(gone, False))
    return rows.filter(mine)


def _first_currency(rows: pa.Table) -> str | None:
    priced = rows.filter(pc.is_valid(rows["currency"]))
    return str(priced["currency"][0]) if priced.num_rows else None


def _cost(rows: pa.Table, start: datetime, stop: datetime, currency: str | None) -> Decimal:
    hour = rows["hour"]
    inside = pc.and_(
        pc.greater_equal(hour, pa.scalar(start, hour.type)),
        pc.less(hour, pa.scalar(stop, hour.type)),
    )
    if currency is not None:
        inside = pc.and_(inside, pc.equal(rows["currency"], currency))
    total = pc.sum(rows.filter(inside)["cost"]).as_py()
    return Decimal(0) if total is None else Decimal(total)


def _ceil_hour(moment: datetime) -> datetime:
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + HOUR
