"""The ``gpu_hourly`` and ``holder_hourly`` tables: one row per GPU per hour, and one per
GPU, hour and holder, built column by column.

A 10,000-GPU week is 1.7 million rows, so nothing here loops over rows in Python: device
attributes are computed once per GPU and taken by index for every row of either table,
metrics come as (GPUs x hours) arrays from the history, and money is computed and split
between holders on exact micro-units (``gpuwatch.weekly.micro``: the same rounding as
pyarrow's decimals, without a decimal array per step).

What the columns mean is in ``gpuwatch.report.schema``; how they are derived:

- the holders of a GPU-hour and their shares are those ``gpuwatch.weekly.holders``
  finds (the exporter's label, else the cluster's allocations, as the cycle's cost
  takes them); ``gpu_hourly`` names the main one, ``holder_hourly`` has every one and
  the unallocated rest, the cost split between them to the micro-unit;
- a GPU costs from when its node was created (the cluster's record); a node gone by the
  end of the period has no pool or capacity type to price it by, so its hours are listed
  without cost and a data-quality note counts them; a MIG instance costs its share of
  the GPU (one slice of the profile's ``mig_slices`` in the price book);
- ``idle_cost`` is the cost times the part of the hour with samples times the idle
  fraction: minutes without samples are not idle time, and an hour without any has no
  utilization and so no idle cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.ownership import exporter_holders
from gpuwatch.analysis.pricing import PriceBook
from gpuwatch.model.cluster import ClusterState
from gpuwatch.model.findings import DataQualityNote, GpuHolder
from gpuwatch.model.metrics import (
    Aggregate,
    AggregateSpec,
    GpuDevice,
    HistoryFrame,
    HolderHistory,
    Signal,
)
from gpuwatch.report.schema import GPU_HOURLY, HOLDER_HOURLY, MONEY, UTC_S
from gpuwatch.weekly.holders import EVIDENCE, HeldHours, held_hours
from gpuwatch.weekly.micro import Mask, Micro, from_micro, ratio_micro, split, times, to_micro

HOUR_S = 3600
SPECS: dict[str, AggregateSpec] = {
    "util_mean_ratio": AggregateSpec(Signal.UTIL_RATIO, Aggregate.AVG, HOUR_S),
    "util_p95_ratio": AggregateSpec(Signal.UTIL_RATIO, Aggregate.P95, HOUR_S),
    "fb_used_max_mib": AggregateSpec(Signal.FB_USED_MIB, Aggregate.MAX, HOUR_S),
    "fb_used_max_ratio": AggregateSpec(Signal.FB_USED_RATIO, Aggregate.MAX, HOUR_S),
    "power_mean_w": AggregateSpec(Signal.POWER_W, Aggregate.AVG, HOUR_S),
    "samples": AggregateSpec(Signal.UTIL_RATIO, Aggregate.COUNT, HOUR_S),
}
"""The hourly aggregates the table is made of."""
_HOLDER_COLUMNS = ("namespace", "pod", "workload", "team")
_PER_GPU = ("device_id", "node", "pool", "currency")
"""The GPU's columns that ``holder_hourly`` repeats too."""
_DEVICE_ONLY = ("gpu_uuid", "gpu_index", "mig_profile", "model", "capacity_type")
_METRICS = ("util_p95_ratio", "fb_used_max_mib", "fb_used_max_ratio", "power_mean_w")


@dataclass(frozen=True)
class HourlyInputs:
    frame: HistoryFrame
    """``SPECS`` at every hour end of the period."""
    holders: HolderHistory
    contexts: Sequence[GpuContext]
    """``contexts[i]`` describes ``frame.devices[i]`` (node, pool, capacity type, and the
    cluster's allocations at the end of the period)."""
    cluster: ClusterState
    book: PriceBook
    team_label: str | None
    sample_interval_s: float
    """Seconds between two samples of one GPU: turns sample counts into coverage."""


@dataclass(frozen=True)
class Hourly:
    gpu_hourly: pa.Table
    holder_hourly: pa.Table
    notes: tuple[DataQualityNote, ...]
    exporter: tuple[GpuHolder, ...]
    """The exporter's pods (``inputs.holders.pods``) as holders, for the findings."""


