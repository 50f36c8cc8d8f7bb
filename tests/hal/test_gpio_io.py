"""Contactor, connector lock, RCD and indicator drivers on gpiozero's mock pins, with the plant wiring
playing the hardware and a VirtualClock for every timed part."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from hal.clock import VirtualClock
from hal.drivers.gpio_io import (
    RCD_CLEAR_TIMEOUT_S,
    RCD_TRIP_TIMEOUT_S,
    RGB_COLOURS,
    GpioConnectorLock,
    GpioContactor,
    GpioIndicator,
    GpioResidualCurrentMonitor,
)
from hal.errors import DeviceNotFound, UnsupportedOperation
from hal.interfaces import ConnectorLock, Contactor, Indicator, ResidualCurrentMonitor
from hal.sim.gpio_wiring import GpioWiring
from hal.sim.plant import Plant
from hal.types import Indication

T = TypeVar("T")

COIL, MIRROR = 20, 21
LOCK, UNLOCK, LOCK_FB = 6, 7, 8
TRIP, TEST = 22, 23
RED, GREEN, BLUE = 9, 10, 11


def _levels(pin: Any) -> list[bool]:
    return [bool(s.state) for s in pin.states]


async def _timed(clock: VirtualClock, aw: Awaitable[T]) -> tuple[T, float]:
    start = clock.monotonic()
    result = await aw
    return result, clock.monotonic() - start


def _run(clock: VirtualClock, aw: Awaitable[T], horizon_s: float, wiring: GpioWiring | None = None) -> tuple[T, float]:
    """Run ``aw`` while virtual time moves ``horizon_s`` forward (the wiring updating every 5 ms);
    return its result and how much virtual time it took."""

    async def main() -> tuple[T, float]:
        runner = asyncio.create_task(wiring.run(0.005)) if wiring is not None else None
        task = asyncio.create_task(_timed(clock, aw))
        await clock.advance(horizon_s)
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        assert task.done(), "driver call did not finish within the horizon"
        return task.result()

    return asyncio.run(main())


def _settle(clock: VirtualClock, wiring: GpioWiring, seconds: float) -> None:
    """Let ``seconds`` of virtual time pass with the wiring updating."""
    _run(clock, asyncio.sleep(0), seconds, wiring)


# ------------------------------------------------------------------------------------- contactor
def test_contactor_protocol_and_coil_levels(factory: Any) -> None:
    k = GpioContactor("k1", coil_pin=COIL, pin_factory=factory)
    assert isinstance(k, Contactor)
    coil = factory.pin(COIL)
    assert coil.state == 0 and k.commanded_closed is False
    asyncio.run(k.close())
    assert coil.state == 1 and k.commanded_closed is True
    asyncio.run(k.open())
    assert coil.state == 0 and k.commanded_closed is False
    assert _levels(coil) == [False, True, False]


def test_contactor_active_low_coil(factory: Any) -> None:
    k = GpioContactor("k1", coil_pin=COIL, coil_active_high=False, pin_factory=factory)
    coil = factory.pin(COIL)
    assert coil.state == 1  # de-energised = high on an active-low driver
    asyncio.run(k.close())
    assert coil.state == 0 and k.commanded_closed is True


def test_contactor_without_mirror_reports_none(factory: Any) -> None:
    k = GpioContactor("k1", coil_pin=COIL, pin_factory=factory)
    assert k.has_feedback is False
    assert asyncio.run(k.feedback_closed()) is None


def test_mirror_follows_the_coil_after_the_closing_delay(factory: Any, clock: VirtualClock, wiring: GpioWiring) -> None:
    wiring.contactor(coil_pin=COIL, mirror_pin=MIRROR, close_delay_s=0.03)
    k = GpioContactor("k1", coil_pin=COIL, mirror_pin=MIRROR, pin_factory=factory)
    wiring.update()
    assert k.has_feedback and asyncio.run(k.feedback_closed()) is False

    asyncio.run(k.close())
    wiring.update()
    assert asyncio.run(k.feedback_closed()) is False  # contacts still travelling
    _settle(clock, wiring, 0.05)
    assert asyncio.run(k.feedback_closed()) is True
    assert factory.pin(MIRROR).state == 1

    asyncio.run(k.open())
    _settle(clock, wiring, 0.05)
    assert asyncio.run(k.feedback_closed()) is False


def test_mirror_active_low(factory: Any, clock: VirtualClock, wiring: GpioWiring) -> None:
    wiring.contactor(coil_pin=COIL, mirror_pin=MIRROR, mirror_active_high=False)
    k = GpioContactor("k1", coil_pin=COIL, mirror_pin=MIRROR, mirror_active_high=False, pin_factory=factory)
    wiring.update()
    assert factory.pin(MIRROR).state == 1 and asyncio.run(k.feedback_closed()) is False
    asyncio.run(k.close())
    _settle(clock, wiring, 0.1)
    assert factory.pin(MIRROR).state == 0 and asyncio.run(k.feedback_closed()) is True


def test_welded_contactor_mirror_stays_closed_after_open(
    factory: Any, plant: Plant, clock: VirtualClock, wiring: GpioWiring
) -> None:
    wiring.contactor(coil_pin=COIL, mirror_pin=MIRROR)
    k = GpioContactor("k1", coil_pin=COIL, mirror_pin=MIRROR, pin_factory=factory)
    asyncio.run(k.close())
    _settle(clock, wiring, 0.1)
    plant.contactor_welded = True
    asyncio.run(k.open())
    _settle(clock, wiring, 1.0)
    assert k.commanded_closed is False
    assert asyncio.run(k.feedback_closed()) is True  # disagrees with the command: welded


def test_stuck_open_contactor_mirror_never_closes(
    factory: Any, plant: Plant, clock: VirtualClock, wiring: GpioWiring
) -> None:
    plant.contactor_stuck_open = True
    part = wiring.contactor(coil_pin=COIL, mirror_pin=MIRROR)
    k = GpioContactor("k1", coil_pin=COIL, mirror_pin=MIRROR, pin_factory=factory)
    asyncio.run(k.close())
    _settle(clock, wiring, 1.0)
    assert k.commanded_closed is True
    assert asyncio.run(k.feedback_closed()) is False
    assert part.contacts_closed is False


def test_contactor_release_opens_and_frees(factory: Any) -> None:
    k = GpioContactor("k1", coil_pin=COIL, mirror_pin=MIRROR, pin_factory=factory)
    asyncio.run(k.close())
    k.release()
    k.release()
    assert factory.pin(COIL).state == 0
    with pytest.raises(DeviceNotFound, match="k1: driver released"):
        asyncio.run(k.close())
    with pytest.raises(DeviceNotFound):
        asyncio.run(k.feedback_closed())
    GpioContactor("k2", coil_pin=COIL, mirror_pin=MIRROR, pin_factory=factory)


def test_contactor_pin_clash_names_device_pin_and_role(factory: Any) -> None:
    first = GpioContactor("k1", coil_pin=COIL, pin_factory=factory)
    with pytest.raises(DeviceNotFound, match="k2: cannot claim GPIO20 for the contactor mirror contact") as info:
        GpioContactor("k2", coil_pin=25, mirror_pin=COIL, pin_factory=factory)
    # The half-built k2 (kept alive by ``info``) gave its coil pin back.
    assert info.value.device == "k2"
    GpioContactor("k3", coil_pin=25, pin_factory=factory)
    assert first.commanded_closed is False


def test_contactor_nonexistent_pin(factory: Any) -> None:
    with pytest.raises(DeviceNotFound, match="k1: cannot claim GPIO99 for the contactor coil"):
        GpioContactor("k1", coil_pin=99, pin_factory=factory)


def test_contactor_invalid_pull(factory: Any) -> None:
    with pytest.raises(ValueError, match="pull"):
        GpioContactor("k1", coil_pin=COIL, mirror_pin=MIRROR, mirror_pull="sideways", pin_factory=factory)  # type: ignore[arg-type]


def test_contactor_input_pull_up_with_active_high_semantics(factory: Any) -> None:
    # Pull-up but active-high (e.g. an optocoupler): gpiozero alone would call this active-low.
    k = GpioContactor(
        "k1", coil_pin=COIL, mirror_pin=MIRROR, mirror_pull="up", mirror_active_high=True, pin_factory=factory
    )
    mirror = factory.pin(MIRROR)
    assert mirror.pull == "up" and mirror.state == 1
    assert asyncio.run(k.feedback_closed()) is True
    mirror.drive_low()
    assert asyncio.run(k.feedback_closed()) is False


# ------------------------------------------------------------------------------------------ lock
def _motor_lock(factory: Any, clock: VirtualClock, **kwargs: Any) -> GpioConnectorLock:
    return GpioConnectorLock(
        "lock0",
        lock_pin=LOCK,
        unlock_pin=UNLOCK,
        feedback_pin=LOCK_FB,
        pulse_s=0.5,
        pin_factory=factory,
        clock=clock,
        **kwargs,
    )


def test_motor_lock_pulses_each_output_for_pulse_s(factory: Any, clock: VirtualClock) -> None:
    lock = _motor_lock(factory, clock)
    assert isinstance(lock, ConnectorLock) and lock.is_motor
    lock_pin, unlock_pin = factory.pin(LOCK), factory.pin(UNLOCK)

    async def scenario() -> tuple[list[bool], float]:
        task = asyncio.create_task(_timed(clock, lock.lock()))
        await clock.advance(0.25)
        mid = [lock_pin.state == 1, unlock_pin.state == 1, lock.commanded_locked]
        await clock.advance(0.5)
        _, took = await task
        return mid, took

    mid, took = asyncio.run(scenario())
    assert mid == [True, False, True]
    assert took == pytest.approx(0.5)
    assert _levels(lock_pin) == [False, True, False]
    assert _levels(unlock_pin) == [False]

    _, took = _run(clock, lock.unlock(), 1.0)
    assert took == pytest.approx(0.5)
    assert _levels(unlock_pin) == [False, True, False]
    assert lock.commanded_locked is False


def test_motor_outputs_are_never_active_together(factory: Any, clock: VirtualClock) -> None:
    lock = _motor_lock(factory, clock)
    lock_pin, unlock_pin = factory.pin(LOCK), factory.pin(UNLOCK)

    async def scenario() -> list[tuple[bool, bool]]:
        seen: list[tuple[bool, bool]] = []

        async def sample() -> None:
            while True:
                seen.append((lock_pin.state == 1, unlock_pin.state == 1))
                await clock.sleep(0.01)

        sampler = asyncio.create_task(sample())
        first = asyncio.create_task(lock.lock())
        second = asyncio.create_task(lock.unlock())  # issued while the lock pulse is running
        await clock.advance(1.5)
        sampler.cancel()
        await asyncio.gather(first, second)
        return seen

    seen = asyncio.run(scenario())
    assert (True, True) not in seen
    assert (True, False) in seen and (False, True) in seen
    assert lock.commanded_locked is False  # the later command wins


def test_lock_feedback_reports_position(factory: Any, clock: VirtualClock, wiring: GpioWiring) -> None:
    wiring.lock(lock_pin=LOCK, unlock_pin=UNLOCK, feedback_pin=LOCK_FB, travel_s=0.1)
    lock = _motor_lock(factory, clock)
    _settle(clock, wiring, 0.01)
    assert asyncio.run(lock.feedback_locked()) is False
    _run(clock, lock.lock(), 1.0, wiring)
    assert asyncio.run(lock.feedback_locked()) is True
    _run(clock, lock.unlock(), 1.0, wiring)
    assert asyncio.run(lock.feedback_locked()) is False


def test_jammed_lock_feedback_disagrees_with_command(factory: Any, clock: VirtualClock, wiring: GpioWiring) -> None:
    part = wiring.lock(lock_pin=LOCK, unlock_pin=UNLOCK, feedback_pin=LOCK_FB)
    part.jammed = True
    lock = _motor_lock(factory, clock)
    _run(clock, lock.lock(), 1.0, wiring)
    assert lock.commanded_locked is True
    assert asyncio.run(lock.feedback_locked()) is False


def test_too_short_pulse_does_not_reach_position(factory: Any, clock: VirtualClock, wiring: GpioWiring) -> None:
    wiring.lock(lock_pin=LOCK, unlock_pin=UNLOCK, feedback_pin=LOCK_FB, travel_s=0.3)
    lock = GpioConnectorLock(
        "lock0", lock_pin=LOCK, unlock_pin=UNLOCK, feedback_pin=LOCK_FB, pulse_s=0.1, pin_factory=factory, clock=clock
    )
    _run(clock, lock.lock(), 1.0, wiring)
    assert asyncio.run(lock.feedback_locked()) is False


def test_cancelled_pulse_releases_the_motor(factory: Any, clock: VirtualClock) -> None:
    lock = _motor_lock(factory, clock)

    async def scenario() -> None:
        task = asyncio.create_task(lock.lock())
        await clock.advance(0.1)
        assert factory.pin(LOCK).state == 1
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert factory.pin(LOCK).state == 0 and factory.pin(UNLOCK).state == 0


def test_solenoid_lock_holds_its_output(factory: Any, clock: VirtualClock, wiring: GpioWiring) -> None:
    wiring.lock(lock_pin=LOCK, feedback_pin=LOCK_FB, feedback_active_high=False, travel_s=0.05)
    lock = GpioConnectorLock(
        "lock0", lock_pin=LOCK, feedback_pin=LOCK_FB, feedback_active_high=False, pin_factory=factory, clock=clock
    )
    assert lock.is_motor is False
    _, took = _run(clock, lock.lock(), 0.2, wiring)
    assert took == 0.0  # no pulse: the solenoid stays energised
    assert factory.pin(LOCK).state == 1
    assert factory.pin(LOCK_FB).state == 0 and asyncio.run(lock.feedback_locked()) is True
    _run(clock, lock.unlock(), 0.2, wiring)
    assert factory.pin(LOCK).state == 0 and asyncio.run(lock.feedback_locked()) is False


def test_lock_without_feedback(factory: Any, clock: VirtualClock) -> None:
    lock = GpioConnectorLock("lock0", lock_pin=LOCK, pin_factory=factory, clock=clock)
    assert asyncio.run(lock.feedback_locked()) is None


@pytest.mark.parametrize("pulse", [0.0, -0.1, 4.5])
def test_lock_pulse_is_validated(factory: Any, clock: VirtualClock, pulse: float) -> None:
    with pytest.raises(ValueError, match="lock0: pulse_s"):
        GpioConnectorLock("lock0", lock_pin=LOCK, unlock_pin=UNLOCK, pulse_s=pulse, pin_factory=factory, clock=clock)


def test_lock_release(factory: Any, clock: VirtualClock) -> None:
    lock = GpioConnectorLock("lock0", lock_pin=LOCK, pin_factory=factory, clock=clock)
    asyncio.run(lock.lock())
    lock.release()
    assert factory.pin(LOCK).state == 0
    with pytest.raises(DeviceNotFound, match="lock0"):
        asyncio.run(lock.unlock())


# ------------------------------------------------------------------------------------------- RCD
def _rcd(factory: Any, clock: VirtualClock, **kwargs: Any) -> GpioResidualCurrentMonitor:
    kwargs.setdefault("test_pin", TEST)
    return GpioResidualCurrentMonitor("rcd0", trip_pin=TRIP, pin_factory=factory, clock=clock, **kwargs)


def test_rcd_trips_on_6ma(factory: Any, plant: Plant, clock: VirtualClock, wiring: GpioWiring) -> None:
    wiring.rcd(trip_pin=TRIP, test_pin=TEST)
    rcd = _rcd(factory, clock)
    assert isinstance(rcd, ResidualCurrentMonitor)
    plant.residual_current_ma = 5.9
    _settle(clock, wiring, 0.2)
    assert asyncio.run(rcd.tripped()) is False
    plant.residual_current_ma = 6.0
    _settle(clock, wiring, 0.2)
    assert asyncio.run(rcd.tripped()) is True
    plant.residual_current_ma = 0.0
    _settle(clock, wiring, 0.2)
    assert asyncio.run(rcd.tripped()) is False


def test_rcd_active_low_trip(factory: Any, plant: Plant, clock: VirtualClock, wiring: GpioWiring) -> None:
    wiring.rcd(trip_pin=TRIP, trip_active_high=False)
    rcd = _rcd(factory, clock, trip_active_high=False, test_pin=None)
    _settle(clock, wiring, 0.1)
    assert factory.pin(TRIP).state == 1 and asyncio.run(rcd.tripped()) is False
    plant.residual_current_ma = 30.0
    _settle(clock, wiring, 0.2)
    assert factory.pin(TRIP).state == 0 and asyncio.run(rcd.tripped()) is True


def test_rcd_self_test_passes(factory: Any, clock: VirtualClock, wiring: GpioWiring) -> None:
    wiring.rcd(trip_pin=TRIP, test_pin=TEST, response_s=0.05, release_s=0.2)
    rcd = _rcd(factory, clock)
    _settle(clock, wiring, 0.01)
    ok, took = _run(clock, rcd.self_test(), 5.0, wiring)
    assert ok is True
    assert 0.05 <= took < 0.05 + 0.2 + 0.1  # trip, then release, in about the wired times
    test_pin = factory.pin(TEST)
    assert _levels(test_pin) == [False, True, False]  # asserted once, released on return
    assert _levels(factory.pin(TRIP)) == [False, True, False]
    assert asyncio.run(rcd.tripped()) is False


def test_rcd_self_test_fails_when_it_never_trips(factory: Any, clock: VirtualClock, wiring: GpioWiring) -> None:
    part = wiring.rcd(trip_pin=TRIP, test_pin=TEST)
    part.test_winding_broken = True
    rcd = _rcd(factory, clock)
    ok, took = _run(clock, rcd.self_test(), 5.0, wiring)
    assert ok is False
    assert took == pytest.approx(RCD_TRIP_TIMEOUT_S)
    assert factory.pin(TEST).state == 0


def test_rcd_self_test_fails_when_it_trips_too_late(factory: Any, clock: VirtualClock, wiring: GpioWiring) -> None:
    wiring.rcd(trip_pin=TRIP, test_pin=TEST, response_s=1.5)
    rcd = _rcd(factory, clock)
    ok, took = _run(clock, rcd.self_test(), 5.0, wiring)
    assert ok is False and took == pytest.approx(RCD_TRIP_TIMEOUT_S)


def test_rcd_self_test_fails_when_it_never_clears(factory: Any, clock: VirtualClock, wiring: GpioWiring) -> None:
    wiring.rcd(trip_pin=TRIP, test_pin=TEST, response_s=0.05, release_s=math.inf)  # latching module
    rcd = _rcd(factory, clock)
    ok, took = _run(clock, rcd.self_test(), 10.0, wiring)
    assert ok is False
    assert took == pytest.approx(0.05 + RCD_CLEAR_TIMEOUT_S, abs=0.02)
    assert factory.pin(TEST).state == 0
    assert asyncio.run(rcd.tripped()) is True


def test_rcd_self_test_refused_when_already_tripped(
    factory: Any, plant: Plant, clock: VirtualClock, wiring: GpioWiring
) -> None:
    wiring.rcd(trip_pin=TRIP, test_pin=TEST)
    rcd = _rcd(factory, clock)
    plant.residual_current_ma = 30.0
    _settle(clock, wiring, 0.2)
    ok, took = _run(clock, rcd.self_test(), 5.0, wiring)
    assert ok is False and took == 0.0
    assert _levels(factory.pin(TEST)) == [False]  # the test line was never touched


def test_rcd_self_test_pulse_mode(factory: Any, clock: VirtualClock, wiring: GpioWiring) -> None:
    wiring.rcd(trip_pin=TRIP, test_pin=TEST, response_s=0.2)
    rcd = _rcd(factory, clock, test_pulse_s=0.25)
    ok, _ = _run(clock, rcd.self_test(), 5.0, wiring)
    assert ok is True
    assert _levels(factory.pin(TEST)) == [False, True, False]


def test_rcd_self_test_pulse_shorter_than_response_fails(factory: Any, clock: VirtualClock, wiring: GpioWiring) -> None:
    part = wiring.rcd(trip_pin=TRIP, test_pin=TEST, response_s=0.3)
    rcd = _rcd(factory, clock, test_pulse_s=0.25)
    ok, took = _run(clock, rcd.self_test(), 5.0, wiring)
    assert ok is False and took == pytest.approx(RCD_TRIP_TIMEOUT_S)
    assert part.tripped is False
    assert factory.pin(TEST).state == 0


def test_rcd_self_test_without_test_output(factory: Any, clock: VirtualClock) -> None:
    rcd = _rcd(factory, clock, test_pin=None)
    assert rcd.has_test is False
    with pytest.raises(UnsupportedOperation, match="rcd0: no RCD test output"):
        asyncio.run(rcd.self_test())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"trip_timeout_s": 0.0}, "trip_timeout_s"),
        ({"clear_timeout_s": -1.0}, "clear_timeout_s"),
        ({"poll_s": 0.0}, "poll_s"),
        ({"test_pulse_s": 2.0, "trip_timeout_s": 1.0}, "test_pulse_s must not exceed"),
    ],
)
def test_rcd_timing_is_validated(factory: Any, clock: VirtualClock, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _rcd(factory, clock, **kwargs)


# ------------------------------------------------------------------------------------- indicator
def test_rgb_indicator_shows_each_colour(factory: Any) -> None:
    ind = GpioIndicator.rgb("led0", red_pin=RED, green_pin=GREEN, blue_pin=BLUE, pin_factory=factory)
    assert isinstance(ind, Indicator)
    pins = {"red": factory.pin(RED), "green": factory.pin(GREEN), "blue": factory.pin(BLUE)}
    for indication in Indication:
        asyncio.run(ind.show(indication))
        on = {name for name, pin in pins.items() if pin.state == 1}
        assert on == RGB_COLOURS[indication], indication
        assert ind.lit() == RGB_COLOURS[indication] and ind.showing is indication
    assert RGB_COLOURS[Indication.FAULT] == {"red"}


def test_indicator_active_low_leds(factory: Any) -> None:
    ind = GpioIndicator.rgb("led0", red_pin=RED, green_pin=GREEN, blue_pin=BLUE, active_high=False, pin_factory=factory)
    asyncio.run(ind.show(Indication.FAULT))
    assert (factory.pin(RED).state, factory.pin(GREEN).state, factory.pin(BLUE).state) == (0, 1, 1)


def test_indicator_with_separate_leds(factory: Any) -> None:
    patterns = {
        Indication.IDLE: {"power"},
        Indication.CONNECTED: {"power", "car"},
        Indication.CHARGING: {"power", "car", "energy"},
        Indication.DISCHARGING: {"power", "car", "energy"},
        Indication.FAULT: {"fault"},
    }
    leds = {"power": 12, "car": 13, "energy": 16, "fault": 26}
    ind = GpioIndicator("panel", leds=leds, patterns=patterns, pin_factory=factory)
    asyncio.run(ind.show(Indication.CONNECTED))
    assert {n for n, p in leds.items() if factory.pin(p).state == 1} == {"power", "car"}
    asyncio.run(ind.show(Indication.OFF))
    assert all(factory.pin(p).state == 0 for p in leds.values())


def test_indicator_patterns_are_validated(factory: Any) -> None:
    partial = {i: {"red"} for i in Indication if i not in (Indication.OFF, Indication.FAULT)}
    with pytest.raises(ValueError, match="no LED pattern for FAULT"):
        GpioIndicator("led0", leds={"red": RED}, patterns=partial, pin_factory=factory)
    bad = {i: {"red"} for i in Indication} | {Indication.FAULT: {"amber"}}
    with pytest.raises(ValueError, match="unknown LEDs"):
        GpioIndicator("led0", leds={"red": RED}, patterns=bad, pin_factory=factory)


def test_indicator_release(factory: Any) -> None:
    ind = GpioIndicator.rgb("led0", red_pin=RED, green_pin=GREEN, blue_pin=BLUE, pin_factory=factory)
    asyncio.run(ind.show(Indication.FAULT))
    ind.release()
    assert factory.pin(RED).state == 0
    with pytest.raises(DeviceNotFound, match="led0"):
        asyncio.run(ind.show(Indication.IDLE))
