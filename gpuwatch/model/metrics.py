"""GPU metric signals, the window aggregates a cycle asks for, and the frames that hold them.

A *signal* is a per-sample quantity derived from DCGM exporter metrics (for instance
``fb_used_ratio = FB_USED / (FB_USED + FB_FREE + FB_RESERVED)``); an *aggregate* reduces a
signal over a window that ends at the evaluation instant, as PromQL's ``*_over_time``
functions do over ``(at - window, at]``. Sources compute aggregates where the data lives
(Prometheus on the server, the simulator in numpy), so a cycle never pulls raw samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class Signal(StrEnum):
    """Per-sample GPU quantities. The suffix is the unit."""

    UTIL_RATIO = "util_ratio"
    """0..1. ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` where the GPU has it, else
    ``DCGM_FI_DEV_GPU_UTIL / 100`` (GPU_UTIL counts any kernel running, so it overstates
    use; GR_ENGINE_ACTIVE is the fraction of time the graphics engine was busy)."""
    FB_USED_RATIO = "fb_used_ratio"
    """0..1. ``FB_USED / (FB_USED + FB_FREE + FB_RESERVED)``, RESERVED where exported."""
    FB_USED_MIB = "fb_used_mib"
    """``DCGM_FI_DEV_FB_USED`` in MiB."""
    FB_TOTAL_MIB = "fb_total_mib"
    """``FB_USED + FB_FREE + FB_RESERVED`` in MiB: the card's framebuffer."""
    TEMP_C = "temp_c"
    """``DCGM_FI_DEV_GPU_TEMP`` in degrees Celsius."""
    POWER_W = "power_w"
    """``DCGM_FI_DEV_POWER_USAGE`` in watts."""
    XID = "xid"
    """``DCGM_FI_DEV_XID_ERRORS``: the code of the last XID error, 0 when none."""
    TENSOR_ACTIVE_RATIO = "tensor_active_ratio"
    """0..1, ``DCGM_FI_PROF_PIPE_TENSOR_ACTIVE``."""
    POD_ATTACHED = "pod_attached"
    """1 when the sample carries a pod label (the exporter mapped a pod to the GPU), else 0."""


SIGNAL_UNITS: Mapping[Signal, str] = {
    Signal.UTIL_RATIO: "ratio",
    Signal.FB_USED_RATIO: "ratio",
    Signal.FB_USED_MIB: "MiB",
    Signal.FB_TOTAL_MIB: "MiB",
    Signal.TEMP_C: "C",
    Signal.POWER_W: "W",
    Signal.XID: "code",
    Signal.TENSOR_ACTIVE_RATIO: "ratio",
    Signal.POD_ATTACHED: "flag",
}


class Aggregate(StrEnum):
    """Reductions over ``(at - window_s, at]``, each the twin of a PromQL function."""

    AVG = "avg"  # avg_over_time
    MAX = "max"  # max_over_time
    MIN = "min"  # min_over_time
    LAST = "last"  # last_over_time
    COUNT = "count"  # count_over_time: samples present, the basis of coverage
    CHANGES = "changes"  # changes(): value changes between consecutive samples
    LAST_TS = "last_ts"  # timestamp(last_over_time()): unix seconds of the newest sample
    P95 = "p95"  # quantile_over_time(0.95): linear interpolation, as numpy's default


@dataclass(frozen=True, order=True)
class AggregateSpec:
    """One aggregate a cycle needs: a signal reduced over a window ending at ``at``."""

    signal: Signal
    aggregate: Aggregate
    window_s: int

    def __str__(self) -> str:
        return f"{self.aggregate}({self.signal}[{self.window_s}s])"


@dataclass(frozen=True)
class PodRef:
    """A pod named by namespace and name (what DCGM's pod labels carry)."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class GpuDevice:
    """One physical GPU, or one MIG instance of it, as the DCGM exporter labels it.

    ``pod`` is the pod the exporter mapped to the device at its newest sample, and
    ``shared_with`` the other pods it mapped to the same device then (time-slicing or
    MPS put several pods on one GPU). Which labels name pods is the source's choice
    (``exported_pod`` behind a ServiceMonitor without honorLabels, ``pod_name`` on older
    exporters, else ``pod``).
    """

    uuid: str
    index: int
    """The GPU's index on its node; -1 when the exporter does not say (older ones)."""
    node: str
    """The node the device reports; ``node_candidates[0]`` when there are several."""
    model_name: str
    pci_bus_id: str = ""
    mig_profile: str | None = None
    mig_instance_id: int | None = None
    pod: PodRef | None = None
    container: str | None = None
    shared_with: tuple[PodRef, ...] = ()
    node_candidates: tuple[str, ...] = ()
    """Every distinct value of the labels that may name the node, in order of
    preference (``Hostname`` may be the exporter pod's name; ``node`` the real one):
    the cluster's nodes decide which one is right."""

    @property
    def device_id(self) -> str:
        """Stable key of the device: the UUID, plus the MIG instance where there is one."""
        if self.mig_instance_id is None:
            return self.uuid
        return f"{self.uuid}/mig-{self.mig_instance_id}"

    @property
    def pods(self) -> tuple[PodRef, ...]:
        """Every pod the exporter maps to the device now."""
        return () if self.pod is None else (self.pod, *self.shared_with)

    @property
    def short_label(self) -> str:
        """What follows "GPU " in its name: ``3``, ``0 MIG 1g.10gb #2``; the UUID when the
        exporter gives no index (older exporters)."""
        name = str(self.index) if self.index >= 0 else self.uuid
        if self.mig_instance_id is not None:
            name += f" MIG {self.mig_profile or '?'} #{self.mig_instance_id}"
        return name

    @property
    def label(self) -> str:
        """How a person names it: ``GPU 3``, ``GPU 0 MIG 1g.10gb #2``, ``GPU GPU-5fa1...``."""
        return f"GPU {self.short_label}"


NO_NODE = "(no node label)"
"""How messages name the node of a GPU whose exporter gives no host label."""

INVENTORY_MAX_S = 3600
"""A GPU takes part in a cycle when it reported within the longest window asked for, or
within the last hour when that window is longer: a week-long window (for savings) must
not make every source scan a week to learn which GPUs exist."""


def inventory_window_s(request: WindowRequest) -> int:
    longest = max((s.window_s for s in request.specs), default=300)
    return min(longest, INVENTORY_MAX_S)


@dataclass(frozen=True)
class WindowRequest:
    """What one cycle asks a metrics source for: aggregates, all ending at ``at``."""

    at: datetime
    specs: frozenset[AggregateSpec]


@dataclass(frozen=True)
class WindowStats:
    """Aggregates per device, aligned with ``devices``; NaN where a device had no data.

    A device appears when it has a sample in the inventory window (``inventory_window_s``).
    ``sample_interval_s`` is the source's scrape or generation interval, needed to turn a
    sample count into a coverage ratio.
    """

    at: datetime
    sample_interval_s: float
    devices: tuple[GpuDevice, ...]
    values: Mapping[AggregateSpec, FloatArray] = field(default_factory=dict)

    def get(self, spec: AggregateSpec) -> FloatArray:
        """The array for ``spec``; all NaN when the source could not compute it."""
        found = self.values.get(spec)
        if found is None:
            return np.full(len(self.devices), np.nan)
        return found

    def coverage_ratio(self, signal: Signal, window_s: int) -> FloatArray:
        """Fraction of the window that has samples of ``signal``, in 0..1."""
        count = self.get(AggregateSpec(signal, Aggregate.COUNT, window_s))
        expected = max(window_s / self.sample_interval_s, 1.0)
        return np.clip(np.nan_to_num(count, nan=0.0) / expected, 0.0, 1.0)


@dataclass(frozen=True)
class HistoryRequest:
    """Aggregates evaluated at every ``step_s`` from ``start`` (exclusive) to ``end``.

    The point at time t reduces ``(t - window_s, t]``; with ``window_s == step_s`` the
    points tile the range (an hourly mean for every hour, say).
    """

    start: datetime
    end: datetime
    step_s: int
    specs: frozenset[AggregateSpec]

    def times_s(self) -> npt.NDArray[np.int64]:
        first = int(self.start.timestamp()) + self.step_s
        return np.arange(first, int(self.end.timestamp()) + 1, self.step_s, dtype=np.int64)


@dataclass(frozen=True)
class HistoryFrame:
    """``values[spec]`` has shape (devices, times); NaN where a GPU had no data."""

    devices: tuple[GpuDevice, ...]
    times_s: npt.NDArray[np.int64]
    values: Mapping[AggregateSpec, FloatArray]


@dataclass(frozen=True)
class HolderHistory:
    """Which pod held each GPU at each step: the pod the exporter labelled it with for
    most of the step. ``codes[i, j]`` indexes ``pods`` for ``device_ids[i]`` at
    ``times_s[j]``; -1 where no pod held it (or the step has no data)."""

    device_ids: tuple[str, ...]
    times_s: npt.NDArray[np.int64]
    pods: tuple[PodRef, ...]
    codes: npt.NDArray[np.int32]

    def aligned(self, device_ids: Sequence[str]) -> npt.NDArray[np.int32]:
        """``codes`` with one row per ``device_ids`` (all -1 for a device not here)."""
        row = {d: i for i, d in enumerate(self.device_ids)}
        out = np.full((len(device_ids), self.times_s.size), -1, dtype=np.int32)
        for i, device_id in enumerate(device_ids):
            j = row.get(device_id)
            if j is not None:
                out[i] = self.codes[j]
        return out


def fb_used_ratio(
    used_mib: FloatArray | float,
    free_mib: FloatArray | float,
    reserved_mib: FloatArray | float = 0.0,
) -> FloatArray:
    """Framebuffer used ratio: ``FB_USED / (FB_USED + FB_FREE + FB_RESERVED)``.

    Not ``FB_USED / FB_FREE``: that ratio passes 0.95 at about 49 % use (0.487 / 0.513).
    """
    used = np.asarray(used_mib, dtype=np.float64)
    total = (
        used + np.asarray(free_mib, dtype=np.float64) + np.asarray(reserved_mib, dtype=np.float64)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, used / total, np.nan)


@dataclass(frozen=True)
class SeriesBlock:
    """Raw samples on a regular time grid: ``values[signal]`` has shape (devices, times).

    NaN marks a missing sample (exporter down, GPU gone). ``times_s`` are unix seconds.
    """

    devices: tuple[GpuDevice, ...]
    times_s: npt.NDArray[np.int64]
    values: Mapping[Signal, FloatArray]
