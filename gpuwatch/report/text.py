"""How the report writes numbers, money and times as text: the page's filters (its
template's and the rows ``html_rows`` builds) share these, so that a figure reads the
same wherever it appears."""

from __future__ import annotations

import json
import math
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

WHEN = "%a %d %b %H:%M"
"""A moment of the period (always UTC on this page): ``Tue 17 Nov 14:00``."""


def when_text(moment: datetime) -> str:
    return moment.strftime(WHEN)


def count_text(count: int) -> str:
    return f"{count:,}"


def hours_text(hours: float) -> str:
    return f"{hours:,.0f}"


def money_text(amount: Decimal | None, currency: str) -> str:
    """``USD 1,234.57``: to the cent, half up (the exact value is in ``data-value``)."""
    if amount is None:
        return "n/a"
    cents = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return f"{currency} {cents:,}"


def exact_decimal(amount: Decimal) -> str:
    """The value as the Parquet decimal holds it: six places, never an exponent."""
    return f"{amount:.6f}"


def share_hours_text(hours: float) -> str:
    """GPU-hours a group held: whole numbers as they are, shares of GPUs to a tenth."""
    return f"{hours:,.0f}" if float(hours).is_integer() else f"{hours:,.1f}"


def percent_text(ratio: float | None, digits: int = 0) -> str:
    if ratio is None:
        return "n/a"
    return f"{ratio * 100:.{digits}f} %"


def change_text(change: float | None) -> str:
    """``+12 %`` / ``−4 %`` / ``±0 %``; empty when there is nothing to compare."""
    if change is None:
        return ""
    percent = round(change * 100)
    if percent == 0:
        return "±0 %"
    return f"+{percent} %" if percent > 0 else f"−{-percent} %"


def json_text(value: Any) -> str:
    """A value of the savings' JSON columns as the page shows it: a string as it is,
    anything else as JSON (a whole or finite number without ``json.dumps``, which is
    what ``json.dumps`` writes for it)."""
    kind = type(value)
    if kind is str:
        return value
    if kind is int or (kind is float and math.isfinite(value)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
