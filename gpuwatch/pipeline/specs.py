"""Which window aggregates a cycle reads besides its rules', and why.

Gathering and analysis must agree on them exactly: the gather phase asks the metrics
source for these specs, and the analysis looks each one up in the answer.
"""

from __future__ import annotations

from gpuwatch.config.settings import Settings
from gpuwatch.model.metrics import Aggregate, AggregateSpec, Signal

NEWEST_SAMPLE = AggregateSpec(Signal.UTIL_RATIO, Aggregate.LAST_TS, 3600)
"""When each GPU last reported: no write rests on a GPU whose data is not live."""


def util_avg(settings: Settings) -> AggregateSpec:
    """Mean utilization over the cost window: what idle cost is judged on."""
    return AggregateSpec(Signal.UTIL_RATIO, Aggregate.AVG, settings.cost.window_s)


def fb_total_max(settings: Settings) -> AggregateSpec:
    """Each GPU's framebuffer size (it does not change): what sharing packs memory into."""
    return AggregateSpec(Signal.FB_TOTAL_MIB, Aggregate.MAX, settings.cost.window_s)


def cost_specs(settings: Settings) -> frozenset[AggregateSpec]:
    """Aggregates that pricing, the savings plan and the actions' freshness check need
    besides the rules' (the savings read the lookback's hours through the history)."""
    return frozenset(
        {
            util_avg(settings),
            fb_total_max(settings),
            NEWEST_SAMPLE,
        }
    )
