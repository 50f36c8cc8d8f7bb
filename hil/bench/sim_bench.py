"""A simulated bench, for tests of bench mode: the wires between the rig's instruments and a simulated
board's plant.

On the real bench the relay EV emulator's resistors sit on the charger's pilot and PP lines and the
SCPI load draws through the charger's contactor. Here the rig's relays are gpiozero mock pins, the load
is :class:`hil.bench.sim_scpi.ScpiLoadSim` and the charger is a simulated board; :class:`SimBench`
reads the relay pins and the load and turns the plant's knobs as those circuits would:

* pilot (IEC 61851-1 Annex A; values as in :mod:`hal.sim.plant`): the pilot short -> E; otherwise the
  resistors switched in, R2 2.74 kohm -> B, R2 + R3 1.3 kohm -> C, R2 + 270 ohm -> D, none -> A (a
  pattern the emulator never makes, such as R3 without R2, reads as the state of the nearest
  resistance); the diode bypass -> ``ev_diode_ok = False``;
* PP: the coding resistors switched in, in parallel (1.5 kohm, 680, 220, 100 ohm, 47 ohm invalid:
  docs/hil-bench.md) -> ``pp_ohm``; none -> open;
* current: while the plant's main contacts are closed the load's current (its setpoint while its input
  is on) flows on ``phase`` (L1 by default: a one-phase load); the load sees the plant's voltage while
  the contacts are closed and 0 V otherwise, so it measures no power through an open contactor.

Polling like :mod:`hal.sim.gpio_wiring` (output pins notify nobody): :meth:`SimBench.update` is a
wiring part; :meth:`SimBench.attach` adds it to the board's :class:`hal.sim.gpio_wiring.GpioWiring`,
which updates it every 5 ms on the board's clock. An output no driver holds reads as an open relay.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from hal.sim.plant import EV_R2_OHM, EV_R3_C_OHM, EV_R3_D_OHM, EV_STATE_OHM, Plant
from hil.bench.rig import EvEmulatorConfig
from hil.bench.sim_scpi import ScpiLoadSim

#: The emulator's PP coding resistors (docs/hil-bench.md "EV emulator"; standards-facts.md 1.8).
PP_RELAY_OHM: dict[str, float] = {
    "pp_13a": 1500.0,
    "pp_20a": 680.0,
    "pp_32a": 220.0,
    "pp_63a": 100.0,
    "pp_invalid": 47.0,
}
#: The pilot resistors behind the diode, by relay.
PILOT_RELAY_OHM: dict[str, float] = {"r2": EV_R2_OHM, "r3_c": EV_R3_C_OHM, "r3_d": EV_R3_D_OHM}


def parallel(ohms: list[float]) -> float | None:
    """Resistors in parallel; None for none at all (an open circuit)."""
    if not ohms:
        return None
    return 1.0 / sum(1.0 / r for r in ohms)


def pilot_state(ohm: float | None) -> str:
    """The plant state (A..D) whose EV-side resistance is nearest to ``ohm`` (by ratio)."""
    if ohm is None:
        return "A"
    candidates = {state: r for state, r in EV_STATE_OHM.items() if r}  # B, C, D
    return min(candidates, key=lambda state: abs(math.log(ohm / candidates[state])))


class SimBench:
    """The rig's relays (on ``pin_factory``) and ``load`` wired to ``plant``. ``before_current_change``
    runs before the plant's current changes (the simulated meter integrates the old current up to now)."""

    def __init__(
        self,
        ev: EvEmulatorConfig,
        pin_factory: Any,
        plant: Plant,
        load: ScpiLoadSim | None = None,
        *,
        phase: int = 0,
        before_current_change: Callable[[], None] | None = None,
    ) -> None:
        if not 0 <= phase < plant.phases:
            raise ValueError(f"sim bench: phase must be 0..{plant.phases - 1}, got {phase}")
        self.ev = ev
        self.pin_factory = pin_factory
        self.plant = plant
        self.load = load
        self.phase = phase
        self.before_current_change = before_current_change

    @classmethod
    def attach(cls, charger: Any, ev: EvEmulatorConfig, pin_factory: Any, load: ScpiLoadSim | None) -> SimBench:
        """Wire the rig to a started simulated board (``charger``: a :class:`SimulatedCharger`, e.g. the
        bench run's ``chargers[1]``): the board's wiring loop updates the bench from then on."""
        hal = charger.hal
        if hal is None or hal.sim is None or hal.sim.wiring is None:
            raise ValueError("sim bench: the board is not a simulated GPIO board (no wiring to attach to)")
        sync = getattr(hal.sim.meter, "sync", None)  # SimWorld.meter: any meter simulator
        bench = cls(ev, pin_factory, hal.sim.plant, load, before_current_change=sync)
        bench.update()
        hal.sim.wiring.add(bench)
        return bench

    # ------------------------------------------------------------------ reading the rig
    def relay_closed(self, relay: str) -> bool:
        """Whether the relay's coil is energised (an undriven pin: not)."""
        number: int | None = getattr(self.ev, f"{relay}_pin")
        if number is None:
            return False
        pin = self.pin_factory.pin(number)
        return pin.function == "output" and bool(pin.state) == self.ev.relay_active_high

    def load_current_a(self) -> float:
        if self.load is None or not self.load.input_on:
            return 0.0
        return float(self.load.current_setpoint_a)

    # ------------------------------------------------------------------ the plant
    def update(self, now: float | None = None) -> None:
        plant = self.plant
        if self.relay_closed("pilot_short"):
            plant.ev_state = "E"
        else:
            plant.ev_state = pilot_state(parallel([r for k, r in PILOT_RELAY_OHM.items() if self.relay_closed(k)]))
        plant.ev_diode_ok = not self.relay_closed("diode_bypass")
        plant.pp_ohm = parallel([r for k, r in PP_RELAY_OHM.items() if self.relay_closed(k)])
        closed = plant.contacts_closed
        amps = self.load_current_a() if closed else 0.0
        if plant.ev_current_a[self.phase] != amps:
            if self.before_current_change is not None:
                self.before_current_change()
            plant.ev_current_a[self.phase] = amps
        if self.load is not None:
            self.load.voltage_v = plant.grid_voltage_v[self.phase] if closed else 0.0
