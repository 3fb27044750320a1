"""Settings of the analysis: which rules run, how GPU-hours are priced, and how each
kind of saving is estimated (spot, sharing, quantization, reserved capacity, floors).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from gpuwatch.config.sections.base import Count, DurationS, NonNegative, Ratio, Section


class RulesSettings(Section):
    """Which rule files are evaluated."""

    paths: list[Path] = Field(
        default_factory=list,
        description="Rule files or folders of `*.yaml`. Empty: the shipped `rules/gpu.yaml`.",
    )


class CostSettings(Section):
    """Pricing every GPU-hour."""

    window_s: DurationS = Field(
        3600,
        alias="window",
        gt=0,
        description="The recent window each cycle prices and allocates (a duration, e.g. "
        "`1h`); monthly figures extrapolate it to 30 days. The weekly report prices "
        "whole weeks.",
    )
    price_book: Path | None = Field(
        None, description="Price book YAML. Unset: the shipped `rules/pricing.yaml` (examples)."
    )
    opencost: bool = Field(
        False,
        description="Where OpenCost runs, its `node_gpu_hourly_cost` metric (read from "
        "`prometheus.url`) prices each node's GPUs instead of the book.",
    )
    opencost_currency: str = Field(
        "USD", pattern=r"^[A-Z]{3}$", description="The currency OpenCost is configured with."
    )


class SpotSavingsSettings(Section):
    preemptions_per_hour: float = Field(
        0.05,
        ge=0,
        description="Expected spot preemptions per node-hour, where `pools` says nothing "
        "(0.05: one a day, a middling figure for GPU spot capacity).",
    )
    pools: dict[str, NonNegative] = Field(
        default_factory=dict, description="Preemptions per hour by target spot pool."
    )
    restart_s: int = Field(
        300, ge=0, description="Seconds to reschedule and reload after a preemption."
    )
    checkpoint_interval_s: int = Field(
        1800,
        gt=0,
        description="Checkpoint interval assumed when a job does not annotate "
        "`gpuwatch.io/checkpoint-interval` (seconds); half of it is lost per preemption.",
    )


class SharingSavingsSettings(Section):
    window_s: DurationS = Field(
        7 * 86400,
        alias="window",
        gt=0,
        description="How far back utilization and memory are judged: a week sees daily "
        "peaks that a night would hide.",
    )
    util_p95_max: Ratio = Field(
        0.3, description="Share only GPUs whose p95 utilization is below this."
    )
    memory_max_ratio: Ratio = Field(
        0.5, description="Share only GPUs whose peak memory is below this ratio."
    )
    pack_util_max: float = Field(
        0.8, gt=0, le=1, description="The p95 utilizations packed onto one GPU sum to at most this."
    )
    pack_memory_max_ratio: float = Field(
        0.9, gt=0, le=1, description="The peak memories packed onto one GPU sum to at most this."
    )


class QuantizationSavingsSettings(Section):
    headroom_ratio: float = Field(
        0.3,
        ge=0,
        description="Memory beyond the weights for KV cache, activations and runtime, as a "
        "fraction of the weights.",
    )
    usable_memory_ratio: float = Field(
        0.9, gt=0, le=1, description="Fraction of a GPU's memory a server may fill."
    )


class ReservedSavingsSettings(Section):
    window_s: DurationS = Field(
        7 * 86400,
        alias="window",
        gt=0,
        description="History whose steady baseline could be reserved capacity.",
    )
    percentile: float = Field(
        10,
        ge=0,
        le=100,
        description="The baseline is this percentile of hourly on-demand GPUs in use: "
        "capacity busy 90 % of hours.",
    )


class SavingsSettings(Section):
    """Savings calculations; each is documented in the README."""

    spot: SpotSavingsSettings = Field(default_factory=SpotSavingsSettings)
    sharing: SharingSavingsSettings = Field(default_factory=SharingSavingsSettings)
    quantization: QuantizationSavingsSettings = Field(default_factory=QuantizationSavingsSettings)
    reserved: ReservedSavingsSettings = Field(default_factory=ReservedSavingsSettings)
    floors: dict[str, Count] = Field(
        default_factory=dict,
        description="Minimum nodes per pool that scale-down savings never go below.",
    )
