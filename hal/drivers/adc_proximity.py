"""Proximity pilot (PP) sensing with an SPI ADC (MCP3202 / MCP3008).

The board pulls the PP line up to ``pullup_v`` through ``pullup_ohm``; the cable's (Type 2) or the
connector's (Type 1) resistor goes from PP to PE, so the ADC sees the divider

    v = pullup_v × R_pp / (R_pu + R_pp)   =>   R_pp = R_pu × v / (pullup_v - v)

With the pull-up on the ADC's reference rail (the default), the ratio is independent of that rail's
exact voltage. A full-scale reading means nothing pulls PP down: open circuit, no cable. Choose the
pull-up near the middle of the bands the board must tell apart (on a 3.3 V, 10-bit board, 1 kΩ
resolves every Type 2 edge to about 10 Ω at 2.2 kΩ and better below).

The decoding itself (bands, faults) lives in :mod:`hal.proximity`.
"""

from __future__ import annotations

import statistics
from typing import Literal

from hal.drivers.mcp3x0x import Mcp3x0x
from hal.proximity import decode_type1, decode_type2
from hal.types import ProximityReading

Connector = Literal["type1", "type2"]

#: PP is a DC level; the median of a few conversions removes a single noise spike.
DEFAULT_SAMPLES = 5


class AdcProximityPilot:
    """``hal.interfaces.ProximityPilot`` on one channel of an MCP3202 / MCP3008."""

    def __init__(
        self,
        adc: Mcp3x0x,
        channel: int,
        *,
        pullup_ohm: float,
        pullup_v: float | None = None,
        connector: Connector = "type2",
        single_phase: bool = False,
        samples: int = DEFAULT_SAMPLES,
        name: str = "proximity pilot",
    ) -> None:
        adc.check_channel(channel)
        if not pullup_ohm > 0:
            raise ValueError(f"{name}: pullup_ohm must be positive, got {pullup_ohm}")
        if connector not in ("type1", "type2"):
            raise ValueError(f"{name}: connector must be 'type1' or 'type2', got {connector!r}")
        if samples < 1:
            raise ValueError(f"{name}: samples must be at least 1, got {samples}")
        self._adc = adc
        self._channel = channel
        self._pullup_ohm = pullup_ohm
        self._pullup_v = adc.vref_v if pullup_v is None else pullup_v
        if not self._pullup_v > 0:
            raise ValueError(f"{name}: pullup_v must be positive, got {self._pullup_v}")
        self._connector: Connector = connector
        self._single_phase = single_phase
        self._samples = samples
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def resistance_from_counts(self, counts: int) -> float | None:
        """PP-PE resistance for an ADC code; ``None`` for an open line (no cable)."""
        v = self._adc.counts_to_volts(counts)
        if counts >= self._adc.full_scale_counts or v >= self._pullup_v:
            return None
        return self._pullup_ohm * v / (self._pullup_v - v)

    async def read(self) -> ProximityReading:
        counts = await self._adc.read_counts_burst(self._channel, self._samples)
        resistance = self.resistance_from_counts(round(statistics.median(counts)))
        if self._connector == "type1":
            return decode_type1(resistance)
        return decode_type2(resistance, single_phase=self._single_phase)
