"""What one report is about (a period of one cluster) and the tables it is made of.

The HTML is rendered from these tables and nothing else, so that every figure a reader
sees can be recomputed from the Parquet files finance receives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from gpuwatch.model.findings import DataQualityNote
from gpuwatch.model.metrics import FloatArray
from gpuwatch.report.schema import SCHEMAS

_ISO_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


@dataclass(frozen=True)
class ReportPeriod:
    """``[start, end)`` in UTC, and its label: ``2026-W48`` for an ISO week, else
    ``<start date>_<end date>``. The label names the ``week=`` partition."""

    start: datetime
    end: datetime
    label: str

    @property
    def hours(self) -> int:
        return int((self.end - self.start).total_seconds() // 3600)

    @classmethod
    def iso_week(cls, text: str) -> ReportPeriod:
        """``2026-W48`` -> Monday 00:00 UTC to the next Monday; ValueError otherwise."""
        match = _ISO_WEEK.match(text.strip())
        if not match:
            raise ValueError(f"expected an ISO week like 2026-W48, got {text!r}")
        try:
            monday = date.fromisocalendar(int(match[1]), int(match[2]), 1)
        except ValueError as exc:
            raise ValueError(f"{text}: {exc}") from exc
        start = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
        return cls(start, start + timedelta(days=7), text.strip())

    @classmethod
    def last_full_week(cls, now: datetime) -> ReportPeriod:
        """The newest ISO week that has ended by ``now``."""
        year, week, _ = (now.astimezone(UTC).date() - timedelta(days=7)).isocalendar()
        return cls.iso_week(f"{year}-W{week:02d}")

    @classmethod
    def between(cls, start: datetime, end: datetime) -> ReportPeriod:
        """Any range of whole hours; an ISO week when it is exactly one."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("expected instants with a time zone")
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        if end <= start:
            raise ValueError("expected --to after --from")
        if start.minute or start.second or end.minute or end.second:
            raise ValueError("expected whole hours (the report is hourly)")
        year, week, weekday = start.date().isocalendar()
        if weekday == 1 and start.hour == 0 and end - start == timedelta(days=7):
            return cls(start, end, f"{year}-W{week:02d}")
        return cls(start, end, f"{start:%Y-%m-%dT%H}_{end:%Y-%m-%dT%H}")

    def previous(self) -> ReportPeriod:
        """The period of the same length just before, for week-over-week figures."""
        length = self.end - self.start
        return ReportPeriod.between(self.start - length, self.start)


@dataclass(frozen=True)
class NearOom:
    """The rule with role ``near_oom``, as the report draws it: its id picks its
    findings, its threshold is where memory use counts as near OOM."""

    rule: str
    ratio: float
    inclusive: bool = False
    """The rule fires at the threshold itself (``>=``), not only above it (``>``)."""

    def above(self, ratios: FloatArray) -> npt.NDArray[np.bool_]:
        return ratios >= self.ratio if self.inclusive else ratios > self.ratio


@dataclass(frozen=True)
class PricesUsed:
    """The price book the money was computed with, so that a reader knows whose prices
    they are: an example book's figures are not anybody's bill."""

    book: str
    """Its path (or another name of where it came from)."""
    examples: bool
    """The book says ``example: true``: its prices are examples, not yours."""


@dataclass(frozen=True)
class ReportData:
    cluster: str
    period: ReportPeriod
    tables: Mapping[str, pa.Table]
    """Every table of ``gpuwatch.report.schema.TABLES``, each with its schema there."""
    previous: Mapping[str, pa.Table] | None = None
    """The previous period's tables (``gpu_hourly`` at least) when known."""
    notes: tuple[DataQualityNote, ...] = ()
    """What limits the report: gaps, unpriced GPUs, a previous week that is missing."""
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    near_oom: NearOom | None = None
    """None when no enabled rule has role ``near_oom``: no near-OOM figures."""
    prices: PricesUsed | None = None
    """None when unknown (tables read back, or built by hand)."""
    trend: tuple[tuple[str, pa.Table], ...] = ()
    """Earlier periods' ``team_weekly`` tables from the dataset, oldest first, labelled."""

    def __post_init__(self) -> None:
        for name, schema in SCHEMAS.items():
            table = self.tables.get(name)
            if table is None:
                raise ValueError(f"report tables: {name} is missing")
            if not table.schema.equals(schema, check_metadata=False):
                raise ValueError(f"report tables: {name} does not have the {name} schema")


def empty_tables() -> dict[str, pa.Table]:
    """A valid report's tables for a period with nothing in it."""
    return {name: schema.empty_table() for name, schema in SCHEMAS.items()}
