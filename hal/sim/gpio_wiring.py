"""The wires between gpiozero's mock pins and the simulated plant.

A simulated board hands its GPIO drivers a ``MockFactory(pin_class=MockPWMPin)``
(:func:`hal.buses.gpio_pin_factory`). The drivers set output pins; these wiring objects read those
pins the way the real circuit would (the pilot op-amp stage, the contactor coil, a lock motor, a test
winding) and drive the input pins with ``drive_high()``/``drive_low()`` the way the real contacts and
sensors would (mirror contact, RCD trip output, lock feedback switch, IMD relays), consulting
:class:`hal.sim.plant.Plant` for the physical world.

Each part has ``update(now)``, and :class:`GpioWiring` calls every part with the injected clock's
time: call :meth:`GpioWiring.update` after each command in a test, or start :meth:`GpioWiring.run`
as a task next to the drivers (on a :class:`hal.clock.VirtualClock` that is deterministic). Given
the board's :class:`hal.changes.ChangeSignal` (notified by the plant's knobs and by the pins of
:mod:`hal.sim.gpio_pins`), ``run`` updates when something changed or when a part's delay falls due
(``next_due``: a contactor closing, an RCD responding, a lock travelling, an IMD self-test) and
sleeps otherwise; without it, it polls every period and delays are quantised to that period.

An output pin that no driver holds (never claimed, or released) is read as *inactive*: the board's
pull resistors hold undriven outputs in their off state. Fault knobs that the plant does not have
(a jammed lock, a broken RCD test winding, an IMD that ignores its test input) live on the wiring
parts themselves.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Protocol

from hal.changes import ChangeSignal
from hal.clock import Clock
from hal.sim.plant import Plant
from hal.types import PILOT_DUTY_MAX_PERMILLE, PilotMode

#: An RDC-DD trips on 6 mA smooth DC (IEC 62955; RCM14 modules, anchors.md §3-§4).
RCD_TRIP_MA = 6.0
#: IEC 61851-23 insulation limits as EVerest's cable check applies them (EvseManager.cpp: warning
#: below 500 ohm/V, fault below 100 ohm/V of the output voltage rating).
IMD_ALARM_OHM_PER_V = 100.0
IMD_PREALARM_OHM_PER_V = 500.0
#: Voltage the limits are scaled with; 500 V gives 50 kohm alarm / 250 kohm pre-alarm.
IMD_NOMINAL_V = 500.0
#: isoCHA425 manual §3.2.6: the test input must be held > 1.5 s before the self-test starts.
IMD_TEST_PRESS_S = 1.5


#: Slack on delay comparisons: a part woken exactly at ``since + delay`` must see the delay as over
#: even when floating-point subtraction comes out one ulp short.
_EPS = 1e-9


class WiringPart(Protocol):
    """``update(now)`` follows the pins and the plant. Parts may also define ``next_due(now)``: when
    ``update`` would change something without any input changing (None: never); parts without it
    are polled."""

    def update(self, now: float) -> None: ...


def _elapsed(now: float, since: float, span: float) -> bool:
    return now - since >= span - _EPS


def _future(now: float, *times: float | None) -> float | None:
    later = [t for t in times if t is not None and t > now + _EPS]
    return min(later) if later else None


# -------------------------------------------------------------------------------------- pin helpers
_PIN_CACHE: weakref.WeakKeyDictionary[Any, dict[int, Any]] = weakref.WeakKeyDictionary()


def _pin(factory: Any, number: int) -> Any:
    # gpiozero's own lookup walks the board's pin table by name on every call, which dominated the
    # simulation's run time; the cached pin is used while it is still the factory's pin for that
    # number, so the wiring keeps working across factory.reset() and new drivers.
    cache = _PIN_CACHE.setdefault(factory, {})
    pin = cache.get(number)
    if pin is None or factory.pins.get(pin.info) is not pin:
        pin = cache[number] = factory.pin(number)
    return pin


def _output_active(factory: Any, number: int, active_high: bool) -> bool:
    pin = _pin(factory, number)
    if pin.function != "output":
        return False
    return bool(pin.state) == active_high


def _drive_input(factory: Any, number: int, level: bool) -> None:
    pin = _pin(factory, number)
    if pin.function != "input":
        raise RuntimeError(f"sim wiring: GPIO{number} is an input on the board but a driver made it an output")
    if level:
        pin.drive_high()
    else:
        pin.drive_low()


# ------------------------------------------------------------------------------------------ pilot
class PilotWiring:
    """The ±12 V pilot stage: pin level -> ``plant.pilot`` (X1 high, F low, PWM in between, E while
    the optional clamp output is active)."""

    def __init__(
        self, plant: Plant, factory: Any, *, pwm_pin: int, e_pin: int | None = None, e_active_high: bool = True
    ) -> None:
        self._plant, self._factory = plant, factory
        self._pwm_pin, self._e_pin, self._e_active_high = pwm_pin, e_pin, e_active_high
        self.frequency_hz: float | None = None

    @property
    def duty_permille(self) -> int:
        return round(self._plant.pilot.duty * PILOT_DUTY_MAX_PERMILLE)

    def update(self, now: float) -> None:
        drive = self._plant.pilot
        pin = _pin(self._factory, self._pwm_pin)
        level = float(pin.state) if pin.function == "output" else 0.0
        self.frequency_hz = pin.frequency if pin.function == "output" else None
        before = (drive.mode, drive.duty)
        if self._e_pin is not None and _output_active(self._factory, self._e_pin, self._e_active_high):
            drive.mode, drive.duty = PilotMode.E, 0.0
        elif level <= 0.0:
            drive.mode, drive.duty = PilotMode.F, 0.0
        elif level >= 1.0:
            drive.mode, drive.duty = PilotMode.X1, 1.0
        else:
            drive.mode, drive.duty = PilotMode.PWM, level
        if (drive.mode, drive.duty) != before:
            self._plant.changes.notify()  # the pilot voltage the sense circuit reads changed

    def next_due(self, now: float) -> float | None:
        return None


# -------------------------------------------------------------------------------------- contactor
class ContactorWiring:
    """Coil output -> main contacts after ``close_delay_s`` -> mirror input.

    ``plant.contactor_welded`` keeps the contacts closed and ``plant.contactor_stuck_open`` keeps
    them open whatever the coil does. ``mirror_active_high`` is the mirror level with the main
    contacts closed, as for :class:`hal.drivers.gpio_io.GpioContactor`.
    """

    def __init__(
        self,
        plant: Plant,
        factory: Any,
        *,
        coil_pin: int,
        coil_active_high: bool = True,
        mirror_pin: int | None = None,
        mirror_active_high: bool = True,
        close_delay_s: float = 0.03,
    ) -> None:
        self._plant, self._factory = plant, factory
        self._coil_pin, self._coil_active_high = coil_pin, coil_active_high
        self._mirror_pin, self._mirror_active_high = mirror_pin, mirror_active_high
        self.close_delay_s = close_delay_s
        self._coil = False
        self._coil_since = -math.inf
        self.contacts_closed = False

    def update(self, now: float) -> None:
        coil = _output_active(self._factory, self._coil_pin, self._coil_active_high)
        if coil != self._coil:
            self._coil, self._coil_since = coil, now
        if self._plant.contactor_welded:
            self.contacts_closed = True
        elif self._plant.contactor_stuck_open:
            self.contacts_closed = False
        elif _elapsed(now, self._coil_since, self.close_delay_s):
            self.contacts_closed = self._coil
        self._plant.contacts_closed = self.contacts_closed
        if self._mirror_pin is not None:
            level = self.contacts_closed == self._mirror_active_high
            _drive_input(self._factory, self._mirror_pin, level)

    def next_due(self, now: float) -> float | None:
        if self.contacts_closed == self._coil:
            return None
        return _future(now, self._coil_since + self.close_delay_s)


# -------------------------------------------------------------------------------------------- RCD
class PhaseSwitchWiring:
    """The 1/3-phase contactor C2: coil output -> L2/L3 contacts after ``close_delay_s`` -> mirror input.

    Sets ``plant.phase_contacts_closed`` (so ``plant.live_phases``); ``plant.phase_switch_stuck`` keeps
    the contacts where they are, whatever the coil does.
    """

    def __init__(
        self,
        plant: Plant,
        factory: Any,
        *,
        coil_pin: int,
        mirror_pin: int | None = None,
        mirror_active_high: bool = True,
        close_delay_s: float = 0.03,
    ) -> None:
        self._plant, self._factory = plant, factory
        self._coil_pin = coil_pin
        self._mirror_pin, self._mirror_active_high = mirror_pin, mirror_active_high
        self.close_delay_s = close_delay_s
        self._coil = False
        self._coil_since = -math.inf
        plant.phase_contacts_closed = False

    def update(self, now: float) -> None:
        coil = _output_active(self._factory, self._coil_pin, True)
        if coil != self._coil:
            self._coil, self._coil_since = coil, now
        closed = bool(self._plant.phase_contacts_closed)
        if not self._plant.phase_switch_stuck and _elapsed(now, self._coil_since, self.close_delay_s):
            closed = self._coil
        if closed != self._plant.phase_contacts_closed:
            self._plant.phase_contacts_closed = closed
        if self._mirror_pin is not None:
            _drive_input(self._factory, self._mirror_pin, closed == self._mirror_active_high)

    def next_due(self, now: float) -> float | None:
        if self._plant.phase_switch_stuck or self._plant.phase_contacts_closed == self._coil:
            return None
        return _future(now, self._coil_since + self.close_delay_s)


class RcdWiring:
    """RCD / RDC-DD module: trips when ``plant.residual_current_ma`` >= ``trip_ma`` or while its test
    input is asserted, after ``response_s``; the trip output falls back ``release_s`` after the cause
    is gone (``math.inf`` models a latching module that never clears on its own).

    Fault knob: ``test_winding_broken`` (the test input does nothing).
    """

    def __init__(
        self,
        plant: Plant,
        factory: Any,
        *,
        trip_pin: int,
        trip_active_high: bool = True,
        test_pin: int | None = None,
        test_active_high: bool = True,
        trip_ma: float = RCD_TRIP_MA,
        response_s: float = 0.05,
        release_s: float = 0.0,
    ) -> None:
        self._plant, self._factory = plant, factory
        self._trip_pin, self._trip_active_high = trip_pin, trip_active_high
        self._test_pin, self._test_active_high = test_pin, test_active_high
        self.trip_ma = trip_ma
        self.response_s = response_s
        self.release_s = release_s
        self.test_winding_broken = False
        self.tripped = False
        self._cause_since: float | None = None
        self._clear_since: float | None = None

    def _test_asserted(self) -> bool:
        if self._test_pin is None:
            return False
        return _output_active(self._factory, self._test_pin, self._test_active_high)

    def update(self, now: float) -> None:
        cause = self._plant.residual_current_ma >= self.trip_ma or (
            self._test_asserted() and not self.test_winding_broken
        )
        if cause:
            self._clear_since = None
            if self._cause_since is None:
                self._cause_since = now
            if _elapsed(now, self._cause_since, self.response_s):
                self.tripped = True
        else:
            self._cause_since = None
            if self.tripped:
                if self._clear_since is None:
                    self._clear_since = now
                if _elapsed(now, self._clear_since, self.release_s):
                    self.tripped = False
        _drive_input(self._factory, self._trip_pin, self.tripped == self._trip_active_high)

    def next_due(self, now: float) -> float | None:
        if not self.tripped and self._cause_since is not None:
            return _future(now, self._cause_since + self.response_s)
        if self.tripped and self._clear_since is not None and math.isfinite(self.release_s):
            return _future(now, self._clear_since + self.release_s)
        return None


# ------------------------------------------------------------------------------------------- lock
class LockWiring:
    """Lock actuator: a motor (lock and unlock outputs) reaches its end position after being driven
    for ``travel_s``; a solenoid (lock output only) follows its output after ``travel_s``. The
    feedback switch reports the position (``feedback_active_high`` = level when locked).

    Fault knob: ``jammed`` (the actuator does not move).
    """

    def __init__(
        self,
        factory: Any,
        *,
        lock_pin: int,
        unlock_pin: int | None = None,
        active_high: bool = True,
        feedback_pin: int | None = None,
        feedback_active_high: bool = True,
        travel_s: float = 0.1,
    ) -> None:
        self._factory = factory
        self._lock_pin, self._unlock_pin, self._active_high = lock_pin, unlock_pin, active_high
        self._feedback_pin, self._feedback_active_high = feedback_pin, feedback_active_high
        self.travel_s = travel_s
        self.jammed = False
        self.locked = False
        self._target: bool | None = None
        self._since = 0.0

    def update(self, now: float) -> None:
        lock_on = _output_active(self._factory, self._lock_pin, self._active_high)
        target: bool | None
        if self._unlock_pin is None:
            target = lock_on
        else:
            unlock_on = _output_active(self._factory, self._unlock_pin, self._active_high)
            target = True if lock_on and not unlock_on else False if unlock_on and not lock_on else None
        if target != self._target:
            self._target, self._since = target, now
        if target is not None and not self.jammed and _elapsed(now, self._since, self.travel_s):
            self.locked = target
        if self._feedback_pin is not None:
            _drive_input(self._factory, self._feedback_pin, self.locked == self._feedback_active_high)

    def next_due(self, now: float) -> float | None:
        if self._target is None or self.jammed or self.locked == self._target:
            return None
        return _future(now, self._since + self.travel_s)


# -------------------------------------------------------------------------------------------- IMD
class ImdWiring:
    """Relay-output IMD: alarm below ``alarm_ohm_per_v`` x ``nominal_v``, pre-alarm below
    ``prealarm_ohm_per_v`` x ``nominal_v`` (from ``plant.insulation_ohm``). Holding the test input
    for ``press_s`` starts a self-test that, ``test_response_s`` later, shows alarm and pre-alarm for
    ``test_hold_s``.

    Fault knob: ``test_broken`` (the self-test never moves the relays).
    """

    def __init__(
        self,
        plant: Plant,
        factory: Any,
        *,
        alarm_pin: int,
        alarm_active_high: bool = True,
        prealarm_pin: int | None = None,
        prealarm_active_high: bool = True,
        test_pin: int | None = None,
        test_active_high: bool = True,
        nominal_v: float = IMD_NOMINAL_V,
        alarm_ohm_per_v: float = IMD_ALARM_OHM_PER_V,
        prealarm_ohm_per_v: float = IMD_PREALARM_OHM_PER_V,
        press_s: float = IMD_TEST_PRESS_S,
        test_response_s: float = 0.5,
        test_hold_s: float = 2.0,
    ) -> None:
        self._plant, self._factory = plant, factory
        self._alarm_pin, self._alarm_active_high = alarm_pin, alarm_active_high
        self._prealarm_pin, self._prealarm_active_high = prealarm_pin, prealarm_active_high
        self._test_pin, self._test_active_high = test_pin, test_active_high
        self.alarm_ohm = alarm_ohm_per_v * nominal_v
        self.prealarm_ohm = prealarm_ohm_per_v * nominal_v
        self.press_s, self.test_response_s, self.test_hold_s = press_s, test_response_s, test_hold_s
        self.test_broken = False
        self.tests_started = 0
        self._pressed_since: float | None = None
        self._test_started: float | None = None

    def _testing(self, now: float) -> bool:
        pressed = self._test_pin is not None and _output_active(self._factory, self._test_pin, self._test_active_high)
        if not pressed:
            self._pressed_since = None
        elif self._pressed_since is None:
            self._pressed_since = now
        running = self._test_started is not None and now < (
            self._test_started + self.test_response_s + self.test_hold_s - _EPS
        )
        if (
            pressed
            and not running
            and not self.test_broken
            and self._pressed_since is not None
            and _elapsed(now, self._pressed_since, self.press_s)
        ):
            self._test_started, running = now, True
            self._pressed_since = math.inf  # one test per press
            self.tests_started += 1
        if not running or self._test_started is None:
            return False
        return now >= self._test_started + self.test_response_s - _EPS

    def update(self, now: float) -> None:
        testing = self._testing(now)
        alarm = testing or self._plant.insulation_ohm < self.alarm_ohm
        prealarm = testing or self._plant.insulation_ohm < self.prealarm_ohm
        _drive_input(self._factory, self._alarm_pin, alarm == self._alarm_active_high)
        if self._prealarm_pin is not None:
            _drive_input(self._factory, self._prealarm_pin, prealarm == self._prealarm_active_high)

    def next_due(self, now: float) -> float | None:
        press = None
        if self._pressed_since is not None and math.isfinite(self._pressed_since) and not self.test_broken:
            press = self._pressed_since + self.press_s
        test = self._test_started
        if test is None:
            return _future(now, press)
        return _future(now, press, test + self.test_response_s, test + self.test_response_s + self.test_hold_s)


# ------------------------------------------------------------------------------------------ board
class GpioWiring:
    """All wiring parts of one simulated board, updated together on one clock."""

    def __init__(self, plant: Plant, factory: Any, clock: Clock) -> None:
        self.plant, self.factory, self.clock = plant, factory, clock
        self.parts: list[WiringPart] = []

    def add(self, part: WiringPart) -> WiringPart:
        self.parts.append(part)
        self.plant.changes.notify()  # a running loop must take the new part into account
        return part

    def pilot(self, **kwargs: Any) -> PilotWiring:
        part = PilotWiring(self.plant, self.factory, **kwargs)
        self.parts.append(part)
        return part

    def contactor(self, **kwargs: Any) -> ContactorWiring:
        part = ContactorWiring(self.plant, self.factory, **kwargs)
        self.parts.append(part)
        return part

    def phase_switch(self, **kwargs: Any) -> PhaseSwitchWiring:
        part = PhaseSwitchWiring(self.plant, self.factory, **kwargs)
        self.parts.append(part)
        return part

    def rcd(self, **kwargs: Any) -> RcdWiring:
        part = RcdWiring(self.plant, self.factory, **kwargs)
        self.parts.append(part)
        return part

    def lock(self, **kwargs: Any) -> LockWiring:
        part = LockWiring(self.factory, **kwargs)
        self.parts.append(part)
        return part

    def imd(self, **kwargs: Any) -> ImdWiring:
        part = ImdWiring(self.plant, self.factory, **kwargs)
        self.parts.append(part)
        return part

    def update(self) -> None:
        now = self.clock.monotonic()
        for part in self.parts:
            part.update(now)

    def next_due(self, now: float, poll_s: float) -> float | None:
        """The earliest delay of any part falling due; a part that cannot tell is polled every ``poll_s``."""
        dues = []
        for part in self.parts:
            next_due = getattr(part, "next_due", None)
            due = now + poll_s if next_due is None else next_due(now)
            if due is not None:
                dues.append(due)
        return min(dues) if dues else None

    async def run(self, period_s: float = 0.005, changes: ChangeSignal | None = None) -> None:
        """Keep the parts updated until cancelled: every ``period_s`` of clock time, or, given the
        board's ``changes`` signal, whenever something changed or a delay falls due."""
        if not period_s > 0:
            raise ValueError("period_s must be > 0")
        while True:
            if changes is None:
                self.update()
                await self.clock.sleep(period_s)
                continue
            seen = changes.count
            self.update()
            if changes.count != seen:
                continue  # this update drove an input: run again until the wiring is still
            now = self.clock.monotonic()
            due = self.next_due(now, period_s)
            await changes.wait(seen, self.clock, None if due is None else max(due - now, 0.0) + _EPS)
