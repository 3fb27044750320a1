"""Kubernetes quantities (``8``, ``500m``, ``768Gi``, ``1e3``) as the API machinery reads them.

Every resource amount in an object (requests, limits, overhead, a node's capacity) is a
quantity string. The grammar and multipliers here are ``resource.Quantity``'s, so that a
value gpuwatch reads is the value the scheduler reads, and a malformed one is refused
with the object and field it came from rather than guessed at. ``format_quantity`` is the
inverse, for objects gpuwatch writes (tests, benchmarks, ``gpuwatch simulate``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from types import MappingProxyType

from gpuwatch.model.errors import SourceBadResponse

# The API machinery's grammar: a signed decimal number, then an SI suffix, a binary
# suffix, or a decimal exponent (``1e3``). ``1E`` is one exa; ``1e`` is malformed.
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<exponent>[eE][+-]?[0-9]+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?"
)
_MULTIPLIERS: Mapping[str, Decimal] = MappingProxyType(
    {
        "": Decimal(1),
        "n": Decimal("1e-9"),
        "u": Decimal("1e-6"),
        "m": Decimal("1e-3"),
        "k": Decimal("1e3"),
        "M": Decimal("1e6"),
        "G": Decimal("1e9"),
        "T": Decimal("1e12"),
        "P": Decimal("1e15"),
        "E": Decimal("1e18"),
        "Ki": Decimal(2**10),
        "Mi": Decimal(2**20),
        "Gi": Decimal(2**30),
        "Ti": Decimal(2**40),
        "Pi": Decimal(2**50),
        "Ei": Decimal(2**60),
    }
)


def parse_quantity(value: object, where: str = "quantity") -> float:
    """A Kubernetes quantity (``"8"``, ``"500m"``, ``"768Gi"``, ``"1e3"``) as a float.

    ``where`` names the object and field for the error a malformed value raises
    (``SourceBadResponse``). JSON numbers are accepted as they are.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise SourceBadResponse(
            f"{where}: expected a Kubernetes quantity (a string such as 500m, 8, 768Gi), "
            f"got {type(value).__name__} {value!r}"
        )
    if isinstance(value, int | float):
        number = Decimal(value)
        if not number.is_finite():
            raise SourceBadResponse(f"{where}: quantity {value!r} is not a finite number")
        return float(number)
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise SourceBadResponse(
            f"{where}: malformed quantity {value!r}; expected a number with an optional "
            "suffix (m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei) or exponent (1e3)"
        )
    try:
        if match["exponent"]:
            number = Decimal(match["number"] + match["exponent"])
        else:
            number = Decimal(match["number"]) * _MULTIPLIERS[match["suffix"] or ""]
    except InvalidOperation as exc:  # e.g. an exponent too large for Decimal's context
        raise SourceBadResponse(f"{where}: malformed quantity {value!r}: {exc}") from exc
    return float(number)


def format_quantity(value: float) -> str:
    """A float as the canonical quantity string a Kubernetes object would carry."""
    if value == int(value):
        whole = int(value)
        for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
            step = int(_MULTIPLIERS[suffix])
            if whole and whole % step == 0:
                return f"{whole // step}{suffix}"
        return str(whole)
    milli = value * 1000
    if milli == int(milli):
        return f"{int(milli)}m"
    return repr(value)
