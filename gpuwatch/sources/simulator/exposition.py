"""The simulator's cluster in the formats real systems emit.

``render_text`` is what ``gpuwatch simulate serve`` answers on ``/metrics`` (the
Prometheus text format dcgm-exporter serves); ``write_openmetrics`` writes history with
timestamps for ``promtool tsdb create-blocks-from openmetrics``, and
``write_samples_parquet`` the same samples as a Parquet export of raw samples. Both carry the real
metric names, units and labels, so a Prometheus fed by either answers gpuwatch's
queries exactly as one scraping dcgm-exporter in a cluster would. ``kubectl_json`` is
the cluster's objects as ``kubectl get -A -o json`` prints them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gpuwatch.kube.objects import kube_list, state_to_kube
from gpuwatch.model.cluster import ClusterState
from gpuwatch.model.metrics import FloatArray, SeriesBlock, Signal
from gpuwatch.sources.simulator.layout import SimGpu

DRIVER_VERSION = "550.90.07"


@dataclass(frozen=True)
class Family:
    name: str
    help: str
    profiling_only: bool = False


FAMILIES = (
    Family("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %)."),
    Family("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "Ratio of time the graphics engine is active.", True),
    Family("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB)."),
    Family("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB)."),
    Family("DCGM_FI_DEV_FB_RESERVED", "Framebuffer memory reserved (in MiB)."),
    Family("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C)."),
    Family("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W)."),
    Family("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered."),
    Family("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "Ratio of cycles the tensor pipe is active.", True),
)
FAMILY_NAMES = tuple(f.name for f in FAMILIES)


def family_values(block: SeriesBlock, gpus: Sequence[SimGpu]) -> dict[str, FloatArray]:
    """Per metric family, an array (gpus, times) of exported values; NaN = not exported."""
    v = block.values
    reserved = np.array([g.gpu_model.fb_reserved_mib for g in gpus], dtype=np.float64)[:, None]
    profiling = np.array([g.gpu_model.profiling for g in gpus], dtype=bool)[:, None]
    used = v[Signal.FB_USED_MIB]
    nan = np.full_like(used, np.nan)
    return {
        "DCGM_FI_DEV_GPU_UTIL": np.round(v[Signal.UTIL_RATIO] * 100.0),
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE": np.where(profiling, v[Signal.UTIL_RATIO], nan),
        "DCGM_FI_DEV_FB_USED": used,
        "DCGM_FI_DEV_FB_FREE": v[Signal.FB_TOTAL_MIB] - used - reserved,
        "DCGM_FI_DEV_FB_RESERVED": np.where(np.isnan(used), nan, reserved),
        "DCGM_FI_DEV_GPU_TEMP": v[Signal.TEMP_C],
        "DCGM_FI_DEV_POWER_USAGE": v[Signal.POWER_W],
        "DCGM_FI_DEV_XID_ERRORS": v[Signal.XID],
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": np.where(profiling, v[Signal.TENSOR_ACTIVE_RATIO], nan),
    }


def series_labels(gpu: SimGpu, exported: bool, scrape_labels: bool = False) -> str:
    """The label set dcgm-exporter puts on a GPU's series, rendered ``{a="b",...}``.

    ``exported``: as seen behind a ServiceMonitor without honorLabels, where the
    workload's pod labels become ``exported_*`` and the plain ones name the exporter.
    """
    d = gpu.device
    pairs = [
        ("gpu", str(d.index)),
        ("UUID", d.uuid),
        ("device", f"nvidia{d.index}"),
        ("modelName", d.model_name),
        ("Hostname", d.node),
        ("pci_bus_id", d.pci_bus_id),
        ("DCGM_FI_DRIVER_VERSION", DRIVER_VERSION),
    ]
    if exported:
        pairs += [
            ("pod", f"nvidia-dcgm-exporter-{d.node}"),
            ("namespace", "gpu-operator"),
            ("container", "nvidia-dcgm-exporter"),
        ]
    if d.pod is not None:
        prefix = "exported_" if exported else ""
        pairs += [
            (f"{prefix}pod", d.pod.name),
            (f"{prefix}namespace", d.pod.namespace),
            (f"{prefix}container", d.container or "main"),
        ]
    if scrape_labels:
        pairs += [("instance", f"{d.node}:9400"), ("job", "nvidia-dcgm-exporter")]
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def render_text(block: SeriesBlock, gpus: Sequence[SimGpu], exported: bool = False) -> str:
    """The exposition of the block's last sample, as dcgm-exporter's ``/metrics``."""
    values = family_values(block, gpus)
    labels = [series_labels(g, exported) for g in gpus]
    lines: list[str] = []
    for family in FAMILIES:
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} gauge")
        column = values[family.name][:, -1] if block.times_s.size else []
        for label, value in zip(labels, column, strict=False):
            if not np.isnan(value):
                lines.append(f"{family.name}{label} {_number(value)}")
    return "\n".join(lines) + "\n"


def write_openmetrics(
    out: TextIO,
    blocks: Iterable[SeriesBlock],
    gpus: Sequence[SimGpu],
    exported: bool = False,
    families: Sequence[str] = FAMILY_NAMES,
) -> int:
    """Write every sample of ``blocks`` as OpenMetrics with timestamps; return the count.

    ``blocks`` must cover consecutive time ranges. Samples are grouped by family and by
    series, each series in time order, as promtool's backfill expects.
    """
    blocks = list(blocks)
    labels = [series_labels(g, exported, scrape_labels=True) for g in gpus]
    written = 0
    for family in FAMILIES:
        if family.name not in families:
            continue
        out.write(f"# HELP {family.name} {family.help}\n# TYPE {family.name} gauge\n")
        per_block = [family_values(b, gpus)[family.name] for b in blocks]
        for row, label in enumerate(labels):
            for block, values in zip(blocks, per_block, strict=True):
                series = values[row]
                keep = ~np.isnan(series)
                prefix = f"{family.name}{label} "
                out.writelines(
                    f"{prefix}{_number(v)} {int(t)}\n"
                    for v, t in zip(series[keep], block.times_s[keep], strict=True)
                )
                written += int(keep.sum())
    out.write("# EOF\n")
    return written


def write_samples_parquet(path: Path, blocks: Iterable[SeriesBlock], gpus: Sequence[SimGpu]) -> int:
    """Write every sample of ``blocks`` as a Parquet file of raw exporter samples (the
    layout ``gpuwatch.sources.samples_file`` reads): a row per GPU per sample time, in
    time order, one row group per block. Return the number of rows."""
    d = [g.device for g in gpus]
    labels = {
        "UUID": [x.uuid for x in d],
        "gpu": [str(x.index) for x in d],
        "modelName": [x.model_name for x in d],
        "Hostname": [x.node for x in d],
        "pci_bus_id": [x.pci_bus_id for x in d],
        "pod": [x.pod.name if x.pod else None for x in d],
        "namespace": [x.pod.namespace if x.pod else None for x in d],
        "container": [(x.container or "main") if x.pod else None for x in d],
    }
    # Per label, each device's index in a dictionary of the distinct values (-1: none).
    encoded = {}
    for name, values in labels.items():
        distinct = sorted({v for v in values if v is not None})
        at = {v: i for i, v in enumerate(distinct)}
        codes = np.array([-1 if v is None else at[v] for v in values], dtype=np.int32)
        encoded[name] = (codes, pa.array(distinct, pa.string()))
    written = 0
    writer: pq.ParquetWriter | None = None
    try:
        for block in blocks:
            values = family_values(block, gpus)
            sampled = ~np.isnan(values["DCGM_FI_DEV_GPU_UTIL"])
            col, row = np.nonzero(sampled.T)  # time-major: every GPU at one time, then the next
            columns: dict[str, pa.Array] = {
                "timestamp": pa.array(block.times_s[col], pa.timestamp("s", tz="UTC")),
                **{
                    name: pa.DictionaryArray.from_arrays(
                        pa.array(codes[row], mask=codes[row] < 0), dictionary
                    )
                    for name, (codes, dictionary) in encoded.items()
                },
            }
            for name in FAMILY_NAMES:
                picked = values[name][row, col]
                columns[name] = pa.array(picked, mask=np.isnan(picked))
            table = pa.table(columns)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table, row_group_size=max(table.num_rows, 1))
            written += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    return written


def _number(value: float) -> str:
    return format(float(value), ".10g")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def kubectl_json(state: ClusterState) -> str:
    """Every object of ``state`` as ``kubectl get nodes,pods,... -A -o json`` prints it."""
    return json.dumps(kube_list(state_to_kube(state)), indent=1) + "\n"
