"""Realized savings: for each node removed or job moved in the period, the saving
projected when it was taken beside the cost change measured since, from the
``realized`` table."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa

from gpuwatch.report.figures.columns import Money, money_by_currency


@dataclass(frozen=True)
class RealizedRow:
    index: int
    """The row's position in the ``realized`` table."""
    at: datetime
    kind: str
    target: str
    scope: Mapping[str, Any]
    currency: str | None
    projected_monthly: Decimal | None
    projected_from: str | None
    hours_compared: int
    before_start: datetime
    before_cost: Decimal | None
    after_start: datetime
    after_cost: Decimal | None
    measured_monthly: Decimal | None


@dataclass(frozen=True)
class Realized:
    rows: tuple[RealizedRow, ...]
    projected: Money
    """``projected_monthly`` summed per currency."""
    measured: Money
    """``measured_monthly`` summed per currency."""


def realized(table: pa.Table | None) -> Realized:
    """The period's realized savings, oldest action first; nothing for a week written
    before the table existed."""
    if table is None or not table.num_rows:
        return Realized((), {}, {})
    rows = []
    for index, row in enumerate(table.to_pylist()):
        try:
            scope = json.loads(row["scope"])
        except ValueError:
            scope = {"text": row["scope"]}
        rows.append(
            RealizedRow(
                index=index,
                at=row["at"],
                kind=row["kind"],
                target=row["target"],
                scope=scope if isinstance(scope, dict) else {"value": scope},
                currency=row["currency"],
                projected_monthly=row["projected_monthly"],
                projected_from=row["projected_from"],
                hours_compared=row["hours_compared"],
                before_start=row["before_start"],
                before_cost=row["before_cost"],
                after_start=row["after_start"],
                after_cost=row["after_cost"],
                measured_monthly=row["measured_monthly"],
            )
        )
    rows.sort(key=lambda row: (row.at, row.index))
    return Realized(
        tuple(rows),
        money_by_currency(table, "projected_monthly"),
        money_by_currency(table, "measured_monthly"),
    )
