"""The report dataset as a record of past spend, for budgets.

A month is longer than many Prometheus retentions; the weekly report's
``holder_hourly`` keeps every priced GPU-hour by holder. Budgets read it for the hours
of the month the metrics no longer hold. The store is opened only when asked, so a
cycle that needs nothing from it touches nothing.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from gpuwatch.config.settings import ReportSettings
from gpuwatch.model.budgets import RecordedSpend
from gpuwatch.model.errors import SourceError
from gpuwatch.report.schema import UTC_S
from gpuwatch.report.store import ReportStore
from gpuwatch.report.store_errors import ReportStoreError

_COLUMNS = ["hour", "cost", "currency", "team", "namespace", "pool", "workload"]


class DatasetSpend:
    """``holder_hourly`` of one cluster, read by hour range."""

    name = "report dataset"

    def __init__(self, settings: ReportSettings, cluster: str) -> None:
        self._settings = settings
        self._cluster = cluster

    def recorded_spend(self, start: datetime, end: datetime) -> RecordedSpend | None:
        """Priced holder-hours starting in ``[start, end)``; None when nothing was
        written. Raises ``SourceError`` when the dataset cannot be read."""
        location = self._settings.location
        if "://" not in location and not Path(location).expanduser().exists():
            return None  # nothing written here; opening the store would create the folder
        try:
            dataset = ReportStore.from_settings(self._settings).dataset("holder_hourly")
            wanted = (
                (ds.field("cluster") == self._cluster)
                & (ds.field("hour") >= pa.scalar(start, type=UTC_S))
                & (ds.field("hour") < pa.scalar(end, type=UTC_S))
            )
            table = dataset.to_table(columns=_COLUMNS, filter=wanted)
        except ReportStoreError as exc:
            if exc.kind == "not_found":
                return None
            raise SourceError(str(exc)) from exc
        table = table.filter(pc.is_valid(table["cost"]))
        hours = table["hour"].cast(pa.int64()).to_numpy(zero_copy_only=False)
        return RecordedSpend(
            hour_end_s=hours.astype(np.int64) + 3600,
            cost=np.asarray(table["cost"].cast(pa.float64()).to_numpy(zero_copy_only=False)),
            currency=tuple(table["currency"].to_pylist()),
            team=tuple(table["team"].to_pylist()),
            namespace=tuple(table["namespace"].to_pylist()),
            pool=tuple(table["pool"].to_pylist()),
            workload=tuple(table["workload"].to_pylist()),
        )
