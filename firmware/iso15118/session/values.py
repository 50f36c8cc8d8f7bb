"""Numbers on the wire: DIN 70121 / ISO 15118-2 PhysicalValue and ISO 15118-20 RationalNumber.

A PhysicalValue is ``Value * 10^Multiplier`` with ``Value`` an xs:short (-32768..32767) and
``Multiplier`` an xs:byte restricted to -3..3 (DIN 70121 and ISO 15118-2 ``unitMultiplierType``), plus
an optional unit. A -20 RationalNumber is the same idea with ``Exponent`` (-128..127) and ``Value``
(xs:short) and no unit (ISO 15118-20 CommonTypes ``RationalNumberType``; standards-facts.md 2.3).

:func:`physical` picks the smallest multiplier that fits the value, so the precision is the best the
field can carry; values that cannot be carried at all (beyond 32767 * 10^3) are a ValueError, never a
silent wrap-around.
"""

from __future__ import annotations

import math
from typing import Any

SHORT_MIN, SHORT_MAX = -32768, 32767
MULTIPLIER_MIN, MULTIPLIER_MAX = -3, 3  # unitMultiplierType (DIN 70121, ISO 15118-2)


class WireValueError(ValueError):
    """A number that the message field cannot carry, or a field that is not a number."""


def _scaled(value: float, lowest: int, highest: int) -> tuple[int, int]:
    if not math.isfinite(value):
        raise WireValueError(f"{value!r} is not a finite number")
    for exponent in range(lowest, highest + 1):
        mantissa = round(value / 10.0**exponent)
        if SHORT_MIN <= mantissa <= SHORT_MAX:
            return mantissa, exponent
    raise WireValueError(f"{value:g} does not fit a 16-bit value with an exponent up to {highest}")


def physical(value: float, unit: str | None) -> dict[str, Any]:
    """A DIN / ISO-2 PhysicalValue (element order: Multiplier, Unit, Value)."""
    mantissa, multiplier = _scaled(value, MULTIPLIER_MIN, MULTIPLIER_MAX)
    out: dict[str, Any] = {"Multiplier": multiplier}
    if unit is not None:
        out["Unit"] = unit
    out["Value"] = mantissa
    return out


def from_physical(field: Any, *, what: str = "value") -> float:
    """The number a PhysicalValue carries."""
    try:
        multiplier, value = int(field["Multiplier"]), int(field["Value"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WireValueError(f"{what}: not a PhysicalValue ({field!r})") from exc
    if not MULTIPLIER_MIN <= multiplier <= MULTIPLIER_MAX:
        raise WireValueError(f"{what}: multiplier {multiplier} outside {MULTIPLIER_MIN}..{MULTIPLIER_MAX}")
    return value * 10.0**multiplier


def rational(value: float) -> dict[str, Any]:
    """An ISO 15118-20 RationalNumber (element order: Exponent, Value)."""
    mantissa, exponent = _scaled(value, -128, 127)
    return {"Exponent": exponent, "Value": mantissa}


def from_rational(field: Any, *, what: str = "value") -> float:
    try:
        exponent, value = int(field["Exponent"]), int(field["Value"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WireValueError(f"{what}: not a RationalNumber ({field!r})") from exc
    return value * 10.0**exponent
