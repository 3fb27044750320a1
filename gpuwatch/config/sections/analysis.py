"""Settings of the analysis: which rules run, how GPU-hours are priced, and how the
savings plan measures each lever (spot, sharing, quantization, reserved capacity,
floors, billing, the lookback).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from gpuwatch.config.sections.base import (
    Count,
    DurationS,
    NonNegative,
    Ratio,
    Section,
    moved_keys,
)


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
    peak_load_max: Ratio = Field(
        0.3,
        description="Share only GPUs whose busiest hour of the lookback stays below this "
        "mean utilization.",
    )
    memory_max_ratio: Ratio = Field(
        0.5, description="Share only GPUs whose peak memory over the lookback is below this."
    )
    pack_util_max: float = Field(
        0.8,
        gt=0,
        le=1,
        description="The busiest-hour utilizations packed onto one GPU sum to at most this.",
    )
    pack_memory_max_ratio: float = Field(
        0.9, gt=0, le=1, description="The peak memories packed onto one GPU sum to at most this."
    )

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        return moved_keys(
            data,
            "savings.sharing",
            {"window": "savings.lookback", "util_p95_max": "savings.sharing.peak_load_max"},
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
    percentile: float = Field(
        10,
        ge=0,
        le=100,
        description="The steady baseline is this percentile of the lookback's hourly "
        "on-demand GPUs in use: capacity busy 90 % of hours.",
    )

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        return moved_keys(data, "savings.reserved", {"window": "savings.lookback"})


class SavingsSettings(Section):
    """The savings plan: the levers, measured over the lookback (docs/cost-and-savings.md)."""

    lookback_s: DurationS = Field(
        7 * 86400,
        alias="lookback",
        gt=0,
        description="The hourly history every saving is measured over: a week sees the "
        "daily and weekly cycles a night would hide. Monthly = the lookback's saving x "
        "720 / its hours with data.",
    )
    billing: dict[str, Literal["per-node", "per-gpu"]] = Field(
        default_factory=dict,
        description="How each pool is billed (default `per-node`). Where a pool is billed "
        "per GPU (serverless GPUs, some chargeback), a GPU released or shared away is cash; "
        "elsewhere it is reclaimed capacity until a node goes.",
    )

    spot: SpotSavingsSettings = Field(default_factory=SpotSavingsSettings)
    sharing: SharingSavingsSettings = Field(default_factory=SharingSavingsSettings)
    quantization: QuantizationSavingsSettings = Field(default_factory=QuantizationSavingsSettings)
    reserved: ReservedSavingsSettings = Field(default_factory=ReservedSavingsSettings)
    floors: dict[str, Count] = Field(
        default_factory=dict,
        description="Minimum nodes per pool that scale-down savings never go below.",
    )
