"""The ``gpu_hourly`` table: one row per GPU per hour, built column by column.

A 10,000-GPU week is 1.7 million rows, so nothing here loops over rows in Python: device
attributes are computed once per GPU and spread with dictionary arrays, metrics come as
(GPUs x hours) arrays from the history, and money is multiplied as decimals by pyarrow.

What the columns mean is in ``gpuwatch.report.schema``; how they are derived:

- the holder of a GPU-hour is the pod the exporter labelled it with for most of the
  hour; its workload and team come from the cluster as it is at the end of the period
  (a pod gone by then keeps its namespace, with no workload, and its namespace's team);
- a GPU costs from when its node was created (the cluster's record); a node gone by the
  end of the period has no pool or capacity type to price it by, so its hours are listed
  without cost and a data-quality note counts them; a MIG instance costs its share of
  the GPU (one slice of the profile's ``mig_slices`` in the price book);
- ``idle_cost`` is the cost times the idle fraction; an hour without samples has no
  utilization and so no idle cost: a gap is not idle time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gpuwatch.analysis.attribution import GpuContext
from gpuwatch.analysis.ownership import OwnerIndex, team_of
from gpuwatch.analysis.pricing import PriceBook
from gpuwatch.model.cluster import ClusterState, Pod
from gpuwatch.model.findings import DataQualityNote
from gpuwatch.model.metrics import (
    Aggregate,
    AggregateSpec,
    GpuDevice,
    HistoryFrame,
    HolderHistory,
    PodRef,
    Signal,
)
from gpuwatch.report.schema import GPU_HOURLY, MONEY

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


@dataclass(frozen=True)
class HourlyInputs:
    frame: HistoryFrame
    """``SPECS`` at every hour end of the period."""
    holders: HolderHistory
    contexts: Sequence[GpuContext]
    """``contexts[i]`` describes ``frame.devices[i]`` (node, pool, capacity type)."""
    cluster: ClusterState
    book: PriceBook
    team_label: str | None
    sample_interval_s: float
    """Seconds between two samples of one GPU: turns sample counts into coverage."""


def gpu_hourly(inputs: HourlyInputs) -> tuple[pa.Table, list[DataQualityNote]]:
    """The table, and notes on what could not be priced."""
    frame = inputs.frame
    devices = frame.devices
    n, h = len(devices), frame.times_s.size
    if n == 0 or h == 0:
        return GPU_HOURLY.empty_table(), []
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

    holder_columns = _holders(inputs, [d.device_id for d in devices])
    prices, currencies, notes = _prices(inputs.book, contexts, devices)
    cost, idle = _money(inputs, prices, hour_start_s, row_device)

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
        **holder_columns,
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
    }
    return pa.Table.from_arrays(list(columns.values()), schema=GPU_HOURLY), notes


def _holders(inputs: HourlyInputs, device_ids: Sequence[str]) -> dict[str, pa.Array]:
    """namespace, pod, workload, team per row, from the pod vocabulary."""
    history = inputs.holders
    codes = history.aligned(device_ids).reshape(-1)
    if history.times_s.size != inputs.frame.times_s.size:
        raise ValueError("holders and history must cover the same hours")
    pods = {(p.namespace, p.name): p for p in inputs.cluster.pods}
    owners = OwnerIndex(inputs.cluster.controllers)
    namespace_labels = {ns.name: ns.labels for ns in inputs.cluster.namespaces}
    vocabulary: dict[str, list[str | None]] = {
        "namespace": [],
        "pod": [],
        "workload": [],
        "team": [],
    }
    for ref in history.pods:
        pod = pods.get((ref.namespace, ref.name))
        vocabulary["namespace"].append(ref.namespace or None)
        vocabulary["pod"].append(ref.name)
        vocabulary["workload"].append(owners.workload_of(pod) if pod is not None else None)
        vocabulary["team"].append(_team(ref, pod, inputs.team_label, namespace_labels))
    held = codes >= 0
    indices = pa.array(np.where(held, codes, 0).astype(np.int32), mask=~held)
    return {
        name: pa.DictionaryArray.from_arrays(indices, pa.array(values, pa.string())).cast(
            pa.string()
        )
        for name, values in vocabulary.items()
    }


def _team(
    ref: PodRef,
    pod: Pod | None,
    team_label: str | None,
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> str | None:
    if pod is not None:
        return team_of(pod, team_label, namespace_labels)
    if team_label and namespace_labels.get(ref.namespace, {}).get(team_label):
        return namespace_labels[ref.namespace][team_label]
    return ref.namespace or None


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
) -> tuple[pa.Array, pa.Array]:
    """cost = price x the part of the hour the GPU existed; idle = cost x (1 - util)."""
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
    idle_fraction = np.clip(1.0 - util, 0.0, 1.0)
    idle_dec = pc.round(pa.array(idle_fraction, mask=np.isnan(util)), 6).cast(MONEY)
    idle = pc.round(pc.multiply(cost, idle_dec), 6).cast(MONEY)
    return cost, idle


def _created_s(created: datetime | None) -> float:
    return created.timestamp() if created is not None else float("-inf")
