"""Money as whole micro-units (the sixth decimal place) in numpy, exactly.

The report's money is ``decimal128(18, 6)``; splitting a GPU-hour's cost between its
holders must keep every total a sum of its parts to the last digit, for 1.7 million
rows at a time. Decimal arithmetic in pyarrow has no grouped "give the rest to the last
row", so the split runs on the decimals' unscaled integers (int64 is exact to 9.2
trillion units of a currency) and goes back to decimals without rounding twice.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from gpuwatch.report.schema import MONEY

Micro = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]
UNIT = 1_000_000
"""Micro-units in one unit of a currency (and in a ratio of 1)."""


def to_micro(array: pa.Array | pa.ChunkedArray) -> tuple[Micro, Mask]:
    """``decimal128(18, 6)`` values as micro-units (0 where null), and where valid."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks else pa.array([], MONEY)
    if array.type != MONEY:
        raise TypeError(f"expected {MONEY}, got {array.type}")
    n = len(array)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    # A decimal128 is two little-endian 64-bit words; below 2**63 the low word, read
    # as signed, is the value itself (two's complement).
    words = np.frombuffer(array.buffers()[1], dtype=np.int64)
    low = words[2 * array.offset : 2 * (array.offset + n) : 2]
    valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    return np.where(valid, low, 0), valid


def from_micro(values: Micro, valid: Mask) -> pa.Array:
    """Micro-units back to ``decimal128(18, 6)``; null where not ``valid``."""
    values = np.asarray(values, dtype=np.int64)
    n = values.size
    words = np.empty((n, 2), dtype=np.int64)
    words[:, 0] = values
    np.right_shift(values, 63, out=words[:, 1])  # the sign, extended into the high word
    validity = pa.array(np.asarray(valid, dtype=bool)).buffers()[1] if n else None
    nulls = int(n - np.count_nonzero(valid))
    return pa.Array.from_buffers(MONEY, n, [validity, pa.py_buffer(words)], null_count=nulls)


def split(total: Micro, group: npt.NDArray[np.int64], fraction: npt.NDArray[np.float64]) -> Micro:
    """``total[group[r]] x fraction[r]`` for each row ``r``, rounded, the last row of each
    group taking what the others leave: each group adds up to its total exactly.

    Rows must come grouped (``group`` non-decreasing)."""
    parts = total[group]  # a group of one row takes its total
    same = group[1:] == group[:-1]
    shared = np.zeros(group.size, dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    rows = np.flatnonzero(shared)
    if rows.size == 0:
        return parts
    group = group[rows]
    split_up = np.rint(total[group] * fraction[rows]).astype(np.int64)
    last = np.ones(rows.size, dtype=bool)
    last[:-1] = group[1:] != group[:-1]
    first = np.flatnonzero(np.r_[True, last[:-1]])
    others = np.add.reduceat(np.where(last, 0, split_up), first)
    split_up[last] = total[group[last]] - others
    parts[rows] = split_up
    return parts


def ratio_micro(ratio: npt.NDArray[np.float64]) -> Micro:
    """Ratios in 0..1 to the sixth place, half to even, as micro-units: what pyarrow's
    ``round(x, 6)`` then a cast to ``decimal128(18, 6)`` give (0 where NaN)."""
    scaled = np.rint(ratio * UNIT)
    return np.where(np.isnan(scaled), 0, scaled).astype(np.int64)


def times(total: Micro, factor: Micro) -> Micro:
    """``total x factor`` (micro-units both, ``factor`` a ratio in 0..1) rounded half to
    even to the micro-unit: pyarrow's decimal product rounded to six places, exactly.
    The whole units and the fraction are multiplied apart, so that no product passes
    int64 (a decimal128(18, 6) holds under 10**12 whole units)."""
    whole, fraction = np.divmod(total, UNIT)
    carried, rest = np.divmod(fraction * factor, UNIT)
    result = whole * factor + carried
    return result + ((rest > UNIT // 2) | ((rest == UNIT // 2) & (result % 2 == 1)))
