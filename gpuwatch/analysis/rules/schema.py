"""The rule schema: each rule kind is a typed model, validated strictly, never eval'd.

A rule file is ``{version: 1, rules: [...]}``; each rule has an ``id``, a ``kind`` that
selects its detector and parameters, a ``severity`` and a ``window``. Thresholds and
windows are data, so users tune them in YAML without touching code.
"""

from __future__ import annotations

import string
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from gpuwatch.model.durations import parse_duration_s
from gpuwatch.model.findings import Role, Severity
from gpuwatch.model.metrics import Signal

DurationS = Annotated[int, BeforeValidator(parse_duration_s)]

# Names a rule's ``message`` template may use, e.g. "{value:.0%} over {window}".
MESSAGE_FIELDS = frozenset(
    {
        "rule",
        "gpu",
        "gpu_uuid",
        "node",
        "pool",
        "model",
        "namespace",
        "pod",
        "workload",
        "team",
        "holder",
        "value",
        "threshold",
        "op",
        "window",
        "coverage",
        "unit",
        "eta",
        "rate",
        "fit_r2",
    }
)


class _RuleBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="Unique rule id.")
    severity: Severity = Severity.WARNING
    enabled: bool = True
    description: str = ""
    title: str | None = Field(
        None,
        max_length=40,
        description='Short phrase for grouped messages ("5 idle A100s in gpu-training"); '
        "unset: the rule id.",
    )
    window_s: DurationS = Field(alias="window", gt=0, description="Window ending at the cycle.")
    pools: list[str] | None = Field(
        None, description="Only GPUs in these pools; unset: every pool."
    )
    message: str | None = Field(None, description="Message template; unset: the kind's own.")
    for_s: DurationS = Field(
        0,
        alias="for",
        ge=0,
        description="How long a finding must keep firing before it is notified "
        "(Prometheus' `for`); it is in the cycle result from the first cycle.",
    )
    waste: bool = Field(
        False,
        description="The flagged GPUs' cost is money wasted (idle, unallocated): messages "
        'say "412 CNY/hour wasted" rather than the cost of the GPUs concerned.',
    )
    role: Role | None = Field(
        None,
        description="What the rule means to the rest of gpuwatch (`idle`, `unallocated`, "
        "`near_oom`, `data_gap`, `overheat`, `xid`, `oom_forecast`, `budget`): the savings, the "
        "planners and the report find their rules by role, never by id. At most one "
        "enabled rule per role.",
    )

    @model_validator(mode="after")
    def _fits_its_role(self) -> _RuleBase:
        problem = role_misfit(self)
        if problem:
            raise ValueError(problem)
        return self

    @field_validator("message")
    @classmethod
    def _known_placeholders(cls, template: str | None) -> str | None:
        if template is None:
            return None
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ValueError(f"malformed message template: {exc}") from exc
        for _, name, _, _ in parsed:
            if name is None:
                continue
            if name not in MESSAGE_FIELDS:
                raise ValueError(
                    f"unknown placeholder {{{name}}}; expected one of: "
                    + ", ".join(sorted(MESSAGE_FIELDS))
                )
        return template


class ThresholdRule(_RuleBase):
    """Compare a window aggregate of a signal with a threshold."""

    kind: Literal["threshold"]
    signal: Signal
    aggregate: Literal["avg", "max", "min", "last"]
    op: Literal["<", "<=", ">", ">="]
    threshold: float
    scope: Literal["allocated", "unallocated", "any"] = Field(
        "any", description="Which GPUs: held by a pod, held by none, or all."
    )
    min_coverage: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Least fraction of the window with data before the GPU is judged; "
        "below it the GPU is not judged at all (no data is not zero).",
    )


class UnallocatedRule(_RuleBase):
    """A GPU in a GPU pool that no pod held for the whole window."""

    kind: Literal["unallocated"]
    min_coverage: float = Field(0.5, ge=0.0, le=1.0)


class XidRule(_RuleBase):
    """A new non-zero XID error reported within the window."""

    kind: Literal["xid"]
    ignore_codes: list[int] = Field(
        default_factory=list, description="XID codes that never fire (e.g. 43, app faults)."
    )
    critical_codes: list[int] = Field(
        # Double-bit ECC, row-remap failure, NVLink, fallen off the bus, ECC contained /
        # uncontained: hardware that needs a drain, not an application bug.
        default_factory=lambda: [48, 63, 64, 74, 79, 92, 94, 95],
        description="XID codes raised to critical severity.",
    )


class DataGapRule(_RuleBase):
    """A GPU whose metrics are missing or stale for part of the window."""

    kind: Literal["data_gap"]
    min_coverage: float = Field(
        0.9, ge=0.0, le=1.0, description="Fire when less of the window than this has data."
    )
    stale_after_s: DurationS = Field(
        120,
        alias="stale_after",
        gt=0,
        description="Fire when the newest sample is older than this.",
    )


