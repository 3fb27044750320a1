"""Durations as people write them in YAML (``30m``, ``1h30m``, ``90s``) and as seconds.

Prometheus' duration syntax is the one users already know from their alert rules, so
rules and settings accept it; the domain only ever holds whole seconds (``window_s``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_UNIT_S = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration_s(text: str | int) -> int:
    """Return the number of seconds in ``text`` (``"30m"`` -> 1800; an int is seconds).

    Raises ValueError with the accepted syntax when ``text`` is not a duration.
    """
    if isinstance(text, bool):
        raise ValueError(f"expected a duration like 30m, 1h30m or 90s, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"expected a non-negative duration, got {text}")
        return text
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match or not text.strip():
        raise ValueError(f"expected a duration like 30m, 1h30m or 90s, got {text!r}")
    total = 0
    for value, unit in zip(match.groups(), "wdhms", strict=True):
        if value is not None:
            total += int(value) * _UNIT_S[unit]
    return total


def format_duration(seconds: float) -> str:
    """Format seconds the way ``parse_duration_s`` reads them (1800 -> ``30m``)."""
    remaining = round(seconds)
    if remaining == 0:
        return "0s"
    parts = []
    for unit in "dhms":
        size = _UNIT_S[unit]
        if remaining >= size:
            parts.append(f"{remaining // size}{unit}")
            remaining %= size
    return "".join(parts)


def format_eta(seconds: float) -> str:
    """``~18 min``, ``~2.5 h``: an estimate's precision, not a countdown's."""
    if seconds < 7200:
        return f"~{max(round(seconds / 60), 1)} min"
    return f"~{seconds / 3600:.1f} h"


def rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix, second precision (what the cycle JSON uses)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_instant(text: str) -> datetime:
    """Parse an RFC 3339 / ISO 8601 instant; a naive one is taken as UTC."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(
            f"expected an RFC 3339 instant like 2026-11-24T02:00:00Z, got {text!r}"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
