"""Reading the report's tables as the figures need them: columns as arrays, keys with
their missing values named, money grouped by currency (never summed across currencies).

The big tables (``gpu_hourly``, ``holder_hourly``: millions of rows) are grouped the same
way by several figures, so ``Columns`` converts each column once: a key column to integer
codes (hashed once, not once per figure), a float column to numpy. Grouped sums are then
``numpy`` over the codes; money stays exact (``Groups.money``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

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

_INT64_LIMIT = 2**63 - 1


def money_by_currency(table: pa.Table | Columns, column: str) -> dict[str, Decimal]:
    """Sum of a money column per currency, nulls skipped; currencies sorted."""
    columns = Columns.of(table)
    groups = columns.groups([("currency", NO_CURRENCY)], columns.valid(column))
    sums = groups.money(column)
    return dict(sorted((key[0], amount) for key, amount in zip(groups.keys, sums, strict=True)))


def floats(table: pa.Table, column: str) -> np.ndarray:
    """A float column as numpy, null as NaN."""
    array = table[column]
    if not len(array):
        return np.zeros(0)
    if array.null_count:
        array = pc.fill_null(array, math.nan)
    return array.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def rows_of(table: pa.Table, columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """``table``'s rows as tuples of ``columns``' Python values, as ``to_pylist`` gives
    them; timestamps converted once per distinct value (a table of findings holds a few
    hundred distinct hours over thousands of rows)."""
    values = [_python_values(table[column]) for column in columns]
    return list(zip(*values, strict=True)) if values else [() for _ in range(table.num_rows)]


def _python_values(array: pa.ChunkedArray) -> list[Any]:
    if not pa.types.is_timestamp(array.type) or len(array) < 64:
        return array.to_pylist()
    array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    encoded = pc.dictionary_encode(array, null_encoding="encode")
    distinct = encoded.dictionary.to_pylist()
    return [distinct[index] for index in encoded.indices.to_numpy(zero_copy_only=False).tolist()]


@dataclass(frozen=True, eq=False)
class Keys:
    """A key column as integer codes: row ``i``'s key is ``names[codes[i]]``; a null is
    the key named for a missing value (one key with that name, if the column holds it
    too)."""

    codes: np.ndarray
    names: tuple[str, ...]


def key_codes(
    array: pa.ChunkedArray | pa.Array,
    missing: str,
    values: tuple[np.ndarray, list[Any]] | None = None,
) -> Keys:
    """``array``'s values as codes into its distinct values, nulls as ``missing``;
    from its ``value_codes`` when already at hand."""
    codes, names = values if values is not None else value_codes(array)
    names = list(names)
    if None in names:
        null = names.index(None)
        if missing in names:
            # One key, not two of one name: the nulls join it, their code goes.
            codes = np.where(codes == null, names.index(missing), codes)
            codes[codes > null] -= 1
            del names[null]
        else:
            names[null] = missing
    return Keys(codes, tuple(names))


def value_codes(array: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[Any]]:
    """``array``'s values as int64 codes into its distinct values (Python values, null
    as None), in the order they first appear.

    A column of the big tables often comes in long runs (a GPU's hours one after
    another): then only the first value of each run is hashed."""
    if isinstance(array, pa.ChunkedArray):
        array = array.chunk(0) if array.num_chunks == 1 else array.combine_chunks()
    size = len(array)
    starts = None
    if _runs(array[:_RUN_SAMPLE]) * _RUN_GAIN <= min(size, _RUN_SAMPLE):
        starts = _run_starts(array)
        array = array.take(pa.array(starts))
    encoded = pc.dictionary_encode(array, null_encoding="encode")
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    if starts is not None:
        codes = np.repeat(codes, np.diff(np.r_[starts, size]))
    return codes, encoded.dictionary.to_pylist()


_RUN_SAMPLE = 1 << 16
_RUN_GAIN = 8
"""Runs pay off when there are at most an eighth as many as values (measured: a compare
costs about a third of a hash), judged on the first ``_RUN_SAMPLE`` values."""


def _run_starts(array: pa.Array) -> np.ndarray:
    """Where each run of equal values starts (a null starts a run of its own)."""
    if len(array) < 2:
        return np.arange(len(array))
    changed = pc.not_equal(array[1:], array[:-1])
    if changed.null_count:
        changed = pc.fill_null(changed, True)
    return np.flatnonzero(np.r_[True, changed.to_numpy(zero_copy_only=False)])


def _runs(array: pa.Array) -> int:
    return int(_run_starts(array).size)


SUM_BLOCK = 1 << 20
"""Rows summed at a time. Floating-point sums depend on their order; pyarrow's group_by,
which computed these figures first, sums a batch of (at most) a million rows at a time
and adds the batches' sums: summing the same way keeps the figures of a table built in
one piece, as the report's are (``team_weekly``'s, written to the dataset, among them),
to the last bit."""


@dataclass(frozen=True, eq=False)
class Groups:
    """Some rows of a table grouped by one or more keys: ``ids[i]`` is the group of the
    ``i``-th row selected, ``keys[g]`` the key values of group ``g`` (in no particular
    order)."""

    columns: Columns
    rows: np.ndarray | None
    """The rows selected, a mask; None: all of them."""
    ids: np.ndarray
    keys: tuple[tuple[str, ...], ...]

    def of(self, values: np.ndarray) -> np.ndarray:
        """``values`` (one per row of the table) of the selected rows."""
        return values if self.rows is None else values[self.rows]

    def count(self) -> np.ndarray:
        """Per group, its rows (as floats: the sum of a one per row)."""
        return np.bincount(self.ids, minlength=len(self.keys)).astype(np.float64)

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Per group, the sum of ``values`` (one per selected row): in row order within
        each block of ``SUM_BLOCK`` rows, then the blocks' sums in order."""
        total = np.zeros(len(self.keys))
        for start in range(0, self.ids.size, SUM_BLOCK):
            end = start + SUM_BLOCK
            total += np.bincount(
                self.ids[start:end], weights=values[start:end], minlength=len(self.keys)
            )
        return total

    def money(self, column: str) -> list[Decimal]:
        """Per group, the exact sum of a decimal column, whose selected values must all
        be valid: in int64 units of its scale where no sum can overflow, else by pyarrow
        (in decimal128(38))."""
        array = self.columns.table[column]
        units = self.columns.units(column)
        if units is not None:
            chosen = self.of(units)
            largest = max(int(chosen.max()), -int(chosen.min())) if chosen.size else 0
            if largest * chosen.size <= _INT64_LIMIT:
                totals = np.zeros(len(self.keys), dtype=np.int64)
                np.add.at(totals, self.ids, chosen)
                scale = -array.type.scale
                return [Decimal(int(total)).scaleb(scale) for total in totals.tolist()]
        if self.rows is not None:
            array = array.filter(pa.array(self.rows))
        summed = (
            pa.table({"g": self.ids, "v": array})
            .group_by("g", use_threads=False)
            .aggregate([("v", "sum")])
        )
        found = dict(zip(summed["g"].to_pylist(), summed["v_sum"].to_pylist(), strict=True))
        return [found[group] for group in range(len(self.keys))]


