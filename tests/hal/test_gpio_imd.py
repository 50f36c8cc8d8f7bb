"""GpioInsulationMonitor (relay-contact IMD) on mock pins, with the IMD wiring and a VirtualClock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from hal.clock import VirtualClock
from hal.drivers.gpio_imd import IMD_ALARM_TIMEOUT_S, GpioInsulationMonitor
from hal.errors import DeviceNotFound
from hal.interfaces import InsulationMonitor
from hal.sim.gpio_wiring import GpioWiring, ImdWiring
from hal.sim.plant import Plant
from hal.types import InsulationReading

T = TypeVar("T")
ALARM, PREALARM, TEST = 24, 25, 26


def _imd(factory: Any, clock: VirtualClock, **kwargs: Any) -> GpioInsulationMonitor:
    kwargs.setdefault("prealarm_pin", PREALARM)
    return GpioInsulationMonitor("imd0", alarm_pin=ALARM, test_pin=TEST, pin_factory=factory, clock=clock, **kwargs)


def _wire(wiring: GpioWiring, **kwargs: Any) -> ImdWiring:
    kwargs.setdefault("prealarm_pin", PREALARM)
    return wiring.imd(alarm_pin=ALARM, test_pin=TEST, **kwargs)


def _run(clock: VirtualClock, aw: Awaitable[T], horizon_s: float, wiring: GpioWiring) -> tuple[T, float]:
    """Run ``aw`` while virtual time moves ``horizon_s`` on (wiring updated every 10 ms); return the
    result and the virtual time it took."""

    async def main() -> tuple[T, float]:
        async def timed() -> tuple[T, float]:
            start = clock.monotonic()
            result = await aw
            return result, clock.monotonic() - start

        runner = asyncio.create_task(wiring.run(0.01))
        task = asyncio.create_task(timed())
        await clock.advance(horizon_s)
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        assert task.done(), "self-test did not finish within the horizon"
        return task.result()

    return asyncio.run(main())


def _levels(pin: Any) -> list[bool]:
    return [bool(s.state) for s in pin.states]


# ------------------------------------------------------------------------------------------ read
@pytest.mark.parametrize(
    ("ohm", "alarm", "prealarm"),
    [
        (10e6, False, False),
        (250_001.0, False, False),
        (249_999.0, False, True),  # below 500 ohm/V at 500 V: pre-alarm (warning)
        (50_001.0, False, True),
        (49_999.0, True, True),  # below 100 ohm/V at 500 V: alarm (fault)
        (0.0, True, True),
    ],
)
def test_read_reports_relay_contacts(
    factory: Any, plant: Plant, clock: VirtualClock, wiring: GpioWiring, ohm: float, alarm: bool, prealarm: bool
) -> None:
    _wire(wiring)
    imd = _imd(factory, clock)
    plant.insulation_ohm = ohm
    wiring.update()
    assert asyncio.run(imd.read()) == InsulationReading(alarm=alarm, prealarm=prealarm, resistance_ohm=None)


def test_thresholds_scale_with_nominal_voltage(
    factory: Any, plant: Plant, clock: VirtualClock, wiring: GpioWiring
) -> None:
    part = _wire(wiring, nominal_v=1000.0)
    assert (part.alarm_ohm, part.prealarm_ohm) == (100_000.0, 500_000.0)
    imd = _imd(factory, clock)
    plant.insulation_ohm = 90_000.0
    wiring.update()
    assert asyncio.run(imd.read()).alarm is True


def test_normally_closed_relays_with_pull_up(
    factory: Any, plant: Plant, clock: VirtualClock, wiring: GpioWiring
) -> None:
    # Bender N/C operation: the relay is energised while healthy and holds its contact to ground;
    # on alarm (or loss of supply) it drops out and the pull-up makes the input HIGH.
    _wire(wiring)
    imd = _imd(factory, clock, input_pull="up")
    assert factory.pin(ALARM).pull == "up"
    wiring.update()
    assert (factory.pin(ALARM).state, factory.pin(PREALARM).state) == (0, 0)
    assert asyncio.run(imd.read()) == InsulationReading(alarm=False, prealarm=False)
    plant.insulation_ohm = 1_000.0
    wiring.update()
    assert (factory.pin(ALARM).state, factory.pin(PREALARM).state) == (1, 1)
    assert asyncio.run(imd.read()) == InsulationReading(alarm=True, prealarm=True)


def test_active_low_contacts(factory: Any, plant: Plant, clock: VirtualClock, wiring: GpioWiring) -> None:
    _wire(wiring, alarm_active_high=False, prealarm_active_high=False)
    imd = _imd(factory, clock, alarm_active_high=False, prealarm_active_high=False, input_pull="up")
    wiring.update()
    assert (factory.pin(ALARM).state, factory.pin(PREALARM).state) == (1, 1)
    assert asyncio.run(imd.read()) == InsulationReading(alarm=False, prealarm=False)
    plant.insulation_ohm = 100_000.0  # pre-alarm only
    wiring.update()
    assert (factory.pin(ALARM).state, factory.pin(PREALARM).state) == (1, 0)
    assert asyncio.run(imd.read()) == InsulationReading(alarm=False, prealarm=True)


def test_without_prealarm_contact(factory: Any, plant: Plant, clock: VirtualClock, wiring: GpioWiring) -> None:
    _wire(wiring, prealarm_pin=None)
    imd = _imd(factory, clock, prealarm_pin=None)
    assert isinstance(imd, InsulationMonitor)
    plant.insulation_ohm = 100_000.0
    wiring.update()
    assert asyncio.run(imd.read()) == InsulationReading(alarm=False, prealarm=False)


# ------------------------------------------------------------------------------------- self-test
def test_self_test_passes_with_isocha_like_timing(factory: Any, clock: VirtualClock, wiring: GpioWiring) -> None:
    part = _wire(wiring, press_s=1.5, test_response_s=0.5, test_hold_s=2.0)
    imd = _imd(factory, clock)  # defaults: 2 s pulse, 20 s alarm timeout
    wiring.update()
    ok, took = _run(clock, imd.self_test(), 40.0, wiring)
    assert ok is True
    assert part.tests_started == 1
    # Pressed 1.5 s, relays 0.5 s later, held 2 s: done at ~4 s, far inside the 20 s budget.
    assert took == pytest.approx(4.0, abs=0.05)
    assert _levels(factory.pin(TEST)) == [False, True, False]
    assert _levels(factory.pin(ALARM)) == [False, True, False]
    assert asyncio.run(imd.read()) == InsulationReading(alarm=False, prealarm=False)


def test_self_test_fails_when_the_pulse_is_too_short_for_the_device(
    factory: Any, clock: VirtualClock, wiring: GpioWiring
) -> None:
    part = _wire(wiring, press_s=1.5)
    imd = _imd(factory, clock, test_pulse_s=1.0, alarm_timeout_s=5.0)
    ok, took = _run(clock, imd.self_test(), 10.0, wiring)
    assert ok is False and part.tests_started == 0
    assert took == pytest.approx(5.0)
    assert factory.pin(TEST).state == 0


def test_self_test_fails_when_relays_never_move(factory: Any, clock: VirtualClock, wiring: GpioWiring) -> None:
    part = _wire(wiring)
    part.test_broken = True
    imd = _imd(factory, clock, alarm_timeout_s=8.0)
    ok, took = _run(clock, imd.self_test(), 20.0, wiring)
    assert ok is False and took == pytest.approx(8.0)
    assert _levels(factory.pin(TEST)) == [False, True, False]  # pulsed once, released


def test_self_test_fails_when_alarm_never_clears(factory: Any, clock: VirtualClock, wiring: GpioWiring) -> None:
    _wire(wiring, test_hold_s=1000.0)
    imd = _imd(factory, clock, clear_timeout_s=3.0)
    ok, took = _run(clock, imd.self_test(), 30.0, wiring)
    assert ok is False
    assert took == pytest.approx(2.0 + 3.0, abs=0.05)  # alarm at ~2 s, then 3 s waiting for it to clear
    assert asyncio.run(imd.read()).alarm is True


def test_self_test_refused_with_alarm_present(
    factory: Any, plant: Plant, clock: VirtualClock, wiring: GpioWiring
) -> None:
    _wire(wiring)
    imd = _imd(factory, clock)
    plant.insulation_ohm = 1_000.0
    wiring.update()
    ok, took = _run(clock, imd.self_test(), 1.0, wiring)
    assert ok is False and took == 0.0
    assert _levels(factory.pin(TEST)) == [False]


def test_self_test_is_bounded_by_its_timeouts(factory: Any, clock: VirtualClock, wiring: GpioWiring) -> None:
    part = _wire(wiring)
    part.test_broken = True
    imd = _imd(factory, clock)
    ok, took = _run(clock, imd.self_test(), 60.0, wiring)
    assert ok is False and took == pytest.approx(IMD_ALARM_TIMEOUT_S)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alarm_timeout_s": 0.0}, "alarm_timeout_s"),
        ({"clear_timeout_s": -1.0}, "clear_timeout_s"),
        ({"test_pulse_s": 0.0}, "test_pulse_s"),
        ({"test_pulse_s": 5.0, "alarm_timeout_s": 2.0}, "test_pulse_s must not exceed"),
    ],
)
def test_timing_is_validated(factory: Any, clock: VirtualClock, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=f"imd0: {match}"):
        _imd(factory, clock, **kwargs)


def test_release_and_pin_clash(factory: Any, clock: VirtualClock) -> None:
    imd = _imd(factory, clock)
    with pytest.raises(DeviceNotFound, match="imd1: cannot claim GPIO26 for the IMD test input"):
        GpioInsulationMonitor("imd1", alarm_pin=5, test_pin=TEST, pin_factory=factory, clock=clock)
    imd.release()
    with pytest.raises(DeviceNotFound, match="imd0: driver released"):
        asyncio.run(imd.read())
    GpioInsulationMonitor("imd1", alarm_pin=5, test_pin=TEST, pin_factory=factory, clock=clock)
