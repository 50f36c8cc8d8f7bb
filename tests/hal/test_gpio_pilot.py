"""GpioPilotOutput on gpiozero's mock PWM pins, followed by the plant wiring."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal.buses import gpio_pin_factory
from hal.drivers.gpio_io import GpioContactor
from hal.drivers.gpio_pilot import HARDWARE_PWM_PINS, GpioPilotOutput
from hal.errors import DeviceNotFound, UnsupportedOperation
from hal.interfaces import PilotOutput
from hal.sim.gpio_wiring import GpioWiring, PilotWiring
from hal.sim.plant import Plant
from hal.types import PILOT_PWM_FREQUENCY_HZ, PilotMode

PWM_PIN = 18
E_PIN = 5


def _fresh_factory() -> Any:
    return gpio_pin_factory("mock")


def _dispose(factory: Any) -> None:
    factory.close()
    factory.reset()


@pytest.fixture
def factory() -> Iterator[Any]:
    f = _fresh_factory()
    yield f
    _dispose(f)


def _levels(pin: Any) -> list[float]:
    return [float(s.state) for s in pin.states]


def _wired(factory: Any, **pilot_kwargs: Any) -> tuple[GpioPilotOutput, Plant, GpioWiring, PilotWiring]:
    plant = Plant()
    wiring = GpioWiring(plant, factory, clock=_NoClock())
    part = wiring.pilot(pwm_pin=PWM_PIN, e_pin=pilot_kwargs.get("e_pin"))
    pilot = GpioPilotOutput("cp0", pwm_pin=PWM_PIN, pin_factory=factory, **pilot_kwargs)
    return pilot, plant, wiring, part


class _NoClock:
    """The pilot wiring has no delays; a fixed time is enough."""

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - never awaited here
        raise AssertionError("not used")


def test_implements_the_pilot_protocol(factory: Any) -> None:
    assert isinstance(GpioPilotOutput("cp0", pwm_pin=PWM_PIN, pin_factory=factory), PilotOutput)


def test_starts_in_f_with_a_1khz_carrier(factory: Any) -> None:
    pilot, plant, wiring, part = _wired(factory)
    wiring.update()
    pin = factory.pin(PWM_PIN)
    assert pilot.mode is PilotMode.F and pilot.duty_permille == 0
    assert pin.function == "output" and pin.state == 0.0
    assert pin.frequency == PILOT_PWM_FREQUENCY_HZ == 1000
    assert _levels(pin) == [0.0]  # never went high on the way up
    assert plant.pilot.mode is PilotMode.F and part.frequency_hz == 1000


def test_pwm_x1_f_levels_on_the_pin(factory: Any) -> None:
    pilot, plant, wiring, _ = _wired(factory)
    pin = factory.pin(PWM_PIN)

    async def scenario() -> list[tuple[PilotMode, float]]:
        seen = []
        for step in (pilot.set_pwm(50), pilot.set_pwm(267), pilot.set_x1(), pilot.set_pwm(533), pilot.set_f()):
            await step
            wiring.update()
            seen.append((plant.pilot.mode, plant.pilot.duty))
        return seen

    seen = asyncio.run(scenario())
    assert _levels(pin) == [0.0, 0.05, 0.267, 1.0, 0.533, 0.0]
    assert pin.frequency == 1000  # the carrier never changes, only the duty
    assert seen == [
        (PilotMode.PWM, 0.05),
        (PilotMode.PWM, 0.267),
        (PilotMode.X1, 1.0),
        (PilotMode.PWM, 0.533),
        (PilotMode.F, 0.0),
    ]
    assert pilot.mode is PilotMode.F


def test_duty_and_mode_properties_follow_commands(factory: Any) -> None:
    pilot = GpioPilotOutput("cp0", pwm_pin=PWM_PIN, pin_factory=factory)
    asyncio.run(pilot.set_pwm(100))
    assert (pilot.mode, pilot.duty_permille) == (PilotMode.PWM, 100)
    asyncio.run(pilot.set_x1())
    assert (pilot.mode, pilot.duty_permille) == (PilotMode.X1, 1000)
    asyncio.run(pilot.set_f())
    assert (pilot.mode, pilot.duty_permille) == (PilotMode.F, 0)


@pytest.mark.parametrize("duty", [0, 1000, -1, 1001, 500.0, 0.5, True, "500", None])
def test_invalid_duty_is_rejected_and_changes_nothing(factory: Any, duty: Any) -> None:
    pilot = GpioPilotOutput("cp0", pwm_pin=PWM_PIN, pin_factory=factory)
    asyncio.run(pilot.set_pwm(300))
    pin = factory.pin(PWM_PIN)
    with pytest.raises(ValueError, match=r"cp0: PWM duty must be an integer 1\.\.999"):
        asyncio.run(pilot.set_pwm(duty))
    assert pin.state == 0.3
    assert (pilot.mode, pilot.duty_permille) == (PilotMode.PWM, 300)


@pytest.mark.parametrize("duty", [1, 999])
def test_duty_limits_are_accepted(factory: Any, duty: int) -> None:
    pilot = GpioPilotOutput("cp0", pwm_pin=PWM_PIN, pin_factory=factory)
    asyncio.run(pilot.set_pwm(duty))
    assert factory.pin(PWM_PIN).state == duty / 1000


@pytest.mark.parametrize("pin", [4, 17, 0, 27, 40, "18", "GPIO18", 18.0, True])
def test_only_hardware_pwm_pins_are_accepted(factory: Any, pin: Any) -> None:
    with pytest.raises(ValueError, match="cp0: pilot PWM must be on a hardware PWM pin"):
        GpioPilotOutput("cp0", pwm_pin=pin, pin_factory=factory)


@pytest.mark.parametrize("pin", sorted(HARDWARE_PWM_PINS))
def test_each_hardware_pwm_pin_works(factory: Any, pin: int) -> None:
    pilot = GpioPilotOutput("cp0", pwm_pin=pin, pin_factory=factory)
    asyncio.run(pilot.set_pwm(100))
    assert factory.pin(pin).state == 0.1 and factory.pin(pin).frequency == 1000


def test_state_e_unsupported_without_clamp(factory: Any) -> None:
    pilot = GpioPilotOutput("cp0", pwm_pin=PWM_PIN, pin_factory=factory)
    assert pilot.supports_state_e is False
    asyncio.run(pilot.set_pwm(100))
    with pytest.raises(UnsupportedOperation, match="cp0: state E") as info:
        asyncio.run(pilot.set_e())
    assert info.value.device == "cp0"
    assert (pilot.mode, factory.pin(PWM_PIN).state) == (PilotMode.PWM, 0.1)


def test_state_e_with_clamp(factory: Any) -> None:
    pilot, plant, wiring, _ = _wired(factory, e_pin=E_PIN)
    clamp = factory.pin(E_PIN)
    pwm = factory.pin(PWM_PIN)
    assert pilot.supports_state_e is True
    assert clamp.state == 0  # clamp released at start

    asyncio.run(pilot.set_x1())
    asyncio.run(pilot.set_e())
    wiring.update()
    assert (pilot.mode, pilot.duty_permille) == (PilotMode.E, 0)
    assert clamp.state == 1 and pwm.state == 0.0  # generator parked in F under the clamp
    assert plant.pilot.mode is PilotMode.E
    assert plant.cp_voltage(0.0) == 0.0

    asyncio.run(pilot.set_pwm(50))
    wiring.update()
    assert clamp.state == 0 and pwm.state == 0.05
    assert (plant.pilot.mode, plant.pilot.duty) == (PilotMode.PWM, 0.05)


def test_clamp_pin_must_differ_from_pwm_pin(factory: Any) -> None:
    with pytest.raises(ValueError, match="own pin"):
        GpioPilotOutput("cp0", pwm_pin=PWM_PIN, e_pin=PWM_PIN, pin_factory=factory)


def test_close_leaves_the_pilot_in_f_and_frees_the_pins(factory: Any) -> None:
    pilot, plant, wiring, part = _wired(factory, e_pin=E_PIN)
    asyncio.run(pilot.set_x1())
    wiring.update()
    assert plant.pilot.mode is PilotMode.X1

    pilot.close()
    pilot.close()  # idempotent
    wiring.update()
    pwm = factory.pin(PWM_PIN)
    assert pwm.state == 0.0 and pwm.function == "input"
    assert factory.pin(E_PIN).state == 0
    assert plant.pilot.mode is PilotMode.F and part.frequency_hz is None
    assert pilot.mode is PilotMode.F and pilot.frequency_hz is None
    with pytest.raises(DeviceNotFound, match="cp0: driver closed"):
        asyncio.run(pilot.set_x1())
    # Both pins are free again for a new driver.
    GpioPilotOutput("cp1", pwm_pin=PWM_PIN, e_pin=E_PIN, pin_factory=factory)


def test_close_from_e_releases_clamp_into_f(factory: Any) -> None:
    pilot, plant, wiring, _ = _wired(factory, e_pin=E_PIN)
    asyncio.run(pilot.set_e())
    pilot.close()
    wiring.update()
    assert plant.pilot.mode is PilotMode.F


def test_pin_in_use_is_reported_with_device_and_pin(factory: Any) -> None:
    holder = GpioContactor("k1", coil_pin=PWM_PIN, pin_factory=factory)
    with pytest.raises(DeviceNotFound, match="cp0: cannot claim GPIO18 for the pilot PWM") as info:
        GpioPilotOutput("cp0", pwm_pin=PWM_PIN, pin_factory=factory)
    assert info.value.device == "cp0"
    holder.release()


def test_failed_clamp_claim_frees_the_pwm_pin(factory: Any) -> None:
    holder = GpioContactor("k1", coil_pin=E_PIN, pin_factory=factory)  # keep a reference: gpiozero
    # reservations are weak, a dropped device frees its pin
    with pytest.raises(DeviceNotFound, match="GPIO5 for the pilot state-E clamp") as info:
        GpioPilotOutput("cp0", pwm_pin=PWM_PIN, e_pin=E_PIN, pin_factory=factory)
    # ``info`` keeps the half-built driver alive through its traceback, so the PWM pin is free only
    # because the constructor closed it, not because the garbage collector did.
    assert info.value.device == "cp0"
    assert factory.pin(PWM_PIN).function == "input"
    GpioPilotOutput("cp1", pwm_pin=PWM_PIN, pin_factory=factory)
    assert holder.commanded_closed is False


@settings(max_examples=200, deadline=None)
@given(duty=st.integers(min_value=1, max_value=999))
def test_property_pin_value_is_exactly_duty_over_1000(duty: int) -> None:
    f = _fresh_factory()
    try:
        pilot, plant, wiring, part = _wired(f)
        asyncio.run(pilot.set_pwm(duty))
        wiring.update()
        pin = f.pin(PWM_PIN)
        assert pin.state == duty / 1000
        assert pin.frequency == PILOT_PWM_FREQUENCY_HZ
        assert plant.pilot.mode is PilotMode.PWM
        assert plant.pilot.duty == duty / 1000
        assert part.duty_permille == duty == pilot.duty_permille
    finally:
        _dispose(f)