def _decimal_units(column: pa.ChunkedArray) -> np.ndarray | None:
    """A decimal128 column as int64 multiples of its scale's unit (nulls as 0); None when
    a value does not fit in int64. (A decimal128 is 16 bytes of little-endian two's
    complement: it fits when the high word is the sign of the low one.)"""
    parts = []
    for chunk in column.chunks:
        words = np.frombuffer(chunk.buffers()[1], dtype=np.int64)
        pairs = words[2 * chunk.offset : 2 * (chunk.offset + len(chunk))].reshape(-1, 2)
        if chunk.null_count:
            valid = chunk.is_valid().to_numpy(zero_copy_only=False)
            pairs = np.where(valid[:, None], pairs, 0)
        if not np.array_equal(pairs[:, 1], pairs[:, 0] >> 63):
            return None
        parts.append(pairs[:, 0])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


class Columns:
    """One table's columns as the figures group them, each converted once."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self._keys: dict[tuple[str, str], Keys] = {}
        self._floats: dict[str, np.ndarray] = {}
        self._valid: dict[str, np.ndarray] = {}
        self._units: dict[str, np.ndarray | None] = {}
        self._values: dict[str, tuple[np.ndarray, list[Any]]] = {}

    @classmethod
    def of(cls, table: pa.Table | Columns) -> Columns:
        return table if isinstance(table, Columns) else cls(table)

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    def floats(self, column: str) -> np.ndarray:
        """A float column as numpy, null as NaN."""
        if column not in self._floats:
            self._floats[column] = floats(self.table, column)
        return self._floats[column]

    def valid(self, column: str) -> np.ndarray:
        """Where ``column`` is not null."""
        if column not in self._valid:
            valid = pc.is_valid(self.table[column]) if self.num_rows else pa.array([], pa.bool_())
            self._valid[column] = np.asarray(valid.to_numpy(zero_copy_only=False), dtype=bool)
        return self._valid[column]

    def units(self, column: str) -> np.ndarray | None:
        """A decimal128 column as int64 units of its scale (nulls as 0); None when a
        value does not fit in int64."""
        if column not in self._units:
            kind = self.table.schema.field(column).type
            if not pa.types.is_decimal128(kind):
                raise TypeError(f"{column}: expected a decimal128 column, got {kind}")
            self._units[column] = _decimal_units(self.table[column])
        return self._units[column]

    def values(self, column: str) -> tuple[np.ndarray, list[Any]]:
        """``value_codes`` of a column (its nulls as None)."""
        if column not in self._values:
            self._values[column] = value_codes(self.table[column])
        return self._values[column]

    def keys(self, column: str, missing: str) -> Keys:
        """A key column's codes, nulls as the key ``missing``."""
        if (column, missing) not in self._keys:
            values = self.values(column)
            self._keys[(column, missing)] = key_codes(self.table[column], missing, values)
        return self._keys[(column, missing)]

    def groups(self, by: Sequence[tuple[str, str]], rows: np.ndarray) -> Groups:
        """The ``rows`` (a mask) grouped by the key columns ``by``: (column, the key of a
        null) pairs."""
        keys = [self.keys(column, missing) for column, missing in by]
        if math.prod(len(key.names) for key in keys) > _INT64_LIMIT:
            raise ValueError("too many distinct keys to group by together")
        chosen = None if rows.all() else rows
        combined = None
        for key in keys:
            if len(key.names) > 1:  # one name (a single currency): nothing to tell apart
                codes = key.codes if chosen is None else key.codes[chosen]
                combined = codes if combined is None else combined * len(key.names) + codes
        if combined is None:
            combined = np.zeros(self.num_rows if chosen is None else int(rows.sum()), np.int64)
        present, ids = distinct(combined, math.prod(len(key.names) for key in keys))
        names = []
        for combined_code in present.tolist():
            parts = []
            rest = combined_code
            for key in reversed(keys):
                rest, index = divmod(rest, len(key.names))
                parts.append(key.names[index])
            names.append(tuple(reversed(parts)))
        return Groups(self, chosen, ids, tuple(names))


def distinct(codes: np.ndarray, space: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``codes`` (each in ``range(space)``), ascending, and each code's
    index among them: by counting when the space is small, else by sorting."""
    if space <= 4 * codes.size + 1024:
        present = np.flatnonzero(np.bincount(codes, minlength=space))
        if present.size == space:
            return present, codes
        lookup = np.zeros(space, dtype=np.int64)
        lookup[present] = np.arange(present.size)
        return present, lookup[codes]
    present, ids = np.unique(codes, return_inverse=True)
    return present, ids.astype(np.int64).reshape(-1)
