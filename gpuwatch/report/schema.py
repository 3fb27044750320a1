"""The weekly dataset's tables: their columns, units and version.

These schemas are a published interface: finance notebooks, DuckDB, Spark and Trino read
them as they are, and a fleet of clusters writing to one bucket makes one dataset. Add
columns (and bump ``SCHEMA_VERSION``'s minor part); never rename or retype one.

Layout (hive partitioning; ``cluster`` and ``week`` live in the path, not the files):

    <location>/table=gpu_hourly/cluster=<cluster>/week=<YYYY-Www>/part-0.parquet
    <location>/table=holder_hourly/...   table=findings/...   table=savings/...
    <location>/table=actions/...   table=realized/...   table=team_weekly/...
    <location>/table=budgets/...   table=forecasts/...

``gpu_hourly`` has one row per GPU (or MIG instance) and hour: the GPU's metrics, cost
and its main holder. ``holder_hourly`` splits each of those rows between the pods that
held the GPU in that hour (whole GPUs, cGPU shares, time-slicing) and the unallocated
rest: its rows of one GPU-hour add up to the GPU-hour's cost and idle cost to the last
digit, so money by team or workload is summed from it, and GPU-level figures
(utilization, memory, coverage) from ``gpu_hourly``.

A table added in a minor version (``TABLE_SINCE``) is missing from weeks written before.

Each file's schema metadata names its table and version (``gpuwatch.table``,
``gpuwatch.schema_version``) and, since 1.1, the price book its money came from:
``gpuwatch.price_book`` (its path) and ``gpuwatch.prices_are_examples`` (``true`` when
the book says ``example: true``: the figures are not anybody's prices).

Money is ``decimal128(18, 6)`` in the price book's currency (``currency`` column), never
summed across currencies. Ratios are 0..1. Times are UTC.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1.3"
TABLES = (
    "gpu_hourly",
    "holder_hourly",
    "findings",
    "savings",
    "actions",
    "realized",
    "team_weekly",
    "budgets",
    "forecasts",
)
TABLE_SINCE = {
    "holder_hourly": "1.1",
    "realized": "1.1",
    "team_weekly": "1.2",
    "budgets": "1.2",
    "forecasts": "1.2",
}
"""The version that added each table added after 1.0."""
PARTITIONS = ("cluster", "week")
MONEY = pa.decimal128(18, 6)
UTC_S = pa.timestamp("s", tz="UTC")

GPU_HOURLY = pa.schema(
    [
        pa.field("hour", UTC_S, nullable=False).with_metadata(
            {"doc": "Start of the hour; the row covers [hour, hour + 1h)."}
        ),
        pa.field("gpu_uuid", pa.string(), nullable=False),
        pa.field("device_id", pa.string(), nullable=False).with_metadata(
            {"doc": "The UUID, plus /mig-<instance> for a MIG instance."}
        ),
        pa.field("gpu_index", pa.int32()),
        pa.field("mig_profile", pa.string()),
        pa.field("node", pa.string(), nullable=False),
        pa.field("pool", pa.string()),
        pa.field("model", pa.string()),
        pa.field("capacity_type", pa.string()),
        pa.field("namespace", pa.string()),
        pa.field("pod", pa.string()).with_metadata(
            {
                "doc": "The GPU-hour's main holder: the pod with the largest share of it "
                "(the exporter's label, else the cluster's allocation); null when nobody "
                "held it. Every holder is in holder_hourly."
            }
        ),
        pa.field("workload", pa.string()),
        pa.field("team", pa.string()),
        pa.field("util_mean_ratio", pa.float64()).with_metadata(
            {"doc": "Mean utilization over the samples the hour has; null without any."}
        ),
        pa.field("util_p95_ratio", pa.float64()),
        pa.field("fb_used_max_mib", pa.float64()),
        pa.field("fb_used_max_ratio", pa.float64()).with_metadata(
            {"doc": "FB_USED / (FB_USED + FB_FREE + FB_RESERVED), highest sample."}
        ),
        pa.field("power_mean_w", pa.float64()),
        pa.field("energy_kwh", pa.float64()).with_metadata(
            {"doc": "power_mean_w x hours with samples / 1000."}
        ),
        pa.field("coverage_ratio", pa.float64(), nullable=False).with_metadata(
            {"doc": "Fraction of the hour with samples; 0 in an exporter or Prometheus gap."}
        ),
        pa.field("cost", MONEY).with_metadata(
            {"doc": "Price of one GPU-hour (the MIG slice's share); null when unpriced."}
        ),
        pa.field("idle_cost", MONEY).with_metadata(
            {
                "doc": "cost x coverage_ratio x (1 - util_mean_ratio): minutes without "
                "samples are not idle; null when utilization is unknown (a gap is not idle "
                "time)."
            }
        ),
        pa.field("currency", pa.string()),
        pa.field("allocated_ratio", pa.float64()).with_metadata(
            {
                "doc": "Part of the GPU-hour its holders held together (0..1, since 1.1); "
                "the rest is unallocated."
            }
        ),
    ],
    metadata={"gpuwatch.table": "gpu_hourly", "gpuwatch.schema_version": SCHEMA_VERSION},
)

HOLDER_HOURLY = pa.schema(
    [
        pa.field("hour", UTC_S, nullable=False),
        pa.field("device_id", pa.string(), nullable=False).with_metadata(
            {"doc": "With hour, the key of the gpu_hourly row this row is a part of."}
        ),
        pa.field("node", pa.string(), nullable=False),
        pa.field("pool", pa.string()),
        pa.field("namespace", pa.string()).with_metadata(
            {
                "doc": "The holder's; namespace, pod, workload and team are null on the row of "
                "the unallocated rest."
            }
        ),
        pa.field("pod", pa.string()),
        pa.field("workload", pa.string()),
        pa.field("team", pa.string()),
        pa.field("share_ratio", pa.float64(), nullable=False).with_metadata(
            {
                "doc": "The row's part of the GPU-hour: the holder's share of the GPU (1 "
                "whole, the memory share on cGPU, by request when time-sliced) x the part "
                "of the hour its pod ran; a GPU-hour's rows add up to 1."
            }
        ),
        pa.field("evidence", pa.string()).with_metadata(
            {
                "doc": "exporter: the exporter labelled the GPU with this pod in the hour; "
                "allocation: the cluster's allocations name it; null on the unallocated rest."
            }
        ),
        pa.field("util_mean_ratio", pa.float64()).with_metadata({"doc": "The GPU's."}),
        pa.field("coverage_ratio", pa.float64(), nullable=False).with_metadata(
            {"doc": "The GPU's."}
        ),
        pa.field("cost", MONEY).with_metadata(
            {
                "doc": "The GPU-hour's cost x share_ratio; a GPU-hour's rows add up to its "
                "gpu_hourly.cost exactly (the last row takes the rounding)."
            }
        ),
        pa.field("idle_cost", MONEY).with_metadata({"doc": "Likewise of gpu_hourly.idle_cost."}),
        pa.field("currency", pa.string()),
    ],
    metadata={"gpuwatch.table": "holder_hourly", "gpuwatch.schema_version": SCHEMA_VERSION},
)

FINDINGS = pa.schema(
    [
        pa.field("rule", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("gpu_uuid", pa.string()),
        pa.field("device_id", pa.string()),
        pa.field("node", pa.string(), nullable=False),
        pa.field("pool", pa.string()),
        pa.field("namespace", pa.string()),
        pa.field("pod", pa.string()),
        pa.field("workload", pa.string()),
        pa.field("team", pa.string()),
        pa.field("start", UTC_S, nullable=False).with_metadata(
            {"doc": "First hour end at which the rule fired, in an unbroken run of hours."}
        ),
        pa.field("end", UTC_S, nullable=False),
        pa.field("hours", pa.int32(), nullable=False),
        pa.field("worst_value", pa.float64()),
        pa.field("threshold", pa.float64()),
        pa.field("unit", pa.string()),
        pa.field("message", pa.string()),
    ],
    metadata={"gpuwatch.table": "findings", "gpuwatch.schema_version": SCHEMA_VERSION},
)

SAVINGS = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("scope", pa.string(), nullable=False).with_metadata({"doc": "JSON object."}),
        pa.field("monthly", MONEY, nullable=False).with_metadata(
            {
                "doc": "Gross, per 30 days: the lever alone, on the cluster as it is (what a "
                "blocked lever would save once unblocked). Never a total anyone can bank: "
                "sum net_monthly for that."
            }
        ),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("confidence", pa.string()),
        pa.field("formula", pa.string()),
        pa.field("inputs", pa.string()).with_metadata({"doc": "JSON object."}),
        pa.field("assumptions", pa.string()).with_metadata({"doc": "JSON list."}),
        pa.field("action", pa.string()),
        pa.field("at", UTC_S, nullable=False),
        pa.field("net_monthly", MONEY).with_metadata(
            {
                "doc": "Since 1.1. What the lever adds to the plan's cash, in the plan's "
                "order (after the levers before it claimed their GPU-hours and nodes); 0 "
                "when blocked or not cash. Their sum per currency is the cash the plan banks."
            }
        ),
        pa.field("cash", pa.bool_()).with_metadata(
            {
                "doc": "Since 1.1. A bill changes (a node goes, a capacity type or GPU type "
                "changes); false: reclaimed capacity, never added to the cash."
            }
        ),
        pa.field("reclaimed_gpu_hours_monthly", pa.float64()).with_metadata(
            {"doc": "Since 1.1. GPU-hours a month freed without a bill changing."}
        ),
        pa.field("reclaimed_monthly", MONEY).with_metadata(
            {"doc": "Since 1.1. What buying the reclaimed GPU-hours would cost a month."}
        ),
        pa.field("gpus", pa.string()).with_metadata(
            {"doc": "Since 1.1. JSON list of the GPU UUIDs whose hours the lever claims."}
        ),
        pa.field("nodes", pa.string()).with_metadata(
            {"doc": "Since 1.1. JSON list of the nodes the lever removes."}
        ),
        pa.field("blocked", pa.string()).with_metadata(
            {"doc": "Since 1.1. Why the lever cannot be taken now; null when it can."}
        ),
        pa.field("unblock", pa.string()).with_metadata(
            {"doc": "Since 1.1. What would unblock it (it would then save monthly)."}
        ),
        pa.field("lookback_s", pa.int64()).with_metadata(
            {"doc": "Since 1.1. The history the lever looked at, in seconds."}
        ),
        pa.field("hours_counted", pa.float64()).with_metadata(
            {"doc": "Since 1.1. Hours of that history the figure rests on (with data)."}
        ),
        pa.field("order", pa.int32()).with_metadata(
            {"doc": "Since 1.1. The lever's place in the plan (net_monthly is in this order)."}
        ),
        pa.field("team", pa.string()).with_metadata(
            {"doc": "Since 1.3. The scope's team (null for a pool's or the fleet's lever)."}
        ),
        pa.field("pool", pa.string()).with_metadata(
            {"doc": "Since 1.3. The scope's pool (null for a fleet-wide lever: reserved)."}
        ),
        pa.field("workload", pa.string()).with_metadata(
            {"doc": "Since 1.3. The scope's workload (or the GPU model reserved)."}
        ),
    ],
    metadata={"gpuwatch.table": "savings", "gpuwatch.schema_version": SCHEMA_VERSION},
)

ACTIONS = pa.schema(
    [
        pa.field("at", UTC_S, nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("target", pa.string(), nullable=False),
        pa.field("pool", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("dry_run", pa.bool_(), nullable=False),
        pa.field("key", pa.string()),
        pa.field("details", pa.string()).with_metadata({"doc": "JSON object."}),
        pa.field("decision", pa.string()).with_metadata(
            {"doc": "approve or reject, for an action under approval in Slack (since 1.2)."}
        ),
        pa.field("decided_by", pa.string()).with_metadata(
            {"doc": "The Slack user id who decided (since 1.2)."}
        ),
        pa.field("decided_at", UTC_S).with_metadata({"doc": "When they decided (since 1.2)."}),
    ],
    metadata={"gpuwatch.table": "actions", "gpuwatch.schema_version": SCHEMA_VERSION},
)

REALIZED = pa.schema(
    [
        pa.field("at", UTC_S, nullable=False).with_metadata(
            {
                "doc": "When the action took effect (the cycle that recorded it done; a "
                "job's move, also when the move is confirmed later)."
            }
        ),
        pa.field("kind", pa.string(), nullable=False).with_metadata(
            {"doc": "scale_down_node (a node removed) or migrate_to_spot (a job moved)."}
        ),
        pa.field("target", pa.string(), nullable=False),
        pa.field("key", pa.string()),
        pa.field("scope", pa.string(), nullable=False).with_metadata(
            {"doc": 'JSON object: {"node": ...} or {"workload": ...}: whose cost is measured.'}
        ),
        pa.field("currency", pa.string()),
        pa.field("projected_monthly", MONEY).with_metadata(
            {
                "doc": "Per 30 days, as projected when the action was taken: the action's "
                "details.monthly_saving, else the matching lever of that cycle's plan."
            }
        ),
        pa.field("projected_from", pa.string()),
        pa.field("hours_compared", pa.int32(), nullable=False).with_metadata(
            {
                "doc": "Whole hours measured on each side of the action (as many as the "
                "data has on both)."
            }
        ),
        pa.field("before_start", UTC_S, nullable=False),
        pa.field("before_cost", MONEY).with_metadata(
            {"doc": "The scope's cost in [before_start, before_start + hours_compared)."}
        ),
        pa.field("after_start", UTC_S, nullable=False),
        pa.field("after_cost", MONEY).with_metadata(
            {"doc": "The scope's cost in [after_start, after_start + hours_compared)."}
        ),
        pa.field("measured_monthly", MONEY).with_metadata(
            {
                "doc": "(before_cost - after_cost) x 720 / hours_compared: the cost change "
                "measured since the action, per 30 days; null without hours to compare."
            }
        ),
    ],
    metadata={"gpuwatch.table": "realized", "gpuwatch.schema_version": SCHEMA_VERSION},
)

TEAM_WEEKLY = pa.schema(
    [
        pa.field("team", pa.string(), nullable=False).with_metadata(
            {"doc": "(no team) for the unallocated rest."}
        ),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("gpu_hours", pa.float64(), nullable=False).with_metadata(
            {"doc": "The team's shares of priced GPU-hours (holder_hourly.share_ratio summed)."}
        ),
        pa.field("util_mean_ratio", pa.float64()).with_metadata(
            {"doc": "Mean utilization weighted by share x coverage; null with no samples."}
        ),
        pa.field("cost", MONEY, nullable=False).with_metadata(
            {"doc": "holder_hourly.cost summed: the period's cost by team, per currency."}
        ),
    ],
    metadata={"gpuwatch.table": "team_weekly", "gpuwatch.schema_version": SCHEMA_VERSION},
)

BUDGETS = pa.schema(
    [
        pa.field("budget", pa.string(), nullable=False),
        pa.field("scope", pa.string(), nullable=False).with_metadata(
            {"doc": "team, namespace or pool."}
        ),
        pa.field("value", pa.string(), nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("amount", MONEY, nullable=False).with_metadata(
            {"doc": "The budget for the calendar month, in its time zone."}
        ),
        pa.field("month_start", UTC_S, nullable=False),
        pa.field("month_end", UTC_S, nullable=False),
        pa.field("at", UTC_S, nullable=False).with_metadata(
            {"doc": "The end of the period: when spent and projected were measured."}
        ),
        pa.field("spent", MONEY, nullable=False).with_metadata(
            {"doc": "Month to date, over the hours with metrics (measured_hours)."}
        ),
        pa.field("projected", MONEY).with_metadata(
            {
                "doc": "Month-end projection: spent, plus every hour left at the mean of its "
                "weekday and hour over the budget rule's window; null with nothing measured."
            }
        ),
        pa.field("measured_hours", pa.int32(), nullable=False),
        pa.field("elapsed_hours", pa.int32(), nullable=False),
        pa.field("top_workloads", pa.string()).with_metadata(
            {"doc": 'JSON list of {"workload", "spent"}, largest first.'}
        ),
    ],
    metadata={"gpuwatch.table": "budgets", "gpuwatch.schema_version": SCHEMA_VERSION},
)

FORECASTS = pa.schema(
    [
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("node", pa.string()),
        pa.field("gpu_index", pa.int32()),
        pa.field("workload", pa.string()),
        pa.field("team", pa.string()),
        pa.field("first_at", UTC_S, nullable=False).with_metadata(
            {
                "doc": "The first cycle that warned (cycles warning within the horizon of the "
                "one before are one warning)."
            }
        ),
        pa.field("last_at", UTC_S, nullable=False),
        pa.field("cycles", pa.int32(), nullable=False),
        pa.field("eta_s", pa.float64()).with_metadata(
            {"doc": "Seconds to the predicted crossing, as the first cycle said."}
        ),
        pa.field("outcome", pa.string(), nullable=False).with_metadata(
            {
                "doc": "reached (the GPU's hourly peak reached the threshold from the hour "
                "of the warning to the horizon after its last cycle), false_alarm (it did "
                "not, and that time has passed), pending (the period ends before it)."
            }
        ),
        pa.field("reached_hour", UTC_S).with_metadata(
            {"doc": "Start of the first hour whose peak reached the threshold."}
        ),
    ],
    metadata={"gpuwatch.table": "forecasts", "gpuwatch.schema_version": SCHEMA_VERSION},
)

PRICE_BOOK_KEY = "gpuwatch.price_book"
PRICES_ARE_EXAMPLES_KEY = "gpuwatch.prices_are_examples"


def price_metadata(book: str, examples: bool) -> dict[str, str]:
    """The file metadata that says which price book the money came from."""
    return {PRICE_BOOK_KEY: book, PRICES_ARE_EXAMPLES_KEY: "true" if examples else "false"}


SCHEMAS: dict[str, pa.Schema] = {
    "gpu_hourly": GPU_HOURLY,
    "holder_hourly": HOLDER_HOURLY,
    "findings": FINDINGS,
    "savings": SAVINGS,
    "actions": ACTIONS,
    "realized": REALIZED,
    "team_weekly": TEAM_WEEKLY,
    "budgets": BUDGETS,
    "forecasts": FORECASTS,
}
