"""What every settings section shares: the strict model base, durations, time zones,
and the numeric types whose bounds every file gpuwatch reads must respect.

A section is strict so that a typo in a key is an error, not a silently ignored setting;
it is frozen so that no part of gpuwatch changes settings another part has read. No
number may be NaN or infinite: a NaN compares false with every bound, so it would slip
past ``ge``/``le`` and poison every sum it enters (a cost, a saving, a budget).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from gpuwatch.model.durations import parse_duration_s


class Section(BaseModel):
    """The base of every settings model."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_default=True,
        populate_by_name=True,
        allow_inf_nan=False,
    )


SecretKind = Literal["url", "value", "file", "env"]
"""How a setting holds a secret: ``url``, the password of its user info; ``value``, the
value itself (each value of a mapping); ``file``, the content of the file it names;
``env``, the value of the environment variable it names."""


def secret(kind: SecretKind, *, webhook: bool = False) -> dict[str, str | bool]:
    """The ``json_schema_extra`` that marks a setting secret (``gpuwatch.config.secrets``
    enumerates the marked settings; the settings reference says which they are).
    ``webhook``: the secret is a webhook URL, whose path is the credential."""
    return {"secret": kind, "webhook": webhook}


DurationS = Annotated[int, BeforeValidator(parse_duration_s)]
"""Seconds, written as an integer or a duration (``90``, ``30m``, ``1h30m``, ``7d``)."""

Money = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
"""An amount of money (a price per GPU-hour): never negative, never NaN or infinite. A
negative price would turn waste into income and savings into losses without a word."""

Count = Annotated[int, Field(ge=0)]
"""A whole number of things (nodes, jobs) where none is a meaningful answer."""

PositiveCount = Annotated[int, Field(ge=1)]
"""A whole number of things where none makes no sense (MIG instances per GPU)."""

Ratio = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
"""A fraction of a whole, 0 to 1."""

NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A finite rate or amount that cannot be negative (preemptions per hour)."""


def known_time_zone(value: str, *, hint: str = "") -> str:
    """``value`` when it names an IANA time zone, else a ValueError (``hint`` appended)."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r}{hint}") from exc
    return value


def moved_keys(data: Any, where: str, moved: dict[str, str]) -> Any:
    """Refuse settings that moved, saying where they went (a renamed key would otherwise
    be only "extra inputs are not permitted")."""
    if isinstance(data, dict):
        for key, target in moved.items():
            if key in data:
                raise ValueError(f"{where}.{key} is no longer read: use {target}")
    return data
