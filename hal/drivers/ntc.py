"""NTC thermistor temperature on one SPI ADC channel (MCP3202 / MCP3008).

The NTC sits on the low side with a pull-up ``pullup_ohm`` to ``pullup_v`` (by default the ADC's
reference rail, which makes the reading ratiometric):

    R_ntc = R_pu × v / (pullup_v - v)
    1 / T = 1 / T25 + ln(R_ntc / R25) / beta          (beta equation, T in kelvin, T25 = 298.15 K)

An open sensor lets the pull-up take the input to full scale; a shorted one (or a wire chafed to
ground) takes it to 0. Either is reported as ``ProtocolError`` naming the sensor, never as a
temperature: a reading within ``rail_margin`` (default 1 % of the span) of a rail is treated as
such a fault. With a pull-up equal to R25 that margin corresponds, for a typical beta of 3950 K, to
about -52 °C and +183 °C, far outside what a charger's sensors see in service; a board with another
pairing can set ``rail_margin`` to keep the same meaning.
"""

from __future__ import annotations

import math
import statistics

from hal.drivers.mcp3x0x import Mcp3x0x
from hal.errors import ProtocolError

KELVIN_AT_0_C = 273.15
T25_K = KELVIN_AT_0_C + 25.0
DEFAULT_RAIL_MARGIN = 0.01
#: A temperature is a slow DC level; the median of a few conversions removes a single noise spike.
DEFAULT_SAMPLES = 5


def ntc_temperature_c(resistance_ohm: float, *, r25_ohm: float, beta: float) -> float:
    """Temperature of a beta-model NTC at ``resistance_ohm``."""
    inv_t = 1.0 / T25_K + math.log(resistance_ohm / r25_ohm) / beta
    return 1.0 / inv_t - KELVIN_AT_0_C


class NtcTemperature:
    """``hal.interfaces.TemperatureSensor`` for an NTC divider on one ADC channel."""

    def __init__(
        self,
        adc: Mcp3x0x,
        channel: int,
        *,
        name: str,
        r25_ohm: float,
        beta: float,
        pullup_ohm: float,
        pullup_v: float | None = None,
        samples: int = DEFAULT_SAMPLES,
        rail_margin: float = DEFAULT_RAIL_MARGIN,
    ) -> None:
        adc.check_channel(channel)
        for label, value in (("r25_ohm", r25_ohm), ("beta", beta), ("pullup_ohm", pullup_ohm)):
            if not value > 0:
                raise ValueError(f"{name}: {label} must be positive, got {value}")
        if not 0 < rail_margin < 0.5:
            raise ValueError(f"{name}: rail_margin is a fraction of the span in (0, 0.5), got {rail_margin}")
        if samples < 1:
            raise ValueError(f"{name}: samples must be at least 1, got {samples}")
        self._adc = adc
        self._channel = channel
        self._name = name
        self._r25_ohm = r25_ohm
        self._beta = beta
        self._pullup_ohm = pullup_ohm
        self._pullup_v = adc.vref_v if pullup_v is None else pullup_v
        if not self._pullup_v > 0:
            raise ValueError(f"{name}: pullup_v must be positive, got {self._pullup_v}")
        self._samples = samples
        self._rail_margin = rail_margin

    @property
    def name(self) -> str:
        return self._name

    def temperature_from_counts(self, counts: int) -> float:
        v = self._adc.counts_to_volts(counts)
        span = min(self._pullup_v, self._adc.vref_v)  # the ADC clips at vref even if the pull-up is higher
        where = f"(ADC channel {self._channel} on {self._adc.name}, {v:.3f} V of {self._pullup_v:g} V)"
        if counts >= self._adc.full_scale_counts or v >= span * (1.0 - self._rail_margin):
            raise ProtocolError(self._name, f"sensor open: input at the pull-up rail {where}")
        if v <= span * self._rail_margin:
            raise ProtocolError(self._name, f"sensor shorted: input at 0 V {where}")
        resistance = self._pullup_ohm * v / (self._pullup_v - v)
        return ntc_temperature_c(resistance, r25_ohm=self._r25_ohm, beta=self._beta)

    async def read_c(self) -> float:
        counts = await self._adc.read_counts_burst(self._channel, self._samples)
        return self.temperature_from_counts(round(statistics.median(counts)))
