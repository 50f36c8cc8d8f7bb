"""Change signals: a simulated board tells its loops when an input moved, so they can sleep meanwhile.

The signal itself (wake on change, time out on the clock, never lose a change made while sampling),
what notifies it (the plant's knobs, gpiozero pins, ADC inputs) and the wiring loop that sleeps until
a change or a delay falls due.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hal.changes import ChangeSignal, wait_any
from hal.clock import VirtualClock
from hal.sim.gpio_wiring import GpioWiring
from hal.sim.mcp3x0x import Mcp3x0xSim
from hal.sim.plant import Plant


# ------------------------------------------------------------------------------------ the signal
def test_wait_returns_true_at_the_change_and_false_at_the_timeout() -> None:
    async def run() -> list[tuple[bool, float]]:
        clock, signal = VirtualClock(), ChangeSignal()
        results: list[tuple[bool, float]] = []

        async def waiter(timeout: float) -> None:
            changed = await signal.wait(signal.count, clock, timeout)
            results.append((changed, clock.monotonic()))

        first = asyncio.create_task(waiter(5.0))
        await clock.advance(2.0)
        signal.notify()
        await clock.advance(0.0)
        await first
        second = asyncio.create_task(waiter(5.0))
        await clock.advance(10.0)
        await second
        return results

    assert asyncio.run(run()) == [(True, 2.0), (False, 7.0)]


def test_a_change_made_before_waiting_is_not_lost() -> None:
    async def run() -> bool:
        clock, signal = VirtualClock(), ChangeSignal()
        seen = signal.count  # read before "sampling"
        signal.notify()  # the input moved while we sampled
        return await signal.wait(seen, clock, None)  # returns at once instead of sleeping forever

    assert asyncio.run(asyncio.wait_for(run(), 1.0)) is True


def test_wait_any_wakes_on_any_of_several_boards() -> None:
    async def run() -> tuple[bool, float]:
        clock, a, b = VirtualClock(), ChangeSignal(), ChangeSignal()
        task = asyncio.create_task(wait_any([(a, a.count), (b, b.count)], clock, 60.0))
        await clock.advance(3.0)
        b.notify()
        await clock.advance(0.0)
        return await task, clock.monotonic()

    assert asyncio.run(run()) == (True, 3.0)


def test_a_lost_timeout_race_does_not_stop_the_clock_there() -> None:
    """The timer of a wait that a change ended is cancelled; the clock skips it."""

    async def run() -> list[float]:
        clock, signal = VirtualClock(), ChangeSignal()
        woke: list[float] = []

        async def sleeper() -> None:
            await clock.sleep(10.0)
            woke.append(clock.monotonic())

        task = asyncio.create_task(signal.wait(signal.count, clock, 4.0))
        other = asyncio.create_task(sleeper())
        await clock.advance(1.0)
        signal.notify()
        await clock.advance(20.0)
        await asyncio.gather(task, other)
        return woke

    assert asyncio.run(run()) == [10.0]


# ------------------------------------------------------------------------------- what notifies
def test_the_plant_notifies_polled_knobs_but_not_meter_only_ones() -> None:
    plant = Plant(temperatures_c={"socket": 25.0})
    counts = []
    for change in (
        lambda: setattr(plant, "ev_state", "B"),
        lambda: setattr(plant, "ev_state", "B"),  # same value: no change
        lambda: setattr(plant, "pp_ohm", 220.0),
        lambda: setattr(plant, "residual_current_ma", 30.0),
        lambda: plant.temperatures_c.__setitem__("socket", 70.0),
        lambda: setattr(plant, "temperatures_c", {"socket": 20.0}),
        lambda: setattr(plant, "ev_current_a", [16.0, 16.0, 16.0]),  # the meter reads it on its own grid
        lambda: setattr(plant, "grid_frequency_hz", 49.8),
    ):
        before = plant.changes.count
        change()
        counts.append(plant.changes.count - before)
    assert counts == [1, 0, 1, 1, 1, 1, 0, 0]
    before = plant.changes.count
    plant.temperatures_c["socket"] = 21.0  # the replaced dict still reports
    assert plant.changes.count == before + 1


def test_mock_pins_notify_output_levels_functions_and_input_drives(factory: Any) -> None:
    signal = factory.changes
    pin = factory.pin(17)
    before = signal.count
    pin.function = "output"
    pin.state = 1
    pin.state = 1  # unchanged
    pin.state = 0
    assert signal.count - before == 3
    other = factory.pin(27)
    before = signal.count
    other.drive_high()
    other.drive_high()
    assert signal.count - before == 1


def test_adc_inputs_and_fault_knobs_notify() -> None:
    signal = ChangeSignal()
    adc = Mcp3x0xSim("mcp3008", vref_v=3.3, changes=signal)
    adc.set_channel_v(0, 1.0)
    adc.stuck_zero = True
    adc.conversions = 5  # a counter, not a knob
    assert signal.count == 2


# ----------------------------------------------------------------------------- the wiring loop
class _Recorder:
    """A wiring part that records when it is updated and has no delays of its own."""

    def __init__(self) -> None:
        self.updates: list[float] = []

    def update(self, now: float) -> None:
        self.updates.append(now)

    def next_due(self, now: float) -> float | None:
        return None


def _coil(factory: Any, level: int) -> None:
    pin = factory.pin(5)
    pin.function = "output"
    pin.state = level


@pytest.mark.parametrize("signalled", [True, False])
def test_wiring_sleeps_until_a_change_or_a_delay_and_keeps_its_timing(
    signalled: bool, plant: Plant, factory: Any, clock: VirtualClock
) -> None:
    factory.changes = plant.changes
    wiring = GpioWiring(plant, factory, clock)
    wiring.contactor(coil_pin=5, mirror_pin=6, close_delay_s=0.03)
    recorder = wiring.add(_Recorder())
    assert isinstance(recorder, _Recorder)

    async def run() -> tuple[float | None, int]:
        task = asyncio.create_task(wiring.run(0.005, changes=plant.changes if signalled else None))
        await clock.advance(60.0)  # a still world
        idle_updates = len(recorder.updates)
        _coil(factory, 1)
        closed_at = None
        for _ in range(100):
            await clock.advance(0.001)
            if plant.contacts_closed:
                closed_at = clock.monotonic()
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return closed_at, idle_updates

    closed_at, idle_updates = asyncio.run(run())
    assert closed_at == pytest.approx(60.03, abs=0.0051)  # the closing delay, whichever way it runs
    if signalled:
        assert idle_updates <= 3  # start-up only: nothing moved for a minute
    else:
        assert idle_updates >= 60.0 / 0.005  # polled every 5 ms
