"""Budgets: how much each team, namespace or pool may spend on GPUs a month, and who
to tell as it gets close.

Spend is priced from the price book over the month's hourly history; the month is the
calendar month in ``budgets.time_zone`` (a team in Shanghai closes November at 16:00
UTC on the 30th). A budget rule (kind ``budget``) says at which shares of the budget,
spent or projected, a finding fires.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from gpuwatch.config.sections.base import Money, Section, known_time_zone
from gpuwatch.model import budgets as domain


class BudgetItem(Section):
    """One monthly budget. Set exactly one of `team`, `namespace`, `pool`."""

    name: str | None = Field(
        None, description="How messages name it; unset: the team, namespace or pool."
    )
    team: str | None = Field(None, description="A team (see `attribution.team_label`).")
    namespace: str | None = Field(None, description="A namespace.")
    pool: str | None = Field(
        None,
        description="A node pool: every GPU-hour of its nodes counts, held or not (the "
        "bill for a pool includes its idle capacity).",
    )
    amount: Money = Field(description="The monthly amount, in `currency`.")
    currency: str = Field(
        min_length=3,
        max_length=3,
        description="ISO 4217 code. Only GPU-hours priced in it count: currencies are never "
        "converted or added together.",
    )
    channel: str | None = Field(
        None,
        description="Slack channel for this budget's findings; unset: routed like any "
        "finding (`notify.routes`, e.g. by team).",
    )

    @model_validator(mode="after")
    def _one_scope(self) -> BudgetItem:
        set_ = [s for s in ("team", "namespace", "pool") if getattr(self, s)]
        if len(set_) != 1:
            raise ValueError("set exactly one of team, namespace, pool")
        return self

    def to_domain(self) -> domain.Budget:
        scope: domain.BudgetScope = (
            "team" if self.team else "namespace" if self.namespace else "pool"
        )
        value = str(getattr(self, scope))
        return domain.Budget(
            name=self.name or value,
            scope=scope,
            value=value,
            amount=self.amount,
            currency=self.currency.upper(),
            channel=self.channel,
        )


class BudgetsSettings(Section):
    """Monthly GPU budgets and the time zone their months are counted in."""

    time_zone: str = Field(
        "UTC",
        description="IANA time zone whose calendar months the budgets are for "
        "(`Asia/Shanghai`, `Europe/Berlin`): finance closes a month at local midnight.",
    )
    monthly: list[BudgetItem] = Field(
        default_factory=list,
        description="The budgets, each with one of `team`, `namespace`, `pool`; an `amount` "
        "per calendar month in `currency` (ISO 4217); optionally a `name` and a `channel` "
        "for its findings. None: no budget is read or judged (nothing is queried).",
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return known_time_zone(value)

    @model_validator(mode="after")
    def _unique_names(self) -> BudgetsSettings:
        names = [b.to_domain().name for b in self.monthly]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"budget names must be unique; repeated: {', '.join(repeated)}")
        return self

    def to_domain(self) -> tuple[domain.Budget, ...]:
        return tuple(b.to_domain() for b in self.monthly)
