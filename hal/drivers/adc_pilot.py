"""Control pilot sensing with an SPI ADC (MCP3202 / MCP3008) on a Pi-only board.

The board scales the ±12 V pilot into the ADC's 0..VREF range with a resistor divider (and usually
an op-amp); its calibration is linear: ``pilot_v = adc_v * gain + offset_v``. The typical divider maps
-12..+12 V onto 0..3.3 V: gain 24 / 3.3, offset -12 V (:data:`TYPICAL_GAIN`, :data:`TYPICAL_OFFSET_V`).

Why max/min over a burst works without synchronising to the PWM: a Pi cannot start a conversion at
a chosen point of the 1 kHz period (the ARCHITECTURE.md "safety below Python's jitter" caveat), so
this driver does what OpenEVSE's ``ReadPilot()`` does (anchors.md, OpenEVSE "Pilot measurement";
lesson 5): take a burst of conversions (100 by default) and keep the highest and the lowest. Each
``xfer2`` ioctl takes tens of microseconds on a Pi, so 100 conversions span several PWM periods at
phases that are unrelated to the PWM (the ioctl latency jitters by microseconds). The plateaus are
flat for all but the ~10 µs after each edge (standards-facts 1.3 rise/fall times), so as soon as one
sample lands on each plateau, the maximum is the positive plateau and the minimum the negative one;
samples taken on an edge lie between the plateaus and cannot disturb either extreme. The smallest
plateau an EVSE produces is the 5 % high phase (50 µs, standards-facts 1.3); with samples spaced
below that, every period contributes a sample to it. The burst must therefore last at least one
period: keep ``samples`` so that ``samples`` × (time per ``xfer2``) ≥ 1 ms.

What the reading means (hal.types.PilotReading):

* ``high_v`` is always the maximum. In X1 it is the single steady level (12 / 9 / 6 / 3 V for A..D),
  with PWM on it is the positive plateau, in F it is about -12 V, in E about 0 V. The caller's state
  windows (standards-facts 1.2) therefore classify F and E from ``high_v`` alone.
* ``low_v`` is the minimum when a negative phase was seen, and ``None`` otherwise. "Negative" means
  below :data:`LOW_PHASE_MAX_V` = -1 V, not below 0 V: state E is 0 V ± 1 V (standards-facts 1.2
  tolerance), so noise around 0 V must not invent a low phase, while the least negative genuine
  plateau, state D with a shorted EV diode, is about -2.4 V (-12 V × 246 Ω / 1246 Ω). With PWM on it
  is the diode-check level (about -12 V with a good diode, about -9 V in state B with a shorted one);
  in X1 it is ``None``; in F it is about -12 V, equal to ``high_v``.

A sample outside ±13.5 V (the generator's ±12 V +5 %, standards-facts 1.2, plus margin) cannot be on
a pilot wire, so the whole window is rejected with ``ProtocolError``: the calibration is wrong, the
front end is broken, or the ADC answers garbage. With the typical calibration the ADC's range is
exactly ±12 V, so this only bites on boards whose divider leaves headroom. A dead ADC whose MISO
reads all zeros shows 0 counts, i.e. a steady -12 V with the typical calibration: the pilot looks like
state F, which stops charging (fail safe) but is not reported as an ADC fault; see
:mod:`hal.drivers.mcp3x0x` for what the bus can detect.
"""

from __future__ import annotations

from hal.drivers.mcp3x0x import Mcp3x0x
from hal.errors import ProtocolError
from hal.types import PilotReading

#: Typical board divider: -12..+12 V pilot onto 0..3.3 V at the ADC.
TYPICAL_GAIN = 24.0 / 3.3
TYPICAL_OFFSET_V = -12.0

#: OpenEVSE's ``ReadPilot()`` takes 100 reads (anchors.md, OpenEVSE "Pilot measurement").
DEFAULT_SAMPLES = 100

#: Highest magnitude a pilot can have: generator ±12 V + 5 % = 12.6 V (standards-facts 1.2), plus margin.
PILOT_ABS_MAX_V = 13.5

#: A minimum above this is not a low phase: E is 0 V ± 1 V; the smallest real negative plateau is ~-2.4 V.
LOW_PHASE_MAX_V = -1.0


class AdcPilotSense:
    """``hal.interfaces.PilotSense`` on one channel of an MCP3202 / MCP3008."""

    def __init__(
        self,
        adc: Mcp3x0x,
        channel: int,
        *,
        gain: float = TYPICAL_GAIN,
        offset_v: float = TYPICAL_OFFSET_V,
        samples: int = DEFAULT_SAMPLES,
        name: str = "pilot sense",
    ) -> None:
        adc.check_channel(channel)
        if samples < 2:
            raise ValueError(f"{name}: at least 2 samples are needed to see both plateaus, got {samples}")
        if gain == 0:
            raise ValueError(f"{name}: gain must not be 0")
        self._adc = adc
        self._channel = channel
        self._gain = gain
        self._offset_v = offset_v
        self._samples = samples
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def counts_to_pilot_v(self, counts: int) -> float:
        return self._adc.counts_to_volts(counts) * self._gain + self._offset_v

    async def read(self) -> PilotReading:
        counts = await self._adc.read_counts_burst(self._channel, self._samples)
        volts = [self.counts_to_pilot_v(c) for c in counts]
        high, low = max(volts), min(volts)
        for v in (high, low):
            if abs(v) > PILOT_ABS_MAX_V:
                raise ProtocolError(
                    self._name,
                    f"sample of {v:+.2f} V is outside the ±{PILOT_ABS_MAX_V} V a pilot can carry "
                    f"(ADC channel {self._channel} on {self._adc.name}); check the board's pilot "
                    f"calibration (gain {self._gain:g}, offset {self._offset_v:+g} V) and front end",
                )
        return PilotReading(
            high_v=high,
            low_v=low if low < LOW_PHASE_MAX_V else None,
            samples=len(volts),
        )
