"""Sample values of every simulated GPU on a time grid, vectorised over GPUs and time.

Values are a deterministic function of (seed, GPU position, sample time): noise comes
from a generator seeded per chunk of 60 samples, so any window, asked for in any order
or in pieces, yields the same samples. Missing samples (exporter gaps, before the
history starts) are NaN, as absent samples are in Prometheus.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gpuwatch.model.metrics import FloatArray, Signal, fb_used_ratio
from gpuwatch.sources.simulator.layout import Behaviour, SimGpu

CHUNK_SAMPLES = 60
_DAY_S = 86400
_CREEP_PERIOD_S = 8 * 3600
# Creeping-memory jobs restart (OOM-killed) at 02:10 + k*8h; at 02:00 they are near the top.
_CREEP_RESET_S = 2 * 3600 + 10 * 60
# Stepping jobs grow 5.5 % every 30 min from 58 % and OOM at 22:50 + k*4h, so at 02:00
# they sit at 91 % with the step to 96.5 % due at 02:20.
_STEP_PERIOD_S = 4 * 3600
_STEP_RESET_S = 22 * 3600 + 50 * 60
_STEP_S = 1800
_XID_HOURS = (1, 7, 13, 19)  # an XID at hh:52 that the exporter reports for 30 minutes


class SignalGenerator:
    """Generates raw signals for a fixed list of simulated GPUs."""

    def __init__(self, gpus: Sequence[SimGpu], seed: int, step_s: int) -> None:
        self.gpus = tuple(gpus)
        self.seed = seed
        self.step_s = step_s
        n = len(self.gpus)
        self.behaviour = np.array([g.behaviour for g in self.gpus], dtype=np.int64)
        self.fb_total = np.array([g.gpu_model.fb_total_mib for g in self.gpus], dtype=np.float64)
        self.fb_reserved = np.array(
            [g.gpu_model.fb_reserved_mib for g in self.gpus], dtype=np.float64
        )
        self.idle_w = np.array([g.gpu_model.idle_w for g in self.gpus], dtype=np.float64)
        self.max_w = np.array([g.gpu_model.max_w for g in self.gpus], dtype=np.float64)
        self.profiling = np.array([g.gpu_model.profiling for g in self.gpus], dtype=bool)
        self.hot = np.array([g.hot for g in self.gpus], dtype=bool)
        self.xid_code = np.array([g.xid_code for g in self.gpus], dtype=np.float64)
        self.mem_share = np.array([g.mem_share for g in self.gpus], dtype=np.float64)
        self.attached = np.array([g.device.pod is not None for g in self.gpus], dtype=np.float64)
        self._gap_rows = [(i, g.gaps) for i, g in enumerate(self.gpus) if g.gaps]
        assert self.behaviour.shape == (n,)

    def grid(self, start_s: int, end_s: int) -> np.ndarray:
        """Sample times (unix s, multiples of step) in ``(start_s, end_s]``."""
        first = (start_s // self.step_s + 1) * self.step_s
        return np.arange(first, end_s + 1, self.step_s, dtype=np.int64)

    def noise(self, times_s: np.ndarray, stream: int) -> FloatArray:
        """Standard normal noise of shape (gpus, times), reproducible per sample."""
        n = len(self.gpus)
        out = np.empty((n, times_s.size))
        if times_s.size == 0:
            return out
        k = times_s // self.step_s
        chunks = k // CHUNK_SAMPLES
        for chunk in np.unique(chunks):
            rng = np.random.default_rng([self.seed, stream, int(chunk)])
            block = rng.standard_normal((n, CHUNK_SAMPLES))
            cols = chunks == chunk
            out[:, cols] = block[:, k[cols] % CHUNK_SAMPLES]
        return out

    def generate(self, times_s: np.ndarray, history_start_s: int) -> dict[Signal, FloatArray]:
        """Every signal for every GPU at ``times_s``."""
        t = times_s.astype(np.float64)[None, :]
        tod_h = (t % _DAY_S) / 3600.0
        b = self.behaviour[:, None]
        n_util, n_mem, n_temp = (self.noise(times_s, s) for s in (1, 2, 3))

        traffic = 0.5 - 0.5 * np.cos(2 * np.pi * (tod_h - 4.0) / 24.0)  # trough 04:00
        working = (tod_h >= 9.0) & (tod_h < 19.0)
        util = np.zeros((len(self.gpus), times_s.size))
        util = np.where(b == Behaviour.TRAIN, 0.92 + 0.03 * n_util, util)
        util = np.where(b == Behaviour.CREEP, 0.78 + 0.04 * n_util, util)
        util = np.where(b == Behaviour.STEPUP, 0.85 + 0.03 * n_util, util)
        util = np.where(b == Behaviour.STUCK, 0.0, util)
        util = np.where(
            b == Behaviour.NOTEBOOK,
            np.where(working, 0.35 + 0.2 * n_util, 0.01 * np.abs(n_util)),
            util,
        )
        util = np.where(b == Behaviour.INFERENCE, 0.15 + 0.6 * traffic + 0.04 * n_util, util)
        util = np.where(b == Behaviour.SHARED, 0.14 + 0.3 * traffic + 0.03 * n_util, util)
        util = np.where(b == Behaviour.SWEEP, 0.03 + 0.01 * n_util, util)
        util = np.where(b == Behaviour.LIGHT, 0.03 + 0.12 * traffic + 0.01 * n_util, util)
        util = np.clip(util, 0.0, 1.0)

        creep_phase = ((t - _CREEP_RESET_S) % _CREEP_PERIOD_S) / _CREEP_PERIOD_S
        mem = np.zeros_like(util)
        mem = np.where(b == Behaviour.TRAIN, 0.86 + 0.005 * n_mem, mem)
        mem = np.where(b == Behaviour.CREEP, 0.55 + 0.44 * creep_phase, mem)
        steps = np.floor(((t - _STEP_RESET_S) % _STEP_PERIOD_S) / _STEP_S)
        mem = np.where(b == Behaviour.STEPUP, 0.58 + 0.055 * steps + 0.002 * n_mem, mem)
        mem = np.where(b == Behaviour.STUCK, 0.62, mem)
        mem = np.where(b == Behaviour.NOTEBOOK, 0.35 + 0.002 * n_mem, mem)
        mem = np.where(b == Behaviour.INFERENCE, 0.90, mem)  # vLLM preallocates 90 %
        mem = np.where(b == Behaviour.SHARED, 0.8 * self.mem_share[:, None], mem)
        mem = np.where(b == Behaviour.SWEEP, 0.40, mem)
        mem = np.where(b == Behaviour.LIGHT, 0.30 + 0.002 * n_mem, mem)
        usable = (self.fb_total - self.fb_reserved)[:, None]
        fb_used = np.round(np.clip(mem * self.fb_total[:, None], 0.0, usable))
        fb_free = usable - fb_used

        temp = 33.0 + 40.0 * util + 0.7 * n_temp
        temp = np.where(self.hot[:, None], 88.0 + 4.0 * util + 0.5 * n_temp, temp)
        power = self.idle_w[:, None] + (self.max_w - self.idle_w)[:, None] * util
        tensor = np.where(b == Behaviour.TRAIN, 0.6 * util, 0.3 * util)
        # Without profiling metrics a GPU exports no tensor-pipe activity at all.
        tensor = np.where(self.profiling[:, None], tensor, np.nan)

        xid = np.zeros_like(util)
        if self.xid_code.any():
            minute_of_day = (t % _DAY_S) / 60.0
            active = np.zeros_like(minute_of_day, dtype=bool)
            for hour in _XID_HOURS:
                start = hour * 60 + 52
                active |= (minute_of_day >= start) & (minute_of_day < start + 30)
            xid = np.where(active, self.xid_code[:, None], 0.0)

        # DCGM_FI_DEV_GPU_UTIL is an integer percentage; GR_ENGINE_ACTIVE is a ratio.
        util_ratio = np.where(self.profiling[:, None], util, np.round(util * 100.0) / 100.0)
        signals = {
            Signal.UTIL_RATIO: util_ratio,
            Signal.FB_USED_MIB: fb_used,
            Signal.FB_TOTAL_MIB: np.broadcast_to(self.fb_total[:, None], util.shape).copy(),
            Signal.FB_USED_RATIO: fb_used_ratio(fb_used, fb_free, self.fb_reserved[:, None]),
            Signal.TEMP_C: np.round(temp),
            Signal.POWER_W: power,
            Signal.XID: xid,
            Signal.TENSOR_ACTIVE_RATIO: tensor,
            Signal.POD_ATTACHED: np.broadcast_to(self.attached[:, None], util.shape).copy(),
        }
        missing = self.missing(times_s, history_start_s)
        if missing.any():
            for values in signals.values():
                values[missing] = np.nan
        return signals

    def missing(self, times_s: np.ndarray, history_start_s: int) -> np.ndarray:
        missing = np.zeros((len(self.gpus), times_s.size), dtype=bool)
        missing[:, times_s <= history_start_s] = True  # history is (start, end]
        sod = times_s % _DAY_S
        for row, gaps in self._gap_rows:
            for start, duration in gaps:
                missing[row] |= (sod >= start) & (sod < start + duration)
        return missing
