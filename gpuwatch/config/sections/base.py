"""What every settings section shares: the strict model base and the duration type.

A section is strict so that a typo in a key is an error, not a silently ignored setting;
it is frozen so that no part of gpuwatch changes settings another part has read.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

from gpuwatch.model.durations import parse_duration_s


class Section(BaseModel):
    """The base of every settings model."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, populate_by_name=True
    )


DurationS = Annotated[int, BeforeValidator(parse_duration_s)]
"""Seconds, written as an integer or a duration (``90``, ``30m``, ``1h30m``, ``7d``)."""
