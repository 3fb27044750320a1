"""Reading the report's tables as the figures need them: columns as arrays, keys with
their missing values named, money grouped by currency (never summed across currencies).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NO_TEAM = "(unallocated)"
"""The key of GPU-hours no team holds (nobody requested the GPU)."""
NO_POOL = "(no pool)"
NO_WORKLOAD = "(no workload)"
NO_CURRENCY = "XXX"
"""ISO 4217's code for "no currency", for a priced row whose currency is missing."""

Money = Mapping[str, Decimal]
"""Currency code -> amount. Never summed across keys."""


def money_by_currency(table: pa.Table, column: str) -> dict[str, Decimal]:
    """Sum of a money column per currency, nulls skipped; currencies sorted."""
    narrow = table.select([column, "currency"])
    priced = narrow.filter(pc.is_valid(narrow[column]))
    if not priced.num_rows:
        return {}
    grouped = with_currency(priced).group_by("currency").aggregate([(column, "sum")])
    pairs = zip(grouped["currency"].to_pylist(), grouped[f"{column}_sum"].to_pylist(), strict=True)
    return dict(sorted(pairs))


def floats(table: pa.Table, column: str) -> np.ndarray:
    """A float column as numpy, null as NaN."""
    array = table[column]
    if not len(array):
        return np.zeros(0)
    return pc.fill_null(array, math.nan).to_numpy(zero_copy_only=False).astype(np.float64)


def keyed(array: pa.ChunkedArray, missing: str) -> pa.ChunkedArray:
    return pc.fill_null(array, missing)


def with_currency(table: pa.Table) -> pa.Table:
    index = table.schema.get_field_index("currency")
    return table.set_column(index, "currency", pc.fill_null(table["currency"], NO_CURRENCY))
