"""Which window aggregates a cycle reads besides its rules', and why.

Gathering and analysis must agree on them exactly: the gather phase asks the metrics
source for these specs, and the analysis looks each one up in the answer.
"""

from __future__ import annotations

from gpuwatch.config.settings import Settings
from gpuwatch.model.metrics import Aggregate, AggregateSpec, Signal

HOUR_S = 3600
ATTACHED_HOURLY = AggregateSpec(Signal.POD_ATTACHED, Aggregate.MAX, HOUR_S)
"""Whether a pod held the GPU in each hour: the steady baseline reserved capacity
would cover."""
NEWEST_SAMPLE = AggregateSpec(Signal.UTIL_RATIO, Aggregate.LAST_TS, HOUR_S)
"""When each GPU last reported: no write rests on a GPU whose data is not live."""


def util_avg(settings: Settings) -> AggregateSpec:
    """Mean utilization over the cost window: what idle cost is judged on."""
    return AggregateSpec(Signal.UTIL_RATIO, Aggregate.AVG, settings.cost.window_s)


def util_p95(settings: Settings) -> AggregateSpec:
    """Peak load (95th percentile) over the sharing window: what a shared or smaller
    GPU must still carry."""
    return AggregateSpec(Signal.UTIL_RATIO, Aggregate.P95, settings.savings.sharing.window_s)


def fb_used_max(settings: Settings) -> AggregateSpec:
    return AggregateSpec(Signal.FB_USED_RATIO, Aggregate.MAX, settings.savings.sharing.window_s)


def fb_total_max(settings: Settings) -> AggregateSpec:
    return AggregateSpec(Signal.FB_TOTAL_MIB, Aggregate.MAX, settings.savings.sharing.window_s)


def cost_specs(settings: Settings) -> frozenset[AggregateSpec]:
    """Aggregates that pricing, the savings calculations and the actions' freshness
    check need besides the rules'."""
    return frozenset(
        {
            util_avg(settings),
            util_p95(settings),
            fb_used_max(settings),
            fb_total_max(settings),
            NEWEST_SAMPLE,
        }
    )
