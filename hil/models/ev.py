"""An AC EV (basic charging, PWM only) that plays the vehicle on a simulated board's plant.

The model turns the plant's EV-side knobs (pilot state, diode, PP resistance, current per phase) from
what it reads on the plant (the pilot the EVSE drives, whether the main contacts are closed, the
grid voltage), as an onboard charger does:

* plugged in, it shows state B (IEC 61851-1 R2) and the cable's PP coding;
* once a PWM offer of at least 6 A has been present for ``ready_delay_s`` while in B and the
  battery is below ``target_soc``, it switches R3 in: state C;
* in C with the contacts closed it draws, on each of its phases, the offer it *perceives* capped by
  its onboard charger (``max_current_a``) and its battery (taper);
* when the offer has been gone (X1, F, E, or under 6 A) for ``response_s``, or the battery reaches
  ``target_soc``, it stops drawing and goes back to B.

Response model (a modelling choice, kept simple on purpose): the EV perceives the pilot offer as it
was ``response_s`` ago, a pure delay. A new offer is therefore followed as a step change exactly
``response_s`` after it appeared, whatever happened in between, and never before; IEC 61851-1 allows
an EV up to 5 s to follow a lowered offer. The runner calls :meth:`AcEv.step` every 0.1 s and right
after any action, so an offer change is seen at most one step late.

Behaviours: ``follow`` draws the perceived offer; ``greedy`` ignores reductions (it keeps drawing the
highest offer it saw while in C this plug-in, which provokes over-current); ``lower-only`` follows
reductions but never raises again during the plug-in. Every behaviour stops when the offer
disappears.

Energy: the power drawn (grid voltage x current, per phase) is integrated over each step and stored
in the battery with a charging efficiency of :data:`CHARGE_EFFICIENCY`; the SoC follows. A one-phase
EV (or any EV on a one-phase plant) draws on L1 only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from firmware.iec61851.pilot import MIN_OFFER_A, current_for_duty
from hal.sim.plant import Plant
from hal.types import PILOT_DUTY_MAX_PERMILLE, PilotMode

Behaviour = Literal["follow", "greedy", "lower-only"]
BEHAVIOURS: tuple[Behaviour, ...] = ("follow", "greedy", "lower-only")

#: Nominal cable coding resistor Rc between PP and PE for each cable rating, IEC 61851-1 via
#: standards-facts.md 1.8 (Phoenix Contact manual Table 5-1).
PP_OHM_FOR_CABLE_A: dict[int, float] = {13: 1500.0, 20: 680.0, 32: 220.0, 63: 100.0}
#: A PP resistance below every valid band (< 75 ohm is "error", standards-facts.md 1.8).
PP_INVALID_OHM = 40.0
#: Share of the grid energy that ends up in the battery (onboard charger + battery losses). A model
#: choice: typical AC charging losses are 8-15 %.
CHARGE_EFFICIENCY = 0.92
#: The battery limit at 100 % SoC as a share of ``max_current_a`` (the taper ends there).
TAPER_END_SHARE = 0.1
#: How often the EV reports its SoC when nothing else changed.
TRACE_PERIOD_S = 60.0
#: Comparisons of virtual times: steps of 0.1 s accumulate float error.
_EPS = 1e-9


class AcEv:
    """A vehicle on a simulated plant; see the module docstring for the model."""

    def __init__(
        self,
        *,
        ev_id: str,
        battery_kwh: float,
        soc: float,
        target_soc: float,
        max_current_a: float,
        phases: int,
        behaviour: Behaviour = "follow",
        cable_a: int = 32,
        response_s: float = 1.0,
        taper_from_soc: float = 0.8,
        ready_delay_s: float = 1.0,
    ) -> None:
        if battery_kwh <= 0:
            raise ValueError(f"{ev_id}: battery_kwh must be positive, got {battery_kwh}")
        if not 0.0 <= soc <= 1.0 or not 0.0 <= target_soc <= 1.0:
            raise ValueError(f"{ev_id}: soc and target_soc must be within 0..1, got {soc} and {target_soc}")
        if max_current_a <= 0:
            raise ValueError(f"{ev_id}: max_current_a must be positive, got {max_current_a}")
        if phases not in (1, 2, 3):
            raise ValueError(f"{ev_id}: phases must be 1, 2 or 3, got {phases}")
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"{ev_id}: behaviour must be one of {', '.join(BEHAVIOURS)}, got {behaviour!r}")
        if cable_a not in PP_OHM_FOR_CABLE_A:
            raise ValueError(f"{ev_id}: cable_a must be one of 13, 20, 32, 63, got {cable_a}")
        if response_s < 0 or ready_delay_s < 0:
            raise ValueError(f"{ev_id}: response_s and ready_delay_s must not be negative")
        if not 0.0 <= taper_from_soc <= 1.0:
            raise ValueError(f"{ev_id}: taper_from_soc must be within 0..1, got {taper_from_soc}")
        self.ev_id = ev_id
        self.battery_kwh = battery_kwh
        self.target_soc = target_soc
        self.max_current_a = max_current_a
        self.phases = phases
        self.behaviour: Behaviour = behaviour
        self.cable_a = cable_a
        self.response_s = response_s
        self.taper_from_soc = taper_from_soc
        self.ready_delay_s = ready_delay_s

        self._soc = soc
        self._energy_wh = 0.0
        self._plant: Plant | None = None
        self._before_current_change: Callable[[], None] | None = None
        self._plugged = False
        self._state = "A"  # what the EV's own resistors show: A, B or C
        self._drawing_a = 0.0
        self._last_t: float | None = None
        # Offer changes as the EV saw them: (time, amps or None); the EV acts on the one response_s old.
        self._offers: list[tuple[float, float | None]] = []
        self._offer_since: float | None = None  # a valid offer is present (continuously) since
        self._no_offer_since: float | None = None  # no valid offer (continuously) since
        self._highest_offer: float | None = None  # perceived while in C this plug-in (greedy)
        self._lowest_offer: float | None = None  # perceived while in C this plug-in (lower-only)
        self._last_aim_a: float | None = None  # what it aimed at when it last had an offer (stuck in C)
        # Fault knobs.
        self._diode_shorted = False
        self._pilot_shorted = False
        self._stuck_in_c = False
        self._overcurrent_a: float | None = None
        self._pp_open = False
        self._pp_invalid = False
        self._forced: str | None = None
        # Trace bookkeeping.
        self._dirty = True
        self._last_trace_t: float | None = None

    # ------------------------------------------------------------------ wiring
    def attach(self, plant: Plant, *, before_current_change: Callable[[], None] | None = None) -> None:
        """Put the EV on ``plant``. ``before_current_change`` is called before the EV changes the plant's
        currents (e.g. ``Atm90e32Sim.sync``: the meter integrates the old current up to now)."""
        self._plant = plant
        self._before_current_change = before_current_change

    @property
    def plant(self) -> Plant:
        if self._plant is None:
            raise RuntimeError(f"{self.ev_id}: attach(plant) first")
        return self._plant

    # ------------------------------------------------------------------ state
    @property
    def plugged(self) -> bool:
        return self._plugged

    @property
    def soc(self) -> float:
        return self._soc

    @property
    def energy_wh(self) -> float:
        """Energy stored into the battery since the model was created (all plug-ins)."""
        return self._energy_wh

    @property
    def drawing_a(self) -> float:
        """The current drawn on each of the EV's phases now."""
        return self._drawing_a

    @property
    def state(self) -> str:
        """The pilot state the EV shows: A, B, C, or E while its pilot is shorted."""
        return "E" if self._plugged and self._pilot_shorted else self._state

    # ------------------------------------------------------------------ actions
    def plug_in(self, now: float) -> None:
        if self._plugged:
            raise RuntimeError(f"{self.ev_id} is already plugged in")
        plant = self.plant
        self._plugged = True
        self._state = "B"
        self._last_t = now
        self._offers = [(now, self._seen_offer())]
        self._offer_since = now if self._offers[0][1] is not None else None
        self._no_offer_since = None if self._offers[0][1] is not None else now
        self._highest_offer = self._lowest_offer = self._last_aim_a = None
        plant.ev_diode_ok = not self._diode_shorted
        self._apply_pp()
        self._apply_state()
        self._dirty = True

    def unplug(self, now: float) -> None:
        if not self._plugged:
            raise RuntimeError(f"{self.ev_id} is not plugged in")
        self.step(now)  # the energy up to now belongs to this plug-in
        plant = self.plant
        self._set_current(0.0)
        self._plugged = False
        self._state = "A"
        self._forced = None
        plant.ev_state = "A"
        plant.ev_diode_ok = True  # the EV's diode left with the EV
        plant.pp_ohm = None
        self._dirty = True

    # ------------------------------------------------------------------ fault knobs
    def diode_short(self, active: bool = True) -> None:
        """The EV's pilot diode shorted: the negative plateau is loaded (IEC 61851-1 diode check)."""
        self._diode_shorted = active
        if self._plugged:
            self.plant.ev_diode_ok = not active
        self._dirty = True

    def pilot_short(self, active: bool = True) -> None:
        """The pilot shorted to PE inside the EV: state E. The EV then sees no offer either."""
        self._pilot_shorted = active
        self._apply_state()
        self._dirty = True

    def stuck_in_c(self, active: bool) -> None:
        """R3 stuck switched in: the EV shows C at once (if plugged) and keeps drawing its last current
        while the contacts are closed, even without an offer and past its target SoC."""
        self._stuck_in_c = active
        if active and self._plugged:
            self._state = "C"
            self._apply_state()
        self._dirty = True

    def overcurrent(self, amps: float | None) -> None:
        """Draw ``amps`` on each phase whatever the offer and state while the contacts are closed;
        ``None`` ends it."""
        if amps is not None and amps < 0:
            raise ValueError(f"{self.ev_id}: overcurrent must not be negative, got {amps}")
        self._overcurrent_a = amps
        self._dirty = True

    def pp_open(self, active: bool = True) -> None:
        """The cable's PP line open while plugged (no resistor seen)."""
        self._pp_open = active
        self._apply_pp()
        self._dirty = True

    def pp_invalid(self, active: bool = True) -> None:
        """A PP resistance that codes no cable rating (:data:`PP_INVALID_OHM`)."""
        self._pp_invalid = active
        self._apply_pp()
        self._dirty = True

    def force_state(self, state: str | None) -> None:
        """Hold the EV's pilot at ``'B'`` or ``'C'`` (the driver stops / starts charging from the car)
        until released with ``None`` or unplugged. Held in C it still draws only with an offer and below
        its target SoC."""
        if state not in ("B", "C", None):
            raise ValueError(f"{self.ev_id}: an EV can force its pilot to B or C only, got {state!r}")
        self._forced = state
        if state is not None and self._plugged:
            self._state = state
            self._apply_state()
        self._dirty = True

    # ------------------------------------------------------------------ time
    def step(self, now: float) -> None:
        """Move the EV to ``now``: store the energy of the elapsed interval, read the pilot, update the
        pilot state and the current drawn."""
        if not self._plugged:
            self._last_t = now
            return
        plant = self.plant
        self._integrate(now)
        offer = self._seen_offer()
        if offer != self._offers[-1][1]:
            self._offers.append((now, offer))
            if offer is None:
                self._offer_since, self._no_offer_since = None, now
            elif self._offers[-2][1] is None:
                self._offer_since, self._no_offer_since = now, None
        perceived = self._perceived_offer(now)
        self._update_state(now)
        amps = 0.0
        if self._overcurrent_a is not None:
            amps = self._overcurrent_a if plant.contacts_closed else 0.0
        elif self._state == "C" and (self._stuck_in_c or self._soc < self.target_soc - _EPS):
            aim = self._aim(perceived)
            if plant.contacts_closed and aim is not None:
                amps = min(aim, self.max_current_a, self._battery_limit_a())
        self._set_current(amps)

    def next_due(self, now: float) -> float | None:
        """The next time at which :meth:`step` would change something with the pilot unchanged: an
        offer becoming perceived, the ready delay in B, the response to a withdrawn offer in C, the
        periodic ``soc`` trace. None while unplugged (only plugging in changes anything then). A
        runner may step less often in between; the battery integrates exactly over any interval."""
        if not self._plugged:
            return None
        times = [t + self.response_s for t, _ in self._offers[1:]]
        if self._offers and self._offers[0][0] + self.response_s > now:
            times.append(self._offers[0][0] + self.response_s)
        if self._state == "B" and self._offer_since is not None:
            times.append(self._offer_since + self.ready_delay_s)
        if self._state == "C" and self._no_offer_since is not None:
            times.append(self._no_offer_since + self.response_s)
        if self._last_trace_t is not None:
            times.append(self._last_trace_t + TRACE_PERIOD_S)
        future = [t for t in times if t > now + _EPS]
        return min(future) if future else None

    def trace_events(self, now: float) -> list[dict[str, object]]:
        """The ``soc`` event to write now (the runner adds ``t``): after a change of plug, pilot state,
        fault knob or drawing on/off, and every :data:`TRACE_PERIOD_S` while plugged."""
        due = self._last_trace_t is None or (self._plugged and now - self._last_trace_t + _EPS >= TRACE_PERIOD_S)
        if not (self._dirty or due):
            return []
        self._dirty = False
        self._last_trace_t = now
        return [{"src": self.ev_id, "ev": "soc", "soc": round(self._soc, 4), "kwh": round(self.stored_kwh, 3)}]

    @property
    def stored_kwh(self) -> float:
        """Energy in the battery now."""
        return self._soc * self.battery_kwh

    # ------------------------------------------------------------------ internals
    def _seen_offer(self) -> float | None:
        """The current the pilot offers as the EV decodes it (Table A.8), None without a usable offer."""
        pilot = self.plant.pilot
        if self._pilot_shorted or pilot.mode is not PilotMode.PWM:
            return None
        amps = current_for_duty(round(pilot.duty * PILOT_DUTY_MAX_PERMILLE))
        return amps if amps >= MIN_OFFER_A else None

    def _perceived_offer(self, now: float) -> float | None:
        """The offer as it was ``response_s`` ago (the pure-delay response model)."""
        horizon = now - self.response_s + _EPS
        perceived: float | None = None
        keep_from = 0
        for index, (t, amps) in enumerate(self._offers):
            if t > horizon:
                break
            perceived, keep_from = amps, index
        del self._offers[:keep_from]  # older entries can no longer be perceived
        return perceived

    def _update_state(self, now: float) -> None:
        before = self._state
        full = self._soc >= self.target_soc - _EPS
        if self._forced is not None:
            self._state = self._forced
        elif self._stuck_in_c:
            self._state = "C"
        elif self._state == "B":
            ready = self._offer_since is not None and now - self._offer_since + _EPS >= self.ready_delay_s
            if ready and not full:
                self._state = "C"
        elif self._state == "C":
            gone = self._no_offer_since is not None and now - self._no_offer_since + _EPS >= self.response_s
            if full or gone:
                self._state = "B"
        if self._state != before:
            self._apply_state()
            self._dirty = True

    def _aim(self, perceived: float | None) -> float | None:
        """What the EV wants to draw in C, before its own limits; None = nothing."""
        if perceived is None:
            if not self._stuck_in_c:
                return None
            return self._last_aim_a if self._last_aim_a is not None else self.max_current_a
        self._highest_offer = max(perceived, self._highest_offer or 0.0)
        self._lowest_offer = perceived if self._lowest_offer is None else min(perceived, self._lowest_offer)
        if self.behaviour == "greedy":
            aim = self._highest_offer
        elif self.behaviour == "lower-only":
            aim = self._lowest_offer
        else:
            aim = perceived
        self._last_aim_a = aim
        return aim

    def _battery_limit_a(self) -> float:
        """Per-phase current the battery accepts: full current up to taper_from_soc, then falling linearly
        to TAPER_END_SHARE of it at 100 %; nothing once full."""
        if self._soc >= 1.0:
            return 0.0
        if self._soc <= self.taper_from_soc:
            return self.max_current_a
        share = (self._soc - self.taper_from_soc) / (1.0 - self.taper_from_soc)
        return self.max_current_a * (1.0 - (1.0 - TAPER_END_SHARE) * share)

    def _active_phases(self) -> int:
        return min(self.phases, self.plant.live_phases)

    def _integrate(self, now: float) -> None:
        last, self._last_t = self._last_t, now
        if last is None or now <= last or self._drawing_a == 0.0:
            return
        plant = self.plant
        volts = sum(plant.grid_voltage_v[i] for i in range(self._active_phases()))
        wh = volts * self._drawing_a * (now - last) / 3600.0 * CHARGE_EFFICIENCY
        capacity_wh = self.battery_kwh * 1000.0
        wh = min(wh, (1.0 - self._soc) * capacity_wh)  # a full battery takes no more
        self._energy_wh += wh
        self._soc = min(1.0, self._soc + wh / capacity_wh)

    def _set_current(self, amps: float) -> None:
        # A ``soc`` record whenever the direction changes (charging, idle, discharging: a V2G EV's lowest
        # SoC is where its discharge stops, which the floor checks read).
        if (amps > 0.0) != (self._drawing_a > 0.0) or (amps < 0.0) != (self._drawing_a < 0.0):
            self._dirty = True
        self._drawing_a = amps
        plant = self.plant
        active = self._active_phases()
        target = [amps if i < active else 0.0 for i in range(len(plant.ev_current_a))]
        if target != plant.ev_current_a:
            if self._before_current_change is not None:
                self._before_current_change()
            plant.ev_current_a = target

    def _apply_state(self) -> None:
        if self._plugged:
            self.plant.ev_state = self.state

    def _apply_pp(self) -> None:
        if not self._plugged:
            return
        if self._pp_open:
            self.plant.pp_ohm = None
        elif self._pp_invalid:
            self.plant.pp_ohm = PP_INVALID_OHM
        else:
            self.plant.pp_ohm = PP_OHM_FOR_CABLE_A[self.cable_a]