def hourly_tables(inputs: HourlyInputs) -> Hourly:
    """Both tables, and notes on what could not be priced."""
    frame = inputs.frame
    devices = frame.devices
    n, h = len(devices), frame.times_s.size
    exporter = tuple(exporter_holders(inputs.holders.pods, inputs.cluster, inputs.team_label))
    if n == 0 or h == 0:
        return Hourly(GPU_HOURLY.empty_table(), HOLDER_HOURLY.empty_table(), (), exporter)
    if inputs.holders.times_s.size != h:
        raise ValueError("holders and history must cover the same hours")
    contexts = inputs.contexts
    samples = np.nan_to_num(frame.values[SPECS["samples"]])
    coverage = np.minimum(samples * inputs.sample_interval_s / HOUR_S, 1.0)
    prices, currencies, notes = _prices(inputs.book, contexts, devices)
    cells = _Cells(
        h,
        _per_gpu(devices, contexts, currencies),
        np.tile(frame.times_s - HOUR_S, n),
        frame.values[SPECS["util_mean_ratio"]].reshape(-1),
        coverage.reshape(-1),
        *_money(inputs, prices, coverage),
    )
    held = held_hours(
        inputs.holders,
        exporter,
        [d.device_id for d in devices],
        contexts,
        inputs.cluster,
        coverage > 0,
        cells.existed,
    )

    def per_hour(name: str) -> pa.Array:
        values = frame.values[SPECS[name]].reshape(-1)
        return pa.array(values, mask=np.isnan(values))

    energy = (frame.values[SPECS["power_mean_w"]] * coverage / 1000.0).reshape(-1)
    rows = pa.array(np.repeat(np.arange(n, dtype=np.int64), h))
    columns = {
        **cells.common(rows, slice(None), (*_PER_GPU, *_DEVICE_ONLY)),
        **_named(held.holders, held.main),
        **{name: per_hour(name) for name in _METRICS},
        "energy_kwh": pa.array(energy, mask=np.isnan(energy)),
        "cost": from_micro(cells.cost, cells.cost_valid),
        "idle_cost": from_micro(cells.idle, cells.idle_valid),
        "allocated_ratio": pa.array(np.round(held.allocated, 6)),
    }
    table = pa.Table.from_arrays([columns[name] for name in GPU_HOURLY.names], schema=GPU_HOURLY)
    return Hourly(table, holder_table(cells, held), tuple(notes), exporter)


@dataclass(frozen=True)
class _Cells:
    """What both tables take of each GPU-hour (cell ``device x hours + hour``): the
    per-GPU columns once per GPU, the rest flat over the cells."""

    hours: int
    per_gpu: dict[str, pa.Array]
    """One value per GPU of each column that repeats over its hours."""
    hour_start_s: npt.NDArray[np.int64]
    util: npt.NDArray[np.float64]
    coverage: npt.NDArray[np.float64]
    cost: Micro
    cost_valid: Mask
    idle: Micro
    idle_valid: Mask
    existed: npt.NDArray[np.float64]
    """(GPUs, hours): the part of each hour the GPU's node existed (0..1)."""

    def common(
        self, device: pa.Array, cell: npt.NDArray[np.int64] | slice, per_gpu: Sequence[str]
    ) -> dict[str, pa.Array]:
        """The columns both tables have, and the GPU's columns ``per_gpu``, for rows of
        GPU ``device`` and cell ``cell``. Columns holding the same values (the UUID and
        the device id of a GPU that is not a MIG instance) share one array."""
        taken: dict[int, pa.Array] = {}
        for name in per_gpu:
            values = self.per_gpu[name]
            if id(values) not in taken:
                taken[id(values)] = pc.take(values, device)
        util = self.util[cell]
        return {
            "hour": pa.array(self.hour_start_s[cell], type=UTC_S),
            **{name: taken[id(self.per_gpu[name])] for name in per_gpu},
            "util_mean_ratio": pa.array(util, mask=np.isnan(util)),
            "coverage_ratio": pa.array(self.coverage[cell]),
        }


