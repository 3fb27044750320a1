"""What every settings section shares: the strict model base, durations and time zones.

A section is strict so that a typo in a key is an error, not a silently ignored setting;
it is frozen so that no part of gpuwatch changes settings another part has read.
"""

from __future__ import annotations

from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict

from gpuwatch.model.durations import parse_duration_s


class Section(BaseModel):
    """The base of every settings model."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, populate_by_name=True
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


def known_time_zone(value: str, *, hint: str = "") -> str:
    """``value`` when it names an IANA time zone, else a ValueError (``hint`` appended)."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r}{hint}") from exc
    return value
