"""What every settings section shares: the strict model base, durations and time zones.

A section is strict so that a typo in a key is an error, not a silently ignored setting;
it is frozen so that no part of gpuwatch changes settings another part has read.
"""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict

from gpuwatch.model.durations import parse_duration_s


class Section(BaseModel):
    """The base of every settings model."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, populate_by_name=True
    )


DurationS = Annotated[int, BeforeValidator(parse_duration_s)]
"""Seconds, written as an integer or a duration (``90``, ``30m``, ``1h30m``, ``7d``)."""


def known_time_zone(value: str, *, hint: str = "") -> str:
    """``value`` when it names an IANA time zone, else a ValueError (``hint`` appended)."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r}{hint}") from exc
    return value
