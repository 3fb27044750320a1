"""How the OOM forecast did this week: its warnings, and what became of each.

The warnings are the findings of the rule with role ``oom_forecast`` in the cycles'
JSON results (what people were told); a GPU warned of in consecutive cycles within
the rule's horizon is one warning. Each is checked against ``gpu_hourly``: *reached*
when the GPU's hourly memory peak reached the rule's threshold between the hour of the
warning and the horizon after its last cycle, a *false alarm* when it did not and that
time is past, *pending* when the period ends first. Hourly peaks make this a check at
an hour's resolution: a warning followed by a peak in the same hour counts as reached.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gpuwatch.report.data import ReportPeriod
from gpuwatch.report.schema import FORECASTS
from gpuwatch.weekly.cycles import Json, RecordedCycle, in_period


def forecasts_table(
    cycles: Sequence[RecordedCycle],
    period: ReportPeriod,
    gpu_hourly: pa.Table,
    horizon_s: int,
    threshold: float,
) -> pa.Table:
    episodes: dict[str, list[list[tuple[datetime, Json]]]] = {}
    for cycle in in_period(cycles, period):
        for warning in cycle.forecasts:
            device = str(warning.get("device_id") or warning.get("gpu_uuid") or "")
            runs = episodes.setdefault(device, [])
            if runs and (cycle.at - runs[-1][-1][0]).total_seconds() <= horizon_s:
                runs[-1].append((cycle.at, warning))
            else:
                runs.append([(cycle.at, warning)])
    peaks = _peaks(gpu_hourly, threshold, episodes.keys())
    horizon = timedelta(seconds=horizon_s)
    rows = []
    for device, runs in sorted(episodes.items()):
        for run in runs:
            first_at, first = run[0]
            last_at = run[-1][0]
            start = first_at.replace(minute=0, second=0, microsecond=0)
            reached = next(
                (h for h in peaks.get(device, ()) if start <= h < last_at + horizon), None
            )
            if reached is not None:
                outcome = "reached"
            elif last_at + horizon <= period.end:
                outcome = "false_alarm"
            else:
                outcome = "pending"
            rows.append(
                {
                    "device_id": device,
                    "node": first.get("node"),
                    "gpu_index": first.get("gpu_index"),
                    "workload": first.get("workload"),
                    "team": first.get("team"),
                    "first_at": first_at,
                    "last_at": last_at,
                    "cycles": len(run),
                    "eta_s": first.get("eta_s"),
                    "outcome": outcome,
                    "reached_hour": reached,
                }
            )
    return pa.Table.from_pylist(rows, schema=FORECASTS)


def _peaks(
    gpu_hourly: pa.Table, threshold: float, devices: Collection[str]
) -> dict[str, list[datetime]]:
    """Per device of ``devices``, the starts of the hours whose memory peak reached
    ``threshold`` (only the devices warned of: not every GPU's)."""
    if not devices:
        return {}
    ratio = pc.fill_null(gpu_hourly["fb_used_max_ratio"], 0.0)
    warned = pc.is_in(gpu_hourly["device_id"], pa.array(sorted(devices), pa.string()))
    at = gpu_hourly.filter(pc.and_(pc.greater_equal(ratio, threshold), warned))
    at = at.select(["device_id", "hour"])
    found: dict[str, list[datetime]] = {}
    order = np.argsort(at["hour"].to_numpy(zero_copy_only=False), kind="stable")
    devices, hours = at["device_id"].to_pylist(), at["hour"].to_pylist()
    for i in order.tolist():
        found.setdefault(devices[i], []).append(hours[i])
    return found
