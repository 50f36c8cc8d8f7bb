"""Values that cross the HAL boundary: modes, readings and capabilities.

All readings are immutable and carry SI units in their field names so that a reader never has to
guess whether a number is in volts, millivolts or ADC counts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class PilotMode(enum.Enum):
    """What the control pilot generator drives (IEC 61851-1 Annex A; x1/x2 naming as in ISO 15118-3)."""

    X1 = "x1"  # steady +12 V, no PWM: "charging not allowed / no current offer"
    PWM = "pwm"  # 1 kHz +/-12 V square wave, duty cycle = current offer (x2)
    F = "f"  # steady -12 V: EVSE not available / error
    E = "e"  # 0 V: EVSE problem / wake-up pulse (not every board can produce it)


#: 1 kHz nominal, 980-1020 Hz allowed (IEC 61851-1; EVerest bring-up doc, standards-facts 1.3).
PILOT_PWM_FREQUENCY_HZ = 1000
#: Duty cycle is commanded in 0.1 % steps: 0..1000 per mille.
PILOT_DUTY_MAX_PERMILLE = 1000


@dataclass(frozen=True)
class PilotReading:
    """Levels of the control pilot over one or more PWM periods, in pilot volts (not ADC volts).

    ``low_v`` is the negative plateau (the diode check, IEC 61851-1 requires -12 V while PWM runs);
    it is ``None`` when no low phase was seen (pilot in X1, or a measurement that only saw the high
    phase).
    """

    high_v: float
    low_v: float | None
    samples: int = 1


class CableLatch(enum.Enum):
    """Type 1 (SAE J1772) proximity states: 150 ohm latched, ~480 ohm with the latch button pressed."""

    LATCHED = "latched"
    PRESSED = "pressed"
    UNPLUGGED = "unplugged"


@dataclass(frozen=True)
class ProximityReading:
    """Proximity pilot: the measured resistance and what it means.

    Type 2: ``ampacity_a`` is the cable rating (13/20/32/63 A), ``None`` with ``fault`` set when the
    resistance is outside every band, and 0 when no cable is present. Type 1: ``latch`` says whether
    the connector is latched, pressed or out.
    """

    resistance_ohm: float | None
    ampacity_a: int | None = None
    latch: CableLatch | None = None
    fault: str | None = None


@dataclass(frozen=True)
class MeterReading:
    """One reading of the AC meter. Per-phase tuples are ordered L1, L2, L3 (length = phases).

    Power is signed: positive means energy flows to the EV (import by the EV through the charger),
    negative means energy flows back to the grid (export, V2G). Energy registers only grow.
    """

    voltage_v: tuple[float, ...]
    current_a: tuple[float, ...]
    power_w: tuple[float, ...]
    frequency_hz: float
    import_wh: float
    export_wh: float

    @property
    def total_power_w(self) -> float:
        return sum(self.power_w)


class ConverterMode(enum.Enum):
    OFF = "off"
    CHARGE = "charge"  # grid -> EV (rectifier)
    DISCHARGE = "discharge"  # EV -> grid (inverter, V2G)


@dataclass(frozen=True)
class ConverterCapabilities:
    max_voltage_v: float
    min_voltage_v: float
    max_current_a: float
    max_power_w: float
    bidirectional: bool


@dataclass(frozen=True)
class ConverterStatus:
    """What the converter reports. ``current_a`` is signed like ``MeterReading.power_w``:
    positive into the EV, negative out of the EV."""

    mode: ConverterMode
    output_on: bool
    voltage_v: float
    current_a: float
    faults: frozenset[str] = field(default_factory=frozenset)

    @property
    def power_w(self) -> float:
        return self.voltage_v * self.current_a


@dataclass(frozen=True)
class InsulationReading:
    """Insulation monitor (IEC 61557-8). ``resistance_ohm`` is ``None`` on monitors that only report
    an alarm contact."""

    alarm: bool
    prealarm: bool = False
    resistance_ohm: float | None = None


class Indication(enum.Enum):
    """What the status indicator shows; the board maps each one to LEDs."""

    OFF = "off"
    IDLE = "idle"
    CONNECTED = "connected"
    CHARGING = "charging"
    DISCHARGING = "discharging"
    FAULT = "fault"
