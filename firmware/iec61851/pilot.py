"""The control pilot: current <-> duty cycle, voltage windows and the debounced pilot state.

Duty encoding, IEC 61851-1 Table A.7 (EVSE side) and Table A.8 (EV side), standards-facts.md 1.4:

    6 A <= I <= 51 A     duty % = I / 0.6
    51 A < I <= 80 A     duty % = I / 2.5 + 64
    below 6 A            no PWM offer at all (the connector pauses instead)
    high-level comms     5 % (ISO 15118 / DIN 70121)

Duty is commanded in 0.1 % steps, always rounded *down*: the EV must never read an offer above the
limit. 51 A..52.75 A cannot be encoded (85.0 % decodes as 51 A, 85.1 % as 52.75 A), so such limits
are offered as 51 A ("weird gap in norm", EVerest Charger.cpp).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from hal.types import PilotReading

#: 5 % duty: digital communication required (IEC 61851-1 Table A.8; ISO 15118-3).
HLC_DUTY_PERMILLE = 50
MIN_OFFER_A = 6.0
MAX_OFFER_A = 80.0
LOW_BAND_MAX_A = 51.0
#: The lowest current the high band (duty > 85 %) can express: (85.1 - 64) * 2.5.
HIGH_BAND_MIN_A = 52.75


def duty_for_current(current_a: float) -> int | None:
    """Per-mille duty that offers at most ``current_a`` (Table A.7); ``None`` below 6 A."""
    if not math.isfinite(current_a) or current_a < MIN_OFFER_A:
        return None
    amps = min(current_a, MAX_OFFER_A)
    if amps < HIGH_BAND_MIN_A - 1e-9:  # 1e-9: a current decoded from 85.1 % may land a hair below
        amps = min(amps, LOW_BAND_MAX_A)
        # +1e-9: 6 A / 0.6 must give exactly 100, not 99 through float rounding.
        return math.floor(amps / 0.6 * 10 + 1e-9)
    return math.floor((amps / 2.5 + 64) * 10 + 1e-9)


def current_for_duty(duty_permille: int) -> float:
    """What an EV reads from a duty (Table A.8, as the EV side decodes it)."""
    d = duty_permille / 10
    if d > 97:
        return 0.0
    if d > 96:
        return 80.0
    if d > 85:
        return (d - 64) * 2.5
    if d >= 10:
        return d * 0.6
    if d >= 8:
        return 6.0
    return 0.0  # < 8 %: no current (3-7 % = digital communication)


class CpState(enum.Enum):
    """What the EV side of the pilot shows (IEC 61851-1 Table A.3 voltages)."""

    A = "A"  # +12 V: no EV
    B = "B"  # +9 V: EV connected, not ready
    C = "C"  # +6 V: EV ready
    D = "D"  # +3 V: EV ready, ventilation required
    E = "E"  # 0 V: pilot shorted to PE / EVSE problem
    F = "F"  # -12 V: the EVSE itself drives "not available"
    INVALID = "invalid"  # between windows


#: Window half-width around the nominal plateaus: ±1 V after stabilisation (IEC 61851-1 via the
#: Siemens TM ECC manual) plus 0.1 V for the sensing chain (EVerest YetiSimulator uses ±1.1 V).
WINDOW_V = 1.1
_NOMINAL_V = ((CpState.A, 12.0), (CpState.B, 9.0), (CpState.C, 6.0), (CpState.D, 3.0), (CpState.E, 0.0))
#: The negative plateau must read -12 V while PWM runs; anything higher means no diode (Table A.4,
#: "diode presence" check before closing, standards-facts.md 1.5).
DIODE_LOW_MAX_V = -12.0 + WINDOW_V


@dataclass(frozen=True)
class PilotSample:
    state: CpState
    diode_ok: bool | None  # None when no negative plateau was measured (X1, F, E)
    high_v: float
    low_v: float | None


def classify(reading: PilotReading) -> PilotSample:
    """Classify one pilot reading by its positive plateau; judge the diode by its negative one."""
    high = reading.high_v
    state = CpState.INVALID
    for candidate, nominal in (*_NOMINAL_V, (CpState.F, -12.0)):
        if abs(high - nominal) <= WINDOW_V:  # every window includes its edges
            state = candidate
            break
    diode_ok: bool | None = None
    if reading.low_v is not None and state in (CpState.B, CpState.C, CpState.D):
        diode_ok = reading.low_v <= DIODE_LOW_MAX_V
    return PilotSample(state=state, diode_ok=diode_ok, high_v=high, low_v=reading.low_v)


_POWERED = frozenset({CpState.C, CpState.D})


class PilotDebouncer:
    """Accepts a new pilot state only after it persisted for its debounce time.

    Transitions towards less power are confirmed after ``down_s``, towards power after ``up_s``
    (see :mod:`firmware.iec61851.timing`). A state that flickers restarts the timer.
    """

    def __init__(self, *, up_s: float, down_s: float, initial: CpState = CpState.A) -> None:
        self.up_s = up_s
        self.down_s = down_s
        self.state = initial
        self._candidate: CpState | None = None
        self._since = 0.0

    def feed(self, state: CpState, now: float) -> CpState | None:
        """Returns the newly accepted state, or None when nothing changed."""
        if state == self.state:
            self._candidate = None
            return None
        if state != self._candidate:
            self._candidate, self._since = state, now
        hold = self.up_s if state in _POWERED and self.state not in _POWERED else self.down_s
        if now - self._since + 1e-9 >= hold:
            self.state, self._candidate = state, None
            return state
        return None

    @property
    def pending(self) -> CpState | None:
        return self._candidate
