"""The ``gpu_hourly`` and ``holder_hourly`` tables: one row per GPU per hour, and one per
GPU, hour and holder, built column by column.

A 10,000-GPU week is 1.7 million rows, so nothing here loops over rows in Python: device
attributes are computed once per GPU and spread with dictionary arrays, metrics come as
(GPUs x hours) arrays from the history, and money is multiplied as decimals by pyarrow
(and split between holders as exact micro-units, ``gpuwatch.weekly.micro``).

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
from gpuwatch.report.schema import GPU_HOURLY, HOLDER_HOURLY, MONEY
from gpuwatch.weekly.holders import EVIDENCE, HeldHours, held_hours
from gpuwatch.weekly.micro import from_micro, split, to_micro

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
_PER_GPU = ("hour", "device_id", "node", "pool")
_PER_HOUR = ("util_mean_ratio", "coverage_ratio", "currency")


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
    row_device = pa.array(np.repeat(np.arange(n, dtype=np.int32), h))
    hour_start_s = np.tile(frame.times_s - HOUR_S, n)

    def per_device(values: Sequence[object], type_: pa.DataType | None = None) -> pa.Array:
        return pc.take(pa.array(values, type=type_ or pa.string()), row_device)

    def per_hour(name: str) -> pa.Array:
        values = frame.values[SPECS[name]].reshape(-1)
        return pa.array(values, mask=np.isnan(values))

    contexts = inputs.contexts
    samples = np.nan_to_num(frame.values[SPECS["samples"]]).reshape(-1)
    coverage = np.minimum(samples * inputs.sample_interval_s / HOUR_S, 1.0)
    power = frame.values[SPECS["power_mean_w"]].reshape(-1)
    energy = power * coverage / 1000.0

    prices, currencies, notes = _prices(inputs.book, contexts, devices)
    cost, idle, existed = _money(inputs, prices, hour_start_s, row_device, coverage)
    held = held_hours(
        inputs.holders,
        exporter,
        [d.device_id for d in devices],
        contexts,
        inputs.cluster,
        coverage.reshape(n, h) > 0,
        existed.reshape(n, h),
    )
    columns = {
        "hour": pa.array(hour_start_s, type=pa.timestamp("s", tz="UTC")),
        "gpu_uuid": per_device([d.uuid for d in devices]),
        "device_id": per_device([d.device_id for d in devices]),
        "gpu_index": per_device([d.index if d.index >= 0 else None for d in devices], pa.int32()),
        "mig_profile": per_device([d.mig_profile for d in devices]),
        "node": per_device([d.node for d in devices]),
        "pool": per_device([c.pool for c in contexts]),
        "model": per_device(
            [c.model or d.model_name or None for c, d in zip(contexts, devices, strict=True)]
        ),
        "capacity_type": per_device([c.capacity_type if c.node else None for c in contexts]),
        **_named(held.holders, held.main),
        "util_mean_ratio": per_hour("util_mean_ratio"),
        "util_p95_ratio": per_hour("util_p95_ratio"),
        "fb_used_max_mib": per_hour("fb_used_max_mib"),
        "fb_used_max_ratio": per_hour("fb_used_max_ratio"),
        "power_mean_w": per_hour("power_mean_w"),
        "energy_kwh": pa.array(energy, mask=np.isnan(energy)),
        "coverage_ratio": pa.array(coverage),
        "cost": cost,
        "idle_cost": idle,
        "currency": per_device(currencies),
        "allocated_ratio": pa.array(np.round(held.allocated, 6)),
    }
    table = pa.Table.from_arrays(list(columns.values()), schema=GPU_HOURLY)
    return Hourly(table, holder_table(table, held), tuple(notes), exporter)


def holder_table(hourly: pa.Table, held: HeldHours) -> pa.Table:
    """``holder_hourly``: a row per holder of each row of ``hourly`` (and one for the
    unallocated rest), its part of the hour's cost and idle cost."""
    rows = pa.array(held.cell)
    taken = {name: pc.take(hourly[name], rows) for name in (*_PER_GPU, *_PER_HOUR)}
    cost, cost_valid = to_micro(hourly["cost"])
    idle, idle_valid = to_micro(hourly["idle_cost"])
    rest = held.code < 0
    columns = {
        **{name: taken[name] for name in _PER_GPU},
        **_named(held.holders, held.code),
        "share_ratio": pa.array(np.round(held.fraction, 6)),
        "evidence": pa.DictionaryArray.from_arrays(
            pa.array(np.where(rest, 0, held.evidence).astype(np.int32), mask=rest),
            pa.array(EVIDENCE),
        ).cast(pa.string()),
        "util_mean_ratio": taken["util_mean_ratio"],
        "coverage_ratio": taken["coverage_ratio"],
        "cost": from_micro(split(cost, held.cell, held.fraction), cost_valid[held.cell]),
        "idle_cost": from_micro(split(idle, held.cell, held.fraction), idle_valid[held.cell]),
        "currency": taken["currency"],
    }
    return pa.Table.from_arrays(list(columns.values()), schema=HOLDER_HOURLY)


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
    inputs: HourlyInputs,
    prices: Sequence[Decimal | None],
    hour_start_s: np.ndarray,
    row_device: pa.Array,
    coverage: np.ndarray,
) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """cost = price x the part of the hour the GPU existed; idle = cost x the part of the
    hour with samples x (1 - util): a minute nobody measured is not an idle minute. Also
    the part of each hour the GPU existed."""
    n = len(inputs.frame.devices)
    created = np.array(
        [_created_s(c.node.created_at) if c.node is not None else np.nan for c in inputs.contexts],
        dtype=np.float64,
    )[:n]
    start = hour_start_s.astype(np.float64)
    born = np.repeat(created, inputs.frame.times_s.size)
    # A gone node (NaN) has no price, so its factor does not matter.
    existed = np.clip((start + HOUR_S - np.nan_to_num(born, nan=-np.inf)) / HOUR_S, 0.0, 1.0)
    price = pc.take(pa.array(list(prices), type=MONEY), row_device)
    factor = pc.round(pa.array(existed), 6).cast(MONEY)
    cost = pc.round(pc.multiply(price, factor), 6).cast(MONEY)
    cost = pc.if_else(pa.array(existed > 0), cost, pa.scalar(None, MONEY))
    util = inputs.frame.values[SPECS["util_mean_ratio"]].reshape(-1)
    idle_fraction = coverage * np.clip(1.0 - util, 0.0, 1.0)
    idle_dec = pc.round(pa.array(idle_fraction, mask=np.isnan(util)), 6).cast(MONEY)
    idle = pc.round(pc.multiply(cost, idle_dec), 6).cast(MONEY)
    return cost, idle, existed


def _created_s(created: datetime | None) -> float:
    return created.timestamp() if created is not None else float("-inf")
