"""Decoding the columns of a Parquet export of raw exporter samples into arrays: label
columns as the dictionaries Parquet stores them (a million rows' labels are never turned
into strings), devices and pods as codes, timestamps as unix seconds; a row group decoded
(``RowGroup``), each column when first asked for.

Kept apart from ``gpuwatch.sources.samples_file`` (which finds the row groups of a range,
puts their rows on the grid and answers the metrics seam) so that each stays one job.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gpuwatch.model.metrics import GpuDevice, PodRef

UNIT_SCALE = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
"""Ticks of a timestamp unit in a second."""


KEYS = ("timestamp", "UUID", "GPU_I_ID")
"""The columns that place a row: its time and device."""


def read_columns(file: pq.ParquetFile, group: int, wanted: set[str]) -> dict[str, pa.ChunkedArray]:
    """A row group's keys and the ``wanted`` columns that the file has, in one read."""
    names = file.schema_arrow.names
    columns = [c for c in (*KEYS, *sorted(wanted)) if c in names]
    table = file.read_row_group(group, columns=columns)
    return {name: table[name] for name in table.column_names}


class RowGroup:
    """One row group, decoded: each row's device and grid time; its pods and metric
    columns read when first asked for (a read of a few signals reads those columns),
    and with the keys in one read where an earlier group was asked for them."""

    def __init__(
        self,
        file: pq.ParquetFile,
        group: int,
        row_of: dict[str, int],
        step_s: int,
        wanted: set[str],
    ) -> None:
        """``wanted``: the columns to read with the keys, and where a column asked for
        later is added (the next groups then read it with theirs)."""
        self.file, self.group, self.wanted = file, group, wanted
        names = self.names = frozenset(file.schema_arrow.names)
        keys = [c for c in KEYS if c in names]
        self._columns = read_columns(file, group, wanted)
        unix_s = seconds(self._columns.pop("timestamp"))
        self.time_s = -(-unix_s // step_s) * step_s
        # Rows in time order (as exporters write them) are found by bisection.
        self.ordered = bool(np.all(self.time_s[1:] >= self.time_s[:-1]))
        codes, keys_found = key_codes(pa.table({k: self._columns.pop(k) for k in keys[1:]}))
        lut = np.array([row_of.get(k, -1) for k in keys_found] + [-1], dtype=np.int64)
        self.device = lut[codes]
        self.known = bool(np.all(self.device >= 0))
        self._values: dict[str, np.ndarray] = {}
        self._pods: tuple[np.ndarray, list[PodRef]] | None = None
        self.pods_distinct = False

    def _column(self, name: str) -> pa.ChunkedArray:
        self.wanted.add(name)  # and read with the keys of the next groups
        found = self._columns.pop(name, None)
        return found if found is not None else self.file.read_row_group(self.group, [name])[name]

    def values(self, name: str) -> np.ndarray | None:
        """A metric's column as floats, NaN where the exporter sent none."""
        if name not in self.names:
            return None
        found = self._values.get(name)
        if found is None:
            found = self._values[name] = floats(self._column(name))
        return found

    @property
    def pod(self) -> np.ndarray:
        return self._pod_codes()[0]

    @property
    def pods(self) -> list[PodRef]:
        return self._pod_codes()[1]

    def _pod_codes(self) -> tuple[np.ndarray, list[PodRef]]:
        if self._pods is None:
            labels = {c: self._column(c) for c in ("pod", "namespace") if c in self.names}
            table = pa.table(labels) if labels else pa.table({"rows": pa.nulls(self.time_s.size)})
            self._pods = pod_codes(table)
            # A pod without a namespace and one in namespace "" are one PodRef.
            self.pods_distinct = len(set(self._pods[1])) == len(self._pods[1])
        return self._pods


def encoded(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """A label column as codes (-1 where null) and the values they index; read as the
    dictionary Parquet stores, the labels of a million rows are never strings."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column.cast(pa.string()))
    combined = column.unify_dictionaries().combine_chunks()
    indices = combined.indices
    if indices.null_count:
        indices = indices.fill_null(-1)
    codes = indices.to_numpy(zero_copy_only=False)
    codes = codes.astype(np.int32 if codes.itemsize <= 4 else np.int64, copy=False)
    return codes, [str(v) for v in combined.dictionary.to_pylist()]


def last_rows(codes: np.ndarray, count: int, wanted: np.ndarray) -> np.ndarray:
    """For each of ``count`` codes, the last row that has it (-1: none, or not wanted),
    read from the end a slice at a time: in time order, the newest rows name every
    device, so the scan seldom goes further back than a few sample times."""
    last = np.full(count, -1, dtype=np.int64)
    missing = wanted.copy()
    end, size = len(codes), max(4 * count, 4096)
    while end > 0 and missing.any():
        start = max(end - size, 0)
        unique, first = np.unique(codes[start:end][::-1], return_index=True)
        new = missing[unique]
        last[unique[new]] = end - 1 - first[new]
        missing[unique[new]] = False
        end = start
    return last


def key_codes(table: pa.Table) -> tuple[np.ndarray, list[str]]:
    """Each row's device as a code, and the device ids (``device_id``) the codes index."""
    u_idx, u_names = encoded(table["UUID"])
    if "GPU_I_ID" not in table.column_names:
        return u_idx, u_names
    m_idx, m_names = encoded(table["GPU_I_ID"])
    combined = u_idx.astype(np.int64) * (len(m_names) + 1) + m_idx + 1
    unique, codes = np.unique(combined, return_inverse=True)
    keys = []
    for value in unique.tolist():
        u, m = divmod(value, len(m_names) + 1)
        keys.append(u_names[u] if m == 0 else f"{u_names[u]}/mig-{m_names[m - 1]}")
    return codes.astype(np.int64), keys


def pod_codes(table: pa.Table) -> tuple[np.ndarray, list[PodRef]]:
    """Each row's pod as a code (-1: no pod label), and the pods the codes index."""
    if "pod" not in table.column_names:
        return np.full(table.num_rows, -1, dtype=np.int64), []
    p_idx, p_names = encoded(table["pod"])
    if "namespace" in table.column_names:
        n_idx, n_names = encoded(table["namespace"])
    else:
        n_idx, n_names = np.full(table.num_rows, -1, dtype=np.int64), []
    # (pod, namespace) pairs as one number, those seen numbered in order: no sort. An
    # unlabelled row's number is below every pod's (its pod index is -1).
    width = len(n_names) + 1
    kind = np.int32 if (len(p_names) + 1) * width < 2**31 else np.int64
    pair = (p_idx + 1).astype(kind) * kind(width)
    pair += n_idx.astype(kind) + kind(1)
    seen = np.bincount(pair, minlength=(len(p_names) + 1) * width) > 0
    seen[:width] = False
    number = np.where(seen, np.cumsum(seen) - 1, -1).astype(kind)
    codes = number[pair]
    pods = [
        PodRef(n_names[n - 1] if n else "", p_names[p])
        for p, n in (divmod(int(k) - width, width) for k in np.flatnonzero(seen))
    ]
    return codes, pods


def device_of(row: dict[str, object]) -> GpuDevice:
    pod, namespace = row.get("pod"), row.get("namespace")
    mig = row.get("GPU_I_ID")
    gpu = row.get("gpu")
    return GpuDevice(
        uuid=str(row["UUID"]),
        index=int(str(gpu)) if gpu is not None and str(gpu).isdigit() else -1,
        node=str(row.get("Hostname") or ""),
        model_name=str(row.get("modelName") or ""),
        pci_bus_id=str(row.get("pci_bus_id") or ""),
        mig_profile=str(row["GPU_I_PROFILE"]) if row.get("GPU_I_PROFILE") else None,
        mig_instance_id=int(str(mig)) if mig is not None and str(mig).isdigit() else None,
        pod=PodRef(str(namespace or ""), str(pod)) if pod else None,
        container=str(row["container"]) if row.get("container") else None,
    )


def floats(column: pa.ChunkedArray) -> np.ndarray:
    """A metric column as float64, NaN where null (the exporter sent no value); nulls
    filled by Arrow, as numpy's conversion of a column with nulls is a slow path."""
    if isinstance(column, pa.ChunkedArray):
        combined = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    else:
        combined = column
    if combined.type != pa.float64():
        combined = combined.cast(pa.float64(), safe=False)
    if combined.null_count:
        combined = pc.fill_null(combined, np.nan)
    return np.asarray(combined.to_numpy(zero_copy_only=False), dtype=np.float64)


def interval_s(times_s: np.ndarray) -> int:
    """The sample interval: the median gap between one device's samples (60 s when a
    device has a single sample)."""
    gaps = np.diff(np.unique(times_s))
    return int(np.median(gaps)) if gaps.size else 60


def seconds(column: pa.ChunkedArray) -> np.ndarray:
    """Unix seconds of a timestamp column (Parquet keeps milliseconds or finer)."""
    scale = UNIT_SCALE[getattr(column.type, "unit", "s")]
    raw = column.to_numpy() if isinstance(column, pa.ChunkedArray) else np.asarray(column)
    return raw.view(np.int64) // scale
