"""The electrical world a simulated board sits in: the EV on the pilot and PP, the grid, the
temperatures, the contactor's physical contacts, the insulation of the DC cable.

The chip and bus simulators read these knobs to decide what to answer; scenario code (and the HIL
EV models later) turns the knobs. Nothing here talks to a driver directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hal.changes import ChangeSignal
from hal.types import PilotMode

# Control pilot circuit, IEC 61851-1 Annex A (standards-facts.md 1.1): +/-12 V generator behind
# 1 kohm; EV side diode plus R2 = 2.74 kohm (state B), R3 = 1.3 kohm in parallel (state C) or
# 270 ohm (state D).
CP_GENERATOR_V = 12.0
CP_SOURCE_OHM = 1000.0
EV_DIODE_DROP_V = 0.7
EV_R2_OHM = 2740.0
EV_R3_C_OHM = 1300.0
EV_R3_D_OHM = 270.0


def _parallel(a: float, b: float) -> float:
    return a * b / (a + b)


#: EV-side resistance for each EV pilot state (None = nothing connected).
EV_STATE_OHM: dict[str, float | None] = {
    "A": None,
    "B": EV_R2_OHM,
    "C": _parallel(EV_R2_OHM, EV_R3_C_OHM),
    "D": _parallel(EV_R2_OHM, EV_R3_D_OHM),
    "E": 0.0,  # pilot shorted to PE
}


@dataclass
class PilotDrive:
    """What the pilot generator currently drives (set by the simulated GPIO pin or co-processor)."""

    mode: PilotMode = PilotMode.F
    duty: float = 0.0  # 0..1, meaningful in PWM mode


#: Knobs that only the meter chip reads, on the firmware's 1 s meter grid: setting them does not wake
#: the firmware's polling loops (an EV model adjusts its current ten times a second).
METER_ONLY = frozenset({"ev_current_a", "grid_voltage_v", "grid_frequency_hz", "phases"})


class _WatchedDict(dict[str, float]):
    """A dict that reports item changes to a :class:`ChangeSignal` (``plant.temperatures_c[n] = t``)."""

    def __init__(self, data: dict[str, float], changes: ChangeSignal) -> None:
        super().__init__(data)
        self._changes = changes

    def __setitem__(self, key: str, value: float) -> None:
        changed = self.get(key) != value
        super().__setitem__(key, value)
        if changed:
            self._changes.notify()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._changes.notify()


@dataclass
class Plant:
    # --- EV on the pilot and proximity lines
    ev_state: str = "A"  # A, B, C, D or E, as the EV's resistors set it
    ev_diode_ok: bool = True
    pp_ohm: float | None = None  # None = no cable / open
    # --- grid and load
    phases: int = 3
    grid_voltage_v: list[float] = field(default_factory=lambda: [230.0, 230.0, 230.0])
    grid_frequency_hz: float = 50.0
    ev_current_a: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # signed, + into EV
    # --- contactor physics
    contactor_welded: bool = False
    contactor_stuck_open: bool = False
    contacts_closed: bool = False  # the main contacts as they physically are (set by the contactor simulator)
    # --- the 1/3-phase contactor "C2" (boards with [phase_switch]); None: the board has none
    phase_contacts_closed: bool | None = None  # set by the phase-switch simulator
    phase_switch_stuck: bool = False  # C2's contacts stay where they are, whatever its coil does
    # --- RCD / temperatures / insulation
    residual_current_ma: float = 0.0
    temperatures_c: dict[str, float] = field(default_factory=dict)
    insulation_ohm: float = 10e6
    # --- generator state
    pilot: PilotDrive = field(default_factory=PilotDrive)
    # --- notified whenever a knob the firmware polls changes (see hal.changes); the wiring that
    # mutates ``pilot`` in place notifies it itself.
    changes: ChangeSignal = field(default_factory=ChangeSignal, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.temperatures_c = _WatchedDict(self.temperatures_c, self.changes)

    def __setattr__(self, name: str, value: Any) -> None:
        changes: ChangeSignal | None = self.__dict__.get("changes")
        if changes is None or name in METER_ONLY:
            object.__setattr__(self, name, value)
            return
        if name == "temperatures_c" and not isinstance(value, _WatchedDict):
            value = _WatchedDict(value, changes)
        before = self.__dict__.get(name)
        object.__setattr__(self, name, value)
        if before != value:
            changes.notify()

    # ------------------------------------------------------------------ pilot
    def cp_plateaus(self) -> tuple[float, float]:
        """(positive plateau, negative plateau) in volts at the EVSE sense point."""
        r_ev = EV_STATE_OHM[self.ev_state]
        if r_ev == 0.0:
            return 0.0, 0.0  # short to PE pulls both plateaus to 0 V
        if r_ev is None:
            high = CP_GENERATOR_V
        else:
            # Generator through 1 kohm into the EV's diode and resistors.
            span = CP_GENERATOR_V - EV_DIODE_DROP_V
            high = EV_DIODE_DROP_V + span * r_ev / (r_ev + CP_SOURCE_OHM)
        if r_ev is None or self.ev_diode_ok:
            low = -CP_GENERATOR_V  # the diode blocks: the negative half is unloaded
        else:
            low = -CP_GENERATOR_V * r_ev / (r_ev + CP_SOURCE_OHM)
        return high, low

    def cp_voltage(self, phase: float) -> float:
        """Pilot voltage at a point ``phase`` (0..1) of the PWM period."""
        high, low = self.cp_plateaus()
        drive = self.pilot
        if drive.mode is PilotMode.X1:
            return high
        if drive.mode is PilotMode.F:
            return low if self.ev_state != "E" else 0.0
        if drive.mode is PilotMode.E:
            return 0.0
        return high if (phase % 1.0) < drive.duty else low

    # ------------------------------------------------------------------ power
    @property
    def live_phases(self) -> int:
        """The phases that reach the socket: all of them, or L1 alone while C2 is open."""
        if self.phase_contacts_closed is None or self.phase_contacts_closed:
            return self.phases
        return 1

    def power_w(self) -> list[float]:
        return [self.grid_voltage_v[i] * self.ev_current_a[i] for i in range(self.phases)]
