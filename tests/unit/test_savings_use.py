"""The savings' hourly use, computed over all GPUs at once, is the per-GPU computation's:
the same arrays, bit for bit, on a small fleet with every kind of holder and gap."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np

from gpuwatch.analysis.attribution import APPROXIMATE, EXACT, GpuContext
from gpuwatch.analysis.savings.use import (
    ATTACHED_HOURLY,
    HOUR_S,
    MEMORY_HOURLY,
    UTIL_HOURLY,
    hourly_use,
)
from gpuwatch.model.cluster import Pod
from gpuwatch.model.findings import GpuHolder
from gpuwatch.model.metrics import HistoryFrame
from tests.builders import AT, context, device

HOURS = 30


def _reference(frame, contexts, pods):
    """The per-GPU loop ``hourly_use`` replaced, kept here as the specification."""
    n, hours = len(contexts), frame.times_s.size
    row_of = {d.device_id: i for i, d in enumerate(frame.devices)}
    rows = [row_of.get(c.device.device_id, -1) if c.device else -1 for c in contexts]

    def aligned(spec):
        values = frame.values.get(spec)
        out = np.full((n, hours), np.nan)
        if values is not None:
            for i, row in enumerate(rows):
                if row >= 0:
                    out[i] = values[row]
        return out

    attached = aligned(ATTACHED_HOURLY)
    held = np.zeros((n, hours))
    hour_starts = frame.times_s - HOUR_S
    for i, ctx in enumerate(contexts):
        if not ctx.holders:
            held[i] = (np.nan_to_num(attached[i], nan=0.0) > 0).astype(float)
            continue
        allocated = np.zeros(hours)
        for holder in ctx.holders:
            pod = pods.get((holder.namespace, holder.pod))
            started = pod.started_at.timestamp() if pod is not None and pod.started_at else None
            since = np.ones(hours) if started is None else (hour_starts >= started - HOUR_S)
            allocated += holder.share * since
        allocated = np.minimum(allocated, 1.0)
        labelled = ctx.device is not None and ctx.device.pod is not None
        if ctx.attribution == APPROXIMATE or not labelled:
            held[i] = allocated
        else:
            share = min(sum(h.share for h in ctx.holders), 1.0)
            held[i] = np.where(np.isnan(attached[i]), allocated, (attached[i] > 0) * share)
    return aligned(UTIL_HOURLY), aligned(MEMORY_HOURLY), held


def _fleet():
    rng = np.random.default_rng(3)
    times = np.arange(HOURS, dtype=np.int64) * HOUR_S + int(AT.timestamp()) - HOURS * HOUR_S
    pods: dict[tuple[str, str], Pod] = {}
    contexts: list[GpuContext] = []
    devices = []
    for i in range(40):
        dev = device(i % 8, f"node-{i // 8}", pod=f"p{i}" if i % 3 else None)
        holders = tuple(
            GpuHolder("team-a", f"p{i}-{k}", None, "team-a", float(rng.choice([1.0, 0.5, 0.3])))
            for k in range(i % 4)  # nobody, one, two or three holders
        )
        for k, holder in enumerate(holders):
            started = AT - timedelta(hours=float(rng.uniform(0, 40)))
            if (i + k) % 5:  # some pods without a start time, some not in the cluster
                pods[("team-a", holder.pod)] = Pod(
                    "team-a", holder.pod, "node", "Running", started_at=None if i % 7 else started
                )
        attribution = APPROXIMATE if i % 6 == 0 else EXACT
        ctx = replace(context(dev), holders=holders, attribution=attribution)
        contexts.append(ctx if i != 39 else replace(ctx, device=None))
        devices.append(dev)
    kept = devices[:35]  # the last GPUs are missing from the history
    values = {}
    for spec in (UTIL_HOURLY, MEMORY_HOURLY, ATTACHED_HOURLY):
        v = rng.uniform(0, 1, (len(kept), HOURS))
        if spec == ATTACHED_HOURLY:
            v = np.round(v)
        v[rng.random(v.shape) < 0.25] = np.nan
        values[spec] = v
    return HistoryFrame(tuple(kept), times, values), contexts, pods


def test_the_fleet_at_once_is_the_per_gpu_loop_bit_for_bit():
    frame, contexts, pods = _fleet()
    use = hourly_use(frame, contexts, pods, 7 * 24 * HOUR_S)
    util, memory, held = _reference(frame, contexts, pods)
    for got, want in ((use.util, util), (use.memory, memory), (use.held, held)):
        assert got.shape == want.shape
        assert got.tobytes() == want.tobytes()


def test_a_history_without_the_attached_aggregate():
    frame, contexts, pods = _fleet()
    frame = replace(frame, values={k: v for k, v in frame.values.items() if k != ATTACHED_HOURLY})
    use = hourly_use(frame, contexts, pods, 7 * 24 * HOUR_S)
    assert use.held.tobytes() == _reference(frame, contexts, pods)[2].tobytes()


def test_a_fleet_whose_every_gpu_is_in_the_history():
    frame, contexts, pods = _fleet()
    contexts = contexts[: len(frame.devices)]
    use = hourly_use(frame, contexts, pods, 7 * 24 * HOUR_S)
    for got, want in zip(
        (use.util, use.memory, use.held), _reference(frame, contexts, pods), strict=True
    ):
        assert got.tobytes() == want.tobytes()
