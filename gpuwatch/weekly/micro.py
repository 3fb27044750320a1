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
    values = np.ascontiguousarray(values, dtype=np.int64)
    n = values.size
    words = np.empty(2 * n, dtype=np.int64)
    words[0::2] = values
    words[1::2] = values >> 63  # the sign, extended into the high word
    validity = pa.array(np.asarray(valid, dtype=bool)).buffers()[1] if n else None
    nulls = int(n - np.count_nonzero(valid))
    return pa.Array.from_buffers(MONEY, n, [validity, pa.py_buffer(words)], null_count=nulls)


def split(total: Micro, group: npt.NDArray[np.int64], fraction: npt.NDArray[np.float64]) -> Micro:
    """``total[group[r]] x fraction[r]`` for each row ``r``, rounded, the last row of each
    group taking what the others leave: each group adds up to its total exactly.

    Rows must come grouped (``group`` non-decreasing)."""
    rows = group.size
    if rows == 0:
        return np.zeros(0, np.int64)
    parts = np.rint(total[group] * fraction).astype(np.int64)
    last = np.ones(rows, dtype=bool)
    last[:-1] = group[1:] != group[:-1]
    first = np.flatnonzero(np.r_[True, last[:-1]])
    others = np.add.reduceat(np.where(last, 0, parts), first)
    parts[last] = total[group[last]] - others
    return parts
