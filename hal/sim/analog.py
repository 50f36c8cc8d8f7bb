"""Wiring the simulated plant to ADC inputs: each helper returns a callable that gives the volts at
one ADC pin, for :meth:`hal.sim.mcp3x0x.Mcp3x0xSim.set_channel`.

Each helper inverts the board's front end, so the driver's calibration (the forward direction) is
exercised against an independent computation of the same circuit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from hal.sim.plant import Plant
from hal.types import PILOT_PWM_FREQUENCY_HZ, PilotMode

#: Phase advance per sample: the golden-ratio rotation. Any N consecutive points split the period
#: into gaps of at most three lengths (three-gap theorem); for N = 100 the longest is 1.32 % of the
#: period wherever the sequence starts, so 100 samples land in every stretch longer than that,
#: including the 5 % high phase. It stands in for the Pi's sampling, which is unrelated to the PWM
#: phase.
GOLDEN_PHASE_STEP = (math.sqrt(5.0) - 1.0) / 2.0

KELVIN_AT_0_C = 273.15


class CpChannel:
    """The pilot as the ADC sees it: each call is one sample, taken ``phase_step`` of a PWM period
    after the previous one, scaled by the inverse of ``pilot_v = adc_v * gain + offset_v``.

    ``edge_s`` gives the PWM edges a finite, linear slew (IEC rise times are up to ~10 µs,
    standards-facts 1.3) so samples can land mid-edge as on a real board; 0 gives ideal edges.
    """

    def __init__(
        self,
        plant: Plant,
        *,
        gain: float,
        offset_v: float,
        phase_step: float = GOLDEN_PHASE_STEP,
        phase: float = 0.0,
        edge_s: float = 0.0,
    ) -> None:
        if gain == 0:
            raise ValueError("gain must not be 0")
        self.plant = plant
        self.gain = gain
        self.offset_v = offset_v
        self.phase_step = phase_step
        self.phase = phase % 1.0
        self.edge_fraction = edge_s * PILOT_PWM_FREQUENCY_HZ

    def pilot_v(self, phase: float) -> float:
        """Pilot volts at ``phase`` (0..1) of the period, edges included."""
        plant = self.plant
        e = self.edge_fraction
        if plant.pilot.mode is not PilotMode.PWM or e <= 0:
            return plant.cp_voltage(phase)
        high, low = plant.cp_plateaus()
        duty = plant.pilot.duty
        if phase < e:  # rising edge starts the period
            return low + (high - low) * phase / e
        if duty <= phase < duty + e:  # falling edge at the end of the high phase
            return high - (high - low) * (phase - duty) / e
        return plant.cp_voltage(phase)

    def __call__(self) -> float:
        v = self.pilot_v(self.phase)
        self.phase = (self.phase + self.phase_step) % 1.0
        return (v - self.offset_v) / self.gain


def cp_channel(
    plant: Plant, *, gain: float, offset_v: float, phase_step: float = GOLDEN_PHASE_STEP, edge_s: float = 0.0
) -> CpChannel:
    return CpChannel(plant, gain=gain, offset_v=offset_v, phase_step=phase_step, edge_s=edge_s)


def pp_channel(plant: Plant, *, pullup_ohm: float, pullup_v: float) -> Callable[[], float]:
    """PP pin voltage: ``plant.pp_ohm`` to PE under a pull-up; ``None`` (no cable) reads the rail."""

    def read() -> float:
        r = plant.pp_ohm
        if r is None:
            return pullup_v
        return pullup_v * r / (r + pullup_ohm)

    return read


def ntc_resistance_ohm(temperature_c: float, *, r25_ohm: float, beta: float) -> float:
    """Beta-model NTC: R = R25 × exp(beta × (1/T - 1/T25))."""
    t_k = temperature_c + KELVIN_AT_0_C
    return r25_ohm * math.exp(beta * (1.0 / t_k - 1.0 / (25.0 + KELVIN_AT_0_C)))


def ntc_channel(
    plant: Plant, name: str, *, r25_ohm: float, beta: float, pullup_ohm: float, pullup_v: float
) -> Callable[[], float]:
    """NTC pin voltage for ``plant.temperatures_c[name]`` (low-side NTC, pull-up to ``pullup_v``)."""

    def read() -> float:
        try:
            t_c = plant.temperatures_c[name]
        except KeyError:
            raise KeyError(
                f"plant has no temperature {name!r}; set plant.temperatures_c[{name!r}] in the scenario"
            ) from None
        r = ntc_resistance_ohm(t_c, r25_ohm=r25_ohm, beta=beta)
        return pullup_v * r / (r + pullup_ohm)

    return read