class ForecastRule(_RuleBase):
    """A rising signal predicted to cross a threshold within a horizon, from a robust
    line through its samples since the last restart (``analysis/forecast.py``)."""

    kind: Literal["forecast"]
    signal: Signal = Signal.FB_USED_RATIO
    threshold: float = Field(description="The level the signal is predicted to reach.")
    horizon_s: DurationS = Field(
        alias="horizon",
        gt=0,
        description="Fire when the predicted crossing is at most this far ahead.",
    )
    step_s: DurationS = Field(
        60,
        alias="step",
        ge=30,
        description="The samples' spacing: each is the highest value within one step "
        "(DCGM's exporter collects every 30 s; a shorter step adds nothing).",
    )
    scope: Literal["allocated", "unallocated", "any"] = "allocated"
    min_samples: int = Field(
        10, ge=3, description="Samples since the last restart below which there is no fit."
    )
    min_span_s: DurationS = Field(
        600,
        alias="min_span",
        ge=0,
        description="Least time since the last restart the samples must span.",
    )
    min_fit_r2: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="Least share of the samples' variance the line must explain; below "
        "it the fit is poor and gives no estimate.",
    )
    restart_drop: float = Field(
        0.10,
        gt=0.0,
        description="A fall between consecutive samples larger than this is a restart: "
        "the fit starts after the last one.",
    )

    @model_validator(mode="after")
    def _window_holds_steps(self) -> ForecastRule:
        if self.step_s * 3 > self.window_s:
            raise ValueError("window must hold at least 3 steps")
        return self


class BudgetRule(_RuleBase):
    """A team, namespace or pool (``budgets.monthly``) near or over its monthly budget:
    by what it has spent this month, or by where its month is heading."""

    kind: Literal["budget"]
    window_s: DurationS = Field(
        7 * 86400,
        alias="window",
        gt=0,
        description="The run-rate the month-end projection extends: the hours of this "
        "month within this window, by weekday and hour.",
    )
    spent_ratios: list[float] = Field(
        default_factory=lambda: [0.8, 1.0],
        description="Shares of the budget spent at which it fires; spending the whole "
        "budget is critical.",
    )
    projected_ratio: float | None = Field(
        1.0, gt=0, description="Fire when the month-end projection reaches this share."
    )
    top_workloads: int = Field(3, ge=0, le=20, description="Workloads named in messages.")

    @field_validator("spent_ratios")
    @classmethod
    def _positive(cls, ratios: list[float]) -> list[float]:
        if any(r <= 0 for r in ratios):
            raise ValueError("spent_ratios must be above 0")
        return sorted(set(ratios))

    @model_validator(mode="after")
    def _own_message(self) -> BudgetRule:
        if self.message is not None:
            raise ValueError("a budget rule's message is its figures: leave message unset")
        return self


# What each role needs of a rule: the consumers rely on it (the scale-down planner
# drains nodes on the idle rule's findings, so an "idle" rule that fired at 90 %
# utilization would drain busy nodes).
_ROLE_SHAPES: dict[Role, str] = {
    Role.IDLE: "kind threshold, signal util_ratio, op < or <=, scope allocated, threshold "
    "at most 0.5",
    Role.UNALLOCATED: "kind unallocated",
    Role.NEAR_OOM: "kind threshold, signal fb_used_ratio, op > or >=, threshold from 0.5 to 1",
    Role.DATA_GAP: "kind data_gap",
    Role.OVERHEAT: "kind threshold, signal temp_c, op > or >=",
    Role.XID: "kind xid",
    Role.BUDGET: "kind budget",
    Role.OOM_FORECAST: "kind forecast, signal fb_used_ratio, threshold from 0.5 to 1",
}


def role_misfit(rule: object) -> str | None:
    """Why ``rule`` cannot have its role; None when it fits (or has none)."""
    role = getattr(rule, "role", None)
    if role is None:
        return None
    kind = getattr(rule, "kind", None)
    signal = getattr(rule, "signal", None)
    op = getattr(rule, "op", "")
    threshold = getattr(rule, "threshold", None)
    fits = {
        Role.IDLE: kind == "threshold"
        and signal is Signal.UTIL_RATIO
        and op in ("<", "<=")
        and getattr(rule, "scope", None) == "allocated"
        and threshold is not None
        and threshold <= 0.5,
        Role.UNALLOCATED: kind == "unallocated",
        Role.NEAR_OOM: kind == "threshold"
        and signal is Signal.FB_USED_RATIO
        and op in (">", ">=")
        and threshold is not None
        and 0.5 <= threshold <= 1.0,
        Role.DATA_GAP: kind == "data_gap",
        Role.OVERHEAT: kind == "threshold" and signal is Signal.TEMP_C and op in (">", ">="),
        Role.XID: kind == "xid",
        Role.BUDGET: kind == "budget",
        Role.OOM_FORECAST: kind == "forecast"
        and signal is Signal.FB_USED_RATIO
        and threshold is not None
        and 0.5 <= threshold <= 1.0,
    }[role]
    return None if fits else f"role {role} needs {_ROLE_SHAPES[role]}"


Rule = Annotated[
    ThresholdRule | UnallocatedRule | XidRule | DataGapRule | ForecastRule | BudgetRule,
    Field(discriminator="kind"),
]
RULE_KINDS = ("threshold", "unallocated", "xid", "data_gap", "forecast", "budget")


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    rules: list[Rule]
