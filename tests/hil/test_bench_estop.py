"""The E-stop monitor on gpiozero mock pins and a VirtualClock: levels, the antivalent channel, default
deny for unreadable inputs, and the watch loop calling on_trip once within one poll period."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from hal.clock import VirtualClock
from hal.errors import DeviceNotFound
from hil.bench.estop import EStopMonitor
from hil.bench.rig import EStopConfig

ESTOP, ANTIVALENT = 26, 27
POLL_S = 0.01


class BrokenPin(MockPin):
    """A mock pin whose reads fail once ``broken`` is set (a GPIO chip that went away)."""

    broken = False

    def _get_state(self) -> Any:
        if self.broken:
            raise OSError(5, "Input/output error")
        return super()._get_state()


@pytest.fixture
def factory() -> Iterator[Any]:
    f = MockFactory(pin_class=BrokenPin)
    yield f
    f.close()
    f.reset()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def _nc_monitor(factory: Any, clock: VirtualClock, *, antivalent: bool = False) -> EStopMonitor:
    """The usual wiring: NC contact to GND with a pull-up, reading high when pressed; the antivalent NO
    contact reads low when pressed. Starts released."""
    monitor = EStopMonitor(
        ESTOP,
        active_high=True,
        pull="up",
        antivalent_pin=ANTIVALENT if antivalent else None,
        pin_factory=factory,
        clock=clock,
        poll_s=POLL_S,
    )
    factory.pin(ESTOP).drive_low()
    if antivalent:
        factory.pin(ANTIVALENT).drive_high()
    return monitor


def _press(factory: Any, antivalent: bool = False) -> None:
    factory.pin(ESTOP).drive_high()
    if antivalent:
        factory.pin(ANTIVALENT).drive_low()


# ----------------------------------------------------------------------------------- levels
def test_released_and_pressed(factory: Any, clock: VirtualClock) -> None:
    monitor = _nc_monitor(factory, clock)
    assert monitor.tripped is False and monitor.check() is None
    _press(factory)
    assert monitor.tripped is True
    assert monitor.check() == "E-stop pressed (GPIO26 high)"
    factory.pin(ESTOP).drive_low()
    assert monitor.tripped is False


def test_active_low_input(factory: Any, clock: VirtualClock) -> None:
    monitor = EStopMonitor(ESTOP, active_high=False, pull="down", pin_factory=factory, clock=clock)
    factory.pin(ESTOP).drive_high()
    assert monitor.tripped is False
    factory.pin(ESTOP).drive_low()
    assert monitor.check() == "E-stop pressed (GPIO26 low)"


def test_from_config(factory: Any, clock: VirtualClock) -> None:
    config = EStopConfig(pin=ESTOP, active_high=True, pull="up", antivalent_pin=ANTIVALENT, poll_ms=20)
    monitor = EStopMonitor.from_config(config, pin_factory=factory, clock=clock)
    assert monitor.poll_s == pytest.approx(0.02)
    assert factory.pin(ESTOP).pull == "up" and factory.pin(ANTIVALENT).pull == "up"
    # Both inputs pulled up and nothing connected (the button unplugged): the NC channel reads pressed.
    assert monitor.check() == "E-stop pressed (GPIO26 high)"
    factory.pin(ESTOP).drive_low()
    assert monitor.tripped is False


def test_antivalent_pair(factory: Any, clock: VirtualClock) -> None:
    monitor = _nc_monitor(factory, clock, antivalent=True)
    assert monitor.tripped is False
    _press(factory, antivalent=True)
    assert monitor.check() == "E-stop pressed (GPIO26 high)"


@pytest.mark.parametrize(("main_high", "level"), [(False, "low"), (True, "high")])
def test_antivalent_channels_that_agree_count_as_tripped(
    factory: Any, clock: VirtualClock, main_high: bool, level: str
) -> None:
    monitor = _nc_monitor(factory, clock, antivalent=True)
    if main_high:  # the NO contact did not open when the button was pressed: still pressed
        _press(factory)
        assert monitor.check() == "E-stop pressed (GPIO26 high)"
    else:  # the NO contact's wire broke while released
        factory.pin(ANTIVALENT).drive_low()
        reason = monitor.check()
        assert reason is not None
        assert f"GPIO26 and GPIO27 both read {level}" in reason and "broken wire" in reason


# ----------------------------------------------------------------------------------- default deny
def test_an_unreadable_input_counts_as_tripped(factory: Any, clock: VirtualClock) -> None:
    monitor = _nc_monitor(factory, clock)
    factory.pin(ESTOP).broken = True
    reason = monitor.check()
    assert reason is not None and reason.startswith("E-stop input unreadable (OSError")
    assert monitor.tripped is True


def test_an_unreadable_antivalent_input_counts_as_tripped(factory: Any, clock: VirtualClock) -> None:
    monitor = _nc_monitor(factory, clock, antivalent=True)
    factory.pin(ANTIVALENT).broken = True
    assert "unreadable" in (monitor.check() or "")


def test_a_closed_input_device_counts_as_tripped(factory: Any, clock: VirtualClock) -> None:
    monitor = _nc_monitor(factory, clock)
    monitor._main.close()  # the line is gone underneath the monitor
    assert "unreadable" in (monitor.check() or "")


def test_a_released_monitor_counts_as_tripped(factory: Any, clock: VirtualClock) -> None:
    monitor = _nc_monitor(factory, clock)
    monitor.close()
    assert monitor.tripped is True and "released" in (monitor.check() or "")
    monitor.close()


def test_a_pin_already_claimed_is_named(factory: Any, clock: VirtualClock) -> None:
    from gpiozero import DigitalOutputDevice

    squatter = DigitalOutputDevice(ESTOP, pin_factory=factory)
    with pytest.raises(DeviceNotFound, match="e-stop: cannot claim GPIO26 for the E-stop input"):
        EStopMonitor(ESTOP, active_high=True, pin_factory=factory, clock=clock)
    squatter.close()


def test_poll_period_must_be_positive(factory: Any, clock: VirtualClock) -> None:
    with pytest.raises(ValueError, match="poll_s must be > 0"):
        EStopMonitor(ESTOP, active_high=True, pin_factory=factory, clock=clock, poll_s=0)


# ----------------------------------------------------------------------------------- watching
@pytest.mark.parametrize("offset", [0.0, 0.001, 0.005, 0.0099])
def test_watch_trips_within_one_poll_period_and_calls_once(factory: Any, clock: VirtualClock, offset: float) -> None:
    monitor = _nc_monitor(factory, clock)
    calls: list[tuple[float, str]] = []

    async def main() -> tuple[str, float]:
        task = asyncio.create_task(monitor.watch(lambda reason: calls.append((clock.monotonic(), reason))))
        await clock.advance(1.0 + offset)
        assert calls == []  # released: no call for a whole second of polling
        pressed_at = clock.monotonic()
        _press(factory)
        await clock.advance(POLL_S)
        assert len(calls) == 1
        await clock.advance(1.0)  # pressed for a while longer: still one call
        assert task.done()
        return task.result(), pressed_at

    reason, pressed_at = asyncio.run(main())
    assert len(calls) == 1
    called_at, called_reason = calls[0]
    assert called_reason == reason == "E-stop pressed (GPIO26 high)"
    assert pressed_at <= called_at <= pressed_at + POLL_S + 1e-9


def test_watch_calls_at_once_when_already_tripped(factory: Any, clock: VirtualClock) -> None:
    monitor = _nc_monitor(factory, clock)
    _press(factory)
    calls: list[float] = []

    async def main() -> str:
        task = asyncio.create_task(monitor.watch(lambda reason: calls.append(clock.monotonic())))
        await clock.advance(0.0)
        assert task.done()
        return task.result()

    assert asyncio.run(main()).startswith("E-stop pressed")
    assert calls == [0.0]


def test_watch_awaits_a_coroutine_callback(factory: Any, clock: VirtualClock) -> None:
    monitor = _nc_monitor(factory, clock)
    done: list[str] = []

    async def on_trip(reason: str) -> None:
        await clock.sleep(0.5)  # e.g. the safe stop
        done.append(reason)

    async def main() -> None:
        task = asyncio.create_task(monitor.watch(on_trip))
        await clock.advance(0.05)
        factory.pin(ESTOP).broken = True
        await clock.advance(POLL_S)
        assert not task.done() and done == []  # the callback is still running
        await clock.advance(0.5)
        assert task.done() and len(done) == 1 and "unreadable" in done[0]

    asyncio.run(main())