def holder_table(cells: _Cells, held: HeldHours) -> pa.Table:
    """``holder_hourly``: a row per holder of each GPU-hour (and one for the unallocated
    rest), its part of the hour's cost and idle cost."""
    rest = held.code < 0
    columns = {
        **cells.common(pa.array(held.cell // cells.hours), held.cell, _PER_GPU),
        **_named(held.holders, held.code),
        "share_ratio": pa.array(np.round(held.fraction, 6)),
        "evidence": pa.DictionaryArray.from_arrays(
            pa.array(np.where(rest, 0, held.evidence).astype(np.int32), mask=rest),
            pa.array(EVIDENCE),
        ).cast(pa.string()),
        "cost": from_micro(
            split(cells.cost, held.cell, held.fraction), cells.cost_valid[held.cell]
        ),
        "idle_cost": from_micro(
            split(cells.idle, held.cell, held.fraction), cells.idle_valid[held.cell]
        ),
    }
    return pa.Table.from_arrays(
        [columns[name] for name in HOLDER_HOURLY.names], schema=HOLDER_HOURLY
    )


def _per_gpu(
    devices: Sequence[GpuDevice], contexts: Sequence[GpuContext], currencies: Sequence[str | None]
) -> dict[str, pa.Array]:
    """The columns whose value is the GPU's, one value per GPU."""
    string = {
        "gpu_uuid": [d.uuid for d in devices],
        "device_id": [d.device_id for d in devices],
        "mig_profile": [d.mig_profile for d in devices],
        "node": [d.node for d in devices],
        "pool": [c.pool for c in contexts],
        "model": [c.model or d.model_name or None for c, d in zip(contexts, devices, strict=True)],
        "capacity_type": [c.capacity_type if c.node else None for c in contexts],
        "currency": list(currencies),
    }
    arrays = {name: pa.array(values, pa.string()) for name, values in string.items()}
    if string["gpu_uuid"] == string["device_id"]:
        arrays["gpu_uuid"] = arrays["device_id"]
    return {
        **arrays,
        "gpu_index": pa.array([d.index if d.index >= 0 else None for d in devices], pa.int32()),
    }


def _named(vocabulary: Sequence[GpuHolder], codes: np.ndarray) -> dict[str, pa.Array]:
    """namespace, pod, workload, team of each row, from ``vocabulary`` (-1: nobody)."""
    held = codes >= 0
    indices = pa.array(np.where(held, codes, 0).astype(np.int32), mask=~held)
    values = {
        "namespace": [v.namespace or None for v in vocabulary],
        "pod": [v.pod for v in vocabulary],
        "workload": [v.workload for v in vocabulary],
        "team": [v.team or None for v in vocabulary],
    }
    return {
        name: pa.DictionaryArray.from_arrays(indices, pa.array(values[name], pa.string())).cast(
            pa.string()
        )
        for name in _HOLDER_COLUMNS
    }


def _prices(
    book: PriceBook, contexts: Sequence[GpuContext], devices: Sequence[GpuDevice]
) -> tuple[list[Decimal | None], list[str | None], list[DataQualityNote]]:
    """Per device: the price of its share of a GPU-hour and the currency."""
    prices: list[Decimal | None] = []
    currencies: list[str | None] = []
    unpriced: dict[str, int] = {}
    for ctx, device in zip(contexts, devices, strict=True):
        labels = ctx.node.labels if ctx.node is not None else {}
        price, reason = book.price(ctx.model, ctx.capacity_type, ctx.pool, labels, ctx.node_name)
        if price is None or ctx.node is None:
            why = reason if price is None else f"node {device.node} is gone from the cluster"
            unpriced[why] = unpriced.get(why, 0) + 1
            prices.append(None)
            currencies.append(None)
            continue
        prices.append(price.per_gpu_hour * _share(book, ctx, device))
        currencies.append(price.currency)
    notes = [
        DataQualityNote(kind="unpriced", message=f"{count} GPUs have no cost: {why}")
        for why, count in sorted(unpriced.items())
    ]
    return prices, currencies, notes


def _share(book: PriceBook, ctx: GpuContext, device: GpuDevice) -> Decimal:
    """The fraction of a GPU a device is: 1, or one MIG slice of its profile."""
    if device.mig_profile is None:
        return Decimal(1)
    entry = book.model(ctx.model)
    slices = (entry.mig_slices if entry else {}).get(device.mig_profile)
    if slices:
        return Decimal(1) / Decimal(slices)
    compute = device.mig_profile.split("g.", 1)[0]
    return Decimal(int(compute)) / Decimal(7) if compute.isdigit() else Decimal(1)


def _money(
    inputs: HourlyInputs, prices: Sequence[Decimal | None], coverage: npt.NDArray[np.float64]
) -> tuple[Micro, Mask, Micro, Mask, npt.NDArray[np.float64]]:
    """cost = price x the part of the hour the GPU existed; idle = cost x the part of the
    hour with samples x (1 - util): a minute nobody measured is not an idle minute. Both
    as micro-units (flat over the cells) and where known; also the part of each hour the
    GPU existed. Each factor is rounded to the sixth place, each product half to even."""
    frame = inputs.frame
    n = len(frame.devices)
    created = np.array(
        [_created_s(c.node.created_at) if c.node is not None else np.nan for c in inputs.contexts],
        dtype=np.float64,
    )[:n, None]
    start = (frame.times_s - HOUR_S).astype(np.float64)[None, :]
    # A gone node (NaN) has no price, so its factor does not matter.
    existed = np.clip((start + HOUR_S - np.nan_to_num(created, nan=-np.inf)) / HOUR_S, 0.0, 1.0)
    price, priced = to_micro(pa.array(list(prices), type=MONEY))
    cost = times(price[:, None], ratio_micro(existed)).reshape(-1)
    cost_valid = (priced[:, None] & (existed > 0)).reshape(-1)
    util = frame.values[SPECS["util_mean_ratio"]]
    idle_fraction = coverage * np.clip(1.0 - util, 0.0, 1.0)
    idle = times(cost, ratio_micro(idle_fraction).reshape(-1))
    idle_valid = cost_valid & ~np.isnan(util).reshape(-1)
    return cost, cost_valid, idle, idle_valid, existed


def _created_s(created: datetime | None) -> float:
    return created.timestamp() if created is not None else float("-inf")
