"""Proximity for a charger with a captive (fixed) cable: there is no PP line to measure, and the
cable's rating is a property of the product, given in the board file (IEC 61851-1 uses PP only for
detachable cables)."""

from __future__ import annotations

from hal.types import ProximityReading


class FixedCableProximity:
    def __init__(self, *, rating_a: float) -> None:
        if not rating_a > 0:
            raise ValueError(f"a fixed cable needs a positive rating, not {rating_a}")
        self._reading = ProximityReading(resistance_ohm=None, ampacity_a=int(rating_a))

    async def read(self) -> ProximityReading:
        return self._reading
