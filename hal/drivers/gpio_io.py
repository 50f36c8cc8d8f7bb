"""Plain GPIO peripherals: contactor with mirror contact, connector lock, RCD / RDC-DD, status LEDs.

Every driver builds gpiozero devices on the pin factory it is given (``lgpio`` on a Pi, gpiozero's
``MockFactory`` in simulation, see :func:`hal.buses.gpio_pin_factory`), so the same code drives real
pins and mock pins. Pins are BCM numbers. Active levels are explicit constructor arguments: the board
file says what level each line has when the function it carries is *active* (coil energised, contact
closed, RCD tripped), and the driver never guesses.

Inputs are read from the raw pin level and compared with the configured active level; the pull
resistor is configured separately (``pull="up" | "down" | None``). gpiozero ties "pull-up" to
"active low", which does not fit every board (an optocoupler may pull up and still be active-high),
so the active level is applied here instead.

Timing (lock pulses, self-tests) runs on the injected :class:`hal.clock.Clock`, so tests use
:class:`hal.clock.VirtualClock` and never sleep for real.

The module also holds the small helpers shared by the other GPIO drivers (:mod:`gpio_pilot`,
:mod:`gpio_imd`): claiming a pin with an error that names the device, and the "assert a test line,
watch an alarm input, release, watch it clear" sequence used by RCD and IMD self-tests.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal, TypeVar

from gpiozero import LED, DigitalInputDevice, DigitalOutputDevice
from gpiozero.exc import GPIOZeroError

from hal.clock import Clock
from hal.errors import DeviceNotFound, UnsupportedOperation
from hal.types import Indication

log = logging.getLogger(__name__)

Pull = Literal["up", "down"] | None
_T = TypeVar("_T")

# RCD self-test timing. Taken from Tinkerforge evse-v2-bricklet software/src/dc_fault.c (commit
# 14b1455d, the X804/X904 6 mA DC sensor): the test line is pulled for 250 ms ("between 30 ms and
# 1.2 s OK"), the 6 mA output must be active 740 ms after release, and the outputs return to idle
# "2030 to 2100 ms" later per the sensor datasheet (Tinkerforge allows 3000 ms in total). OpenEVSE's
# GFCI self-test also lasts about 1 s (60 pulses at 60 Hz, anchors.md §3). Hence 1 s to trip and
# 2.5 s to clear by default; both are constructor arguments.
RCD_TRIP_TIMEOUT_S = 1.0
RCD_CLEAR_TIMEOUT_S = 2.5

# Lock actuator drive times from the chargebyte Charge Control C guide (EVerest CbTarragonPlugLock,
# "Configuration For Known Plug Lock Devices"): KUESTER-02S/04S 600 ms, HELLA micro actuator 400 ms,
# SCAME 500 ms; allowed range 1-4000 ms.
LOCK_PULSE_S = 0.5
LOCK_PULSE_MAX_S = 4.0

#: How often timed sequences sample their inputs.
POLL_S = 0.01
# Deadlines are compared with this slack so that float rounding of "start + timeout" can never leave
# a loop sleeping for a time too small to move the clock.
_EPS_S = 1e-9


# ---------------------------------------------------------------------------------------- helpers
def claim(device: str, role: str, pin: int, build: Callable[[], _T]) -> _T:
    """Build one gpiozero device, turning gpiozero's errors into :class:`DeviceNotFound` that names
    the HAL device, the pin and its role."""
    try:
        return build()
    except (GPIOZeroError, OSError) as exc:
        raise DeviceNotFound(device, f"cannot claim GPIO{pin} for the {role}: {exc}") from exc


class OutputLine:
    """One digital output with an explicit active level; starts inactive."""

    def __init__(self, device: str, role: str, pin: int, *, active_high: bool, pin_factory: Any) -> None:
        self.pin_number = pin
        self._dev: DigitalOutputDevice = claim(
            device,
            role,
            pin,
            lambda: DigitalOutputDevice(pin, active_high=active_high, initial_value=False, pin_factory=pin_factory),
        )

    @property
    def active(self) -> bool:
        return bool(self._dev.value)

    def set(self, active: bool) -> None:
        if active:
            self._dev.on()
        else:
            self._dev.off()

    def close(self) -> None:
        self._dev.close()


class InputLine:
    """One digital input: pull resistor as configured, active level applied by us."""

    def __init__(self, device: str, role: str, pin: int, *, active_high: bool, pull: Pull, pin_factory: Any) -> None:
        if pull not in ("up", "down", None):
            raise ValueError(f"{device}: pull for the {role} must be 'up', 'down' or None, not {pull!r}")
        self.pin_number = pin
        self._active_high = active_high
        pull_up = {"up": True, "down": False, None: None}[pull]
        # gpiozero insists on an active_state only for floating inputs; we read the raw level anyway.
        self._dev: DigitalInputDevice = claim(
            device,
            role,
            pin,
            lambda: DigitalInputDevice(
                pin,
                pull_up=pull_up,
                active_state=True if pull_up is None else None,
                pin_factory=pin_factory,
            ),
        )

    @property
    def active(self) -> bool:
        return bool(self._dev.pin.state) == self._active_high

    def close(self) -> None:
        self._dev.close()


class Releasable:
    """Mixin: refuse use after ``release()`` with an error that names the device."""

    name: str
    _released: bool = False

    def _check_open(self) -> None:
        if self._released:
            raise DeviceNotFound(self.name, "driver released; its GPIO lines are no longer held")


def close_all(lines: Collection[OutputLine | InputLine | None]) -> None:
    for line in lines:
        if line is not None:
            line.close()


def build_lines(build: Callable[[list[OutputLine | InputLine]], None]) -> list[OutputLine | InputLine]:
    """Run ``build`` which appends claimed lines to a list; if it fails, free what was claimed so a
    half-built driver never keeps pins reserved."""
    lines: list[OutputLine | InputLine] = []
    try:
        build(lines)
    except BaseException:
        close_all(lines)
        raise
    return lines


async def pulse_and_watch(
    clock: Clock,
    test: OutputLine,
    alarm: Callable[[], bool],
    *,
    pulse_s: float | None,
    trip_timeout_s: float,
    clear_timeout_s: float,
    poll_s: float,
) -> tuple[bool, bool]:
    """Assert ``test``, wait for ``alarm()`` to go active, release ``test``, wait for ``alarm()`` to
    clear. Returns ``(tripped_in_time, cleared_in_time)``.

    ``pulse_s=None`` holds the test line until the alarm shows up (a test winding that must carry
    current until the device trips); a number releases it after that long even if the alarm has not
    come yet (devices that start their test on the pulse and answer afterwards). The test line is
    released on every exit path, cancellation included, and the whole call is bounded by
    ``trip_timeout_s + clear_timeout_s`` (plus one poll period).
    """
    start = clock.monotonic()
    trip_deadline = start + trip_timeout_s
    pulse_end = None if pulse_s is None else start + pulse_s
    tripped = False
    test.set(True)
    try:
        while True:
            now = clock.monotonic()
            if pulse_end is not None and test.active and now >= pulse_end - _EPS_S:
                test.set(False)
            if alarm():
                tripped = True
                break
            if now >= trip_deadline - _EPS_S:
                break
            wake = min(trip_deadline, now + poll_s)
            if pulse_end is not None and test.active:
                wake = min(wake, pulse_end)
            await clock.sleep(wake - now)
    finally:
        test.set(False)
    if not tripped:
        return False, not alarm()
    clear_deadline = clock.monotonic() + clear_timeout_s
    while alarm():
        now = clock.monotonic()
        if now >= clear_deadline - _EPS_S:
            return True, False
        await clock.sleep(min(clear_deadline, now + poll_s) - now)
    return True, True


def positive_seconds(name: str, what: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name}: {what} must be > 0 s, got {value!r}")
    return float(value)


# -------------------------------------------------------------------------------------- contactor
class GpioContactor(Releasable):
    """Contactor coil on one output, optional mirror contact on one input.

    ``mirror_active_high`` is the level the mirror input shows while the *main contacts are closed*.
    A mirror contact (IEC 60947-4-1 Annex F) is normally closed, so the usual wiring (NC contact to
    ground, pull-up) reads LOW with the main contacts open and HIGH with them closed: True.
    The driver reports what the mirror says; welding and failure-to-close are judged by the caller,
    which knows how long the contactor may take (hal.interfaces.Contactor).
    """

    def __init__(
        self,
        name: str,
        *,
        coil_pin: int,
        coil_active_high: bool = True,
        mirror_pin: int | None = None,
        mirror_active_high: bool = True,
        mirror_pull: Pull = None,
        pin_factory: Any,
    ) -> None:
        self.name = name
        self._mirror: InputLine | None = None

        def build(lines: list[OutputLine | InputLine]) -> None:
            self._coil = OutputLine(
                name, "contactor coil", coil_pin, active_high=coil_active_high, pin_factory=pin_factory
            )
            lines.append(self._coil)
            if mirror_pin is not None:
                self._mirror = InputLine(
                    name,
                    "contactor mirror contact",
                    mirror_pin,
                    active_high=mirror_active_high,
                    pull=mirror_pull,
                    pin_factory=pin_factory,
                )
                lines.append(self._mirror)

        self._lines = build_lines(build)

    @property
    def commanded_closed(self) -> bool:
        return self._coil.active if not self._released else False

    @property
    def has_feedback(self) -> bool:
        return self._mirror is not None

    async def close(self) -> None:
        self._check_open()
        self._coil.set(True)

    async def open(self) -> None:
        self._check_open()
        self._coil.set(False)

    async def feedback_closed(self) -> bool | None:
        self._check_open()
        if self._mirror is None:
            return None
        return self._mirror.active

    def release(self) -> None:
        """De-energise the coil and free the pins."""
        if self._released:
            return
        self._coil.set(False)
        close_all(self._lines)
        self._released = True


# ------------------------------------------------------------------------------------------- lock
class GpioConnectorLock(Releasable):
    """Connector lock actuator: a DC motor on two outputs (H-bridge IN1/IN2) or a solenoid on one.

    Motor (``unlock_pin`` given): ``lock()`` drives ``lock_pin`` for ``pulse_s``, ``unlock()`` drives
    ``unlock_pin`` for ``pulse_s``; the two are never active together (on a DRV8872-style bridge
    both inputs active is "brake", and on a discrete bridge it is a short). Solenoid (``unlock_pin``
    None): ``lock()`` energises ``lock_pin`` and keeps it on, ``unlock()`` de-energises it.

    ``feedback_active_high`` is the level the feedback input shows when the lock is *locked*.
    ``lock()``/``unlock()`` do not judge the feedback; :meth:`feedback_locked` reports it.
    """

    def __init__(
        self,
        name: str,
        *,
        lock_pin: int,
        unlock_pin: int | None = None,
        active_high: bool = True,
        pulse_s: float = LOCK_PULSE_S,
        feedback_pin: int | None = None,
        feedback_active_high: bool = True,
        feedback_pull: Pull = None,
        pin_factory: Any,
        clock: Clock,
    ) -> None:
        self.name = name
        if not 0 < pulse_s <= LOCK_PULSE_MAX_S:
            raise ValueError(f"{name}: pulse_s must be in (0, {LOCK_PULSE_MAX_S}] s, got {pulse_s!r}")
        self._pulse_s = float(pulse_s)
        self._clock = clock
        self._commanded_locked = False
        self._busy = asyncio.Lock()
        self._unlock_line: OutputLine | None = None
        self._feedback: InputLine | None = None

        def build(lines: list[OutputLine | InputLine]) -> None:
            self._lock_line = OutputLine(
                name, "lock actuator (lock)", lock_pin, active_high=active_high, pin_factory=pin_factory
            )
            lines.append(self._lock_line)
            if unlock_pin is not None:
                self._unlock_line = OutputLine(
                    name,
                    "lock actuator (unlock)",
                    unlock_pin,
                    active_high=active_high,
                    pin_factory=pin_factory,
                )
                lines.append(self._unlock_line)
            if feedback_pin is not None:
                self._feedback = InputLine(
                    name,
                    "lock feedback",
                    feedback_pin,
                    active_high=feedback_active_high,
                    pull=feedback_pull,
                    pin_factory=pin_factory,
                )
                lines.append(self._feedback)

        self._lines = build_lines(build)

    @property
    def is_motor(self) -> bool:
        return self._unlock_line is not None

    @property
    def commanded_locked(self) -> bool:
        return self._commanded_locked

    async def lock(self) -> None:
        await self._drive(locked=True)

    async def unlock(self) -> None:
        await self._drive(locked=False)

    async def _drive(self, *, locked: bool) -> None:
        self._check_open()
        async with self._busy:  # one movement at a time: a second command waits for the pulse to end
            self._commanded_locked = locked
            if self._unlock_line is None:
                self._lock_line.set(locked)
                return
            on, off = (self._lock_line, self._unlock_line) if locked else (self._unlock_line, self._lock_line)
            off.set(False)
            on.set(True)
            try:
                await self._clock.sleep(self._pulse_s)
            finally:  # also on cancellation: never leave the motor energised
                on.set(False)

    async def feedback_locked(self) -> bool | None:
        self._check_open()
        if self._feedback is None:
            return None
        return self._feedback.active

    def release(self) -> None:
        """Stop driving the actuator and free the pins (a solenoid lock drops out: unlocked)."""
        if self._released:
            return
        self._lock_line.set(False)
        if self._unlock_line is not None:
            self._unlock_line.set(False)
        close_all(self._lines)
        self._released = True


# -------------------------------------------------------------------------------------------- RCD
class GpioResidualCurrentMonitor(Releasable):
    """RCD / RDC-DD module (6 mA DC detection) with a trip output and a test input.

    ``trip_active_high`` is the level of the trip input when the module has tripped;
    ``test_active_high`` the level that starts its test. See :func:`pulse_and_watch` for the test
    sequence and the module constants for the default timing and its source. ``test_pulse_s=None``
    keeps the test line asserted until the trip shows (test-winding style); a number pulses it
    (Tinkerforge's X804 sensor wants 30 ms-1.2 s and answers after release).
    """

    def __init__(
        self,
        name: str,
        *,
        trip_pin: int,
        trip_active_high: bool = True,
        trip_pull: Pull = None,
        test_pin: int | None = None,
        test_active_high: bool = True,
        test_pulse_s: float | None = None,
        trip_timeout_s: float = RCD_TRIP_TIMEOUT_S,
        clear_timeout_s: float = RCD_CLEAR_TIMEOUT_S,
        poll_s: float = POLL_S,
        pin_factory: Any,
        clock: Clock,
    ) -> None:
        self.name = name
        self._trip_timeout_s = positive_seconds(name, "trip_timeout_s", trip_timeout_s)
        self._clear_timeout_s = positive_seconds(name, "clear_timeout_s", clear_timeout_s)
        self._poll_s = positive_seconds(name, "poll_s", poll_s)
        if test_pulse_s is not None:
            positive_seconds(name, "test_pulse_s", test_pulse_s)
            if test_pulse_s > trip_timeout_s:
                raise ValueError(f"{name}: test_pulse_s must not exceed trip_timeout_s")
        self._test_pulse_s = test_pulse_s
        self._clock = clock
        self._test: OutputLine | None = None
        self._busy = asyncio.Lock()

        def build(lines: list[OutputLine | InputLine]) -> None:
            self._trip = InputLine(
                name,
                "RCD trip input",
                trip_pin,
                active_high=trip_active_high,
                pull=trip_pull,
                pin_factory=pin_factory,
            )
            lines.append(self._trip)
            if test_pin is not None:
                self._test = OutputLine(
                    name,
                    "RCD test output",
                    test_pin,
                    active_high=test_active_high,
                    pin_factory=pin_factory,
                )
                lines.append(self._test)

        self._lines = build_lines(build)

    @property
    def has_test(self) -> bool:
        return self._test is not None

    async def tripped(self) -> bool:
        self._check_open()
        return self._trip.active

    async def self_test(self) -> bool:
        """True only if the module tripped within ``trip_timeout_s`` of the test starting and
        cleared within ``clear_timeout_s`` of the trip being seen. A module that is already tripped
        cannot prove anything: False without testing. Run it with the contactor open."""
        self._check_open()
        if self._test is None:
            raise UnsupportedOperation(self.name, "no RCD test output is wired on this board")
        async with self._busy:
            if self._trip.active:
                log.warning("%s: self-test refused: the RCD is already tripped", self.name)
                return False
            tripped, cleared = await pulse_and_watch(
                self._clock,
                self._test,
                lambda: self._trip.active,
                pulse_s=self._test_pulse_s,
                trip_timeout_s=self._trip_timeout_s,
                clear_timeout_s=self._clear_timeout_s,
                poll_s=self._poll_s,
            )
        if not tripped:
            log.warning("%s: self-test failed: no trip within %.3f s", self.name, self._trip_timeout_s)
        elif not cleared:
            log.warning("%s: self-test failed: trip did not clear within %.3f s", self.name, self._clear_timeout_s)
        return tripped and cleared

    def release(self) -> None:
        if self._released:
            return
        if self._test is not None:
            self._test.set(False)
        close_all(self._lines)
        self._released = True


# -------------------------------------------------------------------------------------- indicator
#: Default steady colours for an RGB LED (which channels are lit per indication).
RGB_COLOURS: dict[Indication, frozenset[str]] = {
    Indication.OFF: frozenset(),
    Indication.IDLE: frozenset({"green"}),
    Indication.CONNECTED: frozenset({"blue"}),
    Indication.CHARGING: frozenset({"green", "blue"}),  # cyan
    Indication.DISCHARGING: frozenset({"red", "blue"}),  # magenta
    Indication.FAULT: frozenset({"red"}),
}


class GpioIndicator(Releasable):
    """Status LEDs: any set of named on/off LEDs and, for every indication, which of them are lit.

    ``leds`` maps an LED name to its pin; ``patterns`` maps each :class:`Indication` to the names
    lit for it. Every indication except ``OFF`` (always all dark) must be given, so a board can never
    show nothing for ``FAULT`` by omission. Steady colours only: blinking would need a timer task,
    and the firmware's indication changes are slow enough that a steady state says it all.
    :meth:`rgb` builds the common case of one RGB LED with :data:`RGB_COLOURS`.
    """

    def __init__(
        self,
        name: str,
        *,
        leds: Mapping[str, int],
        patterns: Mapping[Indication, Collection[str]],
        active_high: bool = True,
        pin_factory: Any,
    ) -> None:
        self.name = name
        if not leds:
            raise ValueError(f"{name}: at least one LED is needed")
        self._patterns: dict[Indication, frozenset[str]] = {Indication.OFF: frozenset()}
        for indication in Indication:
            if indication is Indication.OFF:
                continue
            if indication not in patterns:
                raise ValueError(f"{name}: no LED pattern for {indication.name}")
            lit = frozenset(patterns[indication])
            unknown = lit - set(leds)
            if unknown:
                raise ValueError(f"{name}: pattern for {indication.name} names unknown LEDs {sorted(unknown)}")
            self._patterns[indication] = lit
        self._leds: dict[str, LED] = {}
        try:
            for led_name, pin in leds.items():
                self._leds[led_name] = claim(
                    name,
                    f"{led_name} LED",
                    pin,
                    functools.partial(LED, pin, active_high=active_high, initial_value=False, pin_factory=pin_factory),
                )
        except BaseException:
            for led in self._leds.values():
                led.close()
            raise
        self._showing = Indication.OFF

    @classmethod
    def rgb(
        cls,
        name: str,
        *,
        red_pin: int,
        green_pin: int,
        blue_pin: int,
        active_high: bool = True,
        pin_factory: Any,
    ) -> GpioIndicator:
        return cls(
            name,
            leds={"red": red_pin, "green": green_pin, "blue": blue_pin},
            patterns=RGB_COLOURS,
            active_high=active_high,
            pin_factory=pin_factory,
        )

    @property
    def showing(self) -> Indication:
        return self._showing

    def lit(self) -> frozenset[str]:
        """Names of the LEDs currently on (read back from the devices)."""
        return frozenset(n for n, led in self._leds.items() if led.is_lit)

    async def show(self, indication: Indication) -> None:
        self._check_open()
        lit = self._patterns[indication]
        for led_name, led in self._leds.items():
            if led_name in lit:
                led.on()
            else:
                led.off()
        self._showing = indication

    def release(self) -> None:
        if self._released:
            return
        for led in self._leds.values():
            led.off()
            led.close()
        self._released = True
