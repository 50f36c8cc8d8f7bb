"""Insulation monitoring device (IEC 61557-8) that reports through relay contacts.

For IMDs such as the Bender isoCHA425 class: relay K1 signals the insulation *alarm* (response value
R2), K2 the *pre-alarm* (R1), and a test/reset input starts the device self-test. The contacts are
read on two GPIO inputs and the test input is driven by one GPIO output (through a relay or an
optocoupler); a relay-only monitor cannot report a resistance, so
``InsulationReading.resistance_ohm`` is always ``None``.

``alarm_active_high``/``prealarm_active_high`` give the input level while the alarm is *present*. Bender
relays default to N/C operation (energised while all is well), so with the contact to ground and a
pull-up the input goes HIGH on alarm *and* on loss of supply: fail-safe.

Self-test: the isoCHA425 starts a self-test when its test input is held for more than 1.5 s
(isoCHA425 manual D00352, §3.2.6 "Manual self test"), hence a 2 s pulse by default. The alarm relays
only move during a test if the device is configured to signal "device test" on K1/K2 ("out" menu,
§3.2.8); a board using this driver must set that, or :meth:`self_test` will report a failure. The
test may take long: IEC 61851-23:2023 allows the IMD self-test to take about 20 s (EVerest
``isolation_monitor.yaml``, anchors.md §1.8), so the alarm timeout is a constructor argument with
20 s as default, and tests pass small values on a :class:`hal.clock.VirtualClock`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hal.clock import Clock
from hal.drivers.gpio_io import (
    POLL_S,
    InputLine,
    OutputLine,
    Pull,
    Releasable,
    build_lines,
    close_all,
    positive_seconds,
    pulse_and_watch,
)
from hal.types import InsulationReading

log = logging.getLogger(__name__)

#: isoCHA425 manual §3.2.6: the test button must be held > 1.5 s to start a self-test.
IMD_TEST_PULSE_S = 2.0
#: IEC 61851-23:2023 via EVerest isolation_monitor.yaml: a self-test "can take ~20 s".
IMD_ALARM_TIMEOUT_S = 20.0
#: After the test the relays fall back on their own (no fault memory); allow the same margin again
#: for devices that re-measure before releasing. [unverified: device specific, check the manual]
IMD_CLEAR_TIMEOUT_S = 20.0


class GpioInsulationMonitor(Releasable):
    """:class:`hal.interfaces.InsulationMonitor` for an IMD wired through its alarm relays."""

    def __init__(
        self,
        name: str,
        *,
        alarm_pin: int,
        alarm_active_high: bool = True,
        prealarm_pin: int | None = None,
        prealarm_active_high: bool = True,
        input_pull: Pull = None,
        test_pin: int,
        test_active_high: bool = True,
        test_pulse_s: float = IMD_TEST_PULSE_S,
        alarm_timeout_s: float = IMD_ALARM_TIMEOUT_S,
        clear_timeout_s: float = IMD_CLEAR_TIMEOUT_S,
        poll_s: float = POLL_S,
        pin_factory: Any,
        clock: Clock,
    ) -> None:
        self.name = name
        self._test_pulse_s = positive_seconds(name, "test_pulse_s", test_pulse_s)
        self._alarm_timeout_s = positive_seconds(name, "alarm_timeout_s", alarm_timeout_s)
        self._clear_timeout_s = positive_seconds(name, "clear_timeout_s", clear_timeout_s)
        self._poll_s = positive_seconds(name, "poll_s", poll_s)
        if test_pulse_s > alarm_timeout_s:
            raise ValueError(f"{name}: test_pulse_s must not exceed alarm_timeout_s")
        self._clock = clock
        self._prealarm: InputLine | None = None
        self._busy = asyncio.Lock()

        def build(lines: list[OutputLine | InputLine]) -> None:
            self._alarm = InputLine(
                name,
                "IMD alarm contact",
                alarm_pin,
                active_high=alarm_active_high,
                pull=input_pull,
                pin_factory=pin_factory,
            )
            lines.append(self._alarm)
            if prealarm_pin is not None:
                self._prealarm = InputLine(
                    name,
                    "IMD pre-alarm contact",
                    prealarm_pin,
                    active_high=prealarm_active_high,
                    pull=input_pull,
                    pin_factory=pin_factory,
                )
                lines.append(self._prealarm)
            self._test = OutputLine(
                name, "IMD test input", test_pin, active_high=test_active_high, pin_factory=pin_factory
            )
            lines.append(self._test)

        self._lines = build_lines(build)

    async def read(self) -> InsulationReading:
        self._check_open()
        prealarm = self._prealarm.active if self._prealarm is not None else False
        return InsulationReading(alarm=self._alarm.active, prealarm=prealarm, resistance_ohm=None)

    async def self_test(self) -> bool:
        """Pulse the test input; True only if the alarm contact went active within
        ``alarm_timeout_s`` of the start and cleared within ``clear_timeout_s`` afterwards. With the
        alarm already present the test proves nothing: False without testing."""
        self._check_open()
        async with self._busy:
            if self._alarm.active:
                log.warning("%s: self-test refused: the insulation alarm is already active", self.name)
                return False
            tripped, cleared = await pulse_and_watch(
                self._clock,
                self._test,
                lambda: self._alarm.active,
                pulse_s=self._test_pulse_s,
                trip_timeout_s=self._alarm_timeout_s,
                clear_timeout_s=self._clear_timeout_s,
                poll_s=self._poll_s,
            )
        if not tripped:
            log.warning("%s: self-test failed: no alarm within %.1f s", self.name, self._alarm_timeout_s)
        elif not cleared:
            log.warning("%s: self-test failed: alarm did not clear within %.1f s", self.name, self._clear_timeout_s)
        return tripped and cleared

    def release(self) -> None:
        if self._released:
            return
        self._test.set(False)
        close_all(self._lines)
        self._released = True
