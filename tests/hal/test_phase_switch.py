"""The 1/3-phase contactor driver on gpiozero mock pins, with the simulated C2 contacts and mirror."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hal.clock import VirtualClock
from hal.drivers.phase_switch import GpioPhaseSwitch
from hal.errors import DeviceNotFound
from hal.interfaces import PhaseSwitch
from hal.sim.gpio_wiring import GpioWiring
from hal.sim.plant import Plant

COIL, MIRROR = 25, 26


def _settle(clock: VirtualClock, wiring: GpioWiring, seconds: float) -> None:
    """The wiring sees the command now, then ``seconds`` pass."""
    wiring.update()
    asyncio.run(clock.advance(seconds))
    wiring.update()


def test_energised_is_three_phases_released_is_one(
    factory: Any, clock: VirtualClock, plant: Plant, wiring: GpioWiring
) -> None:
    wiring.phase_switch(coil_pin=COIL, mirror_pin=MIRROR)
    switch = GpioPhaseSwitch("phase switch", coil_pin=COIL, mirror_pin=MIRROR, pin_factory=factory)
    assert isinstance(switch, PhaseSwitch)
    wiring.update()
    assert switch.phases_commanded == 1 and asyncio.run(switch.feedback_phases()) == 1 and plant.live_phases == 1
    asyncio.run(switch.set_phases(3))
    assert factory.pin(COIL).state == 1 and switch.phases_commanded == 3
    wiring.update()
    assert asyncio.run(switch.feedback_phases()) == 1, "the contacts are still travelling"
    _settle(clock, wiring, 0.05)
    assert asyncio.run(switch.feedback_phases()) == 3 and plant.live_phases == 3
    asyncio.run(switch.set_phases(1))
    _settle(clock, wiring, 0.05)
    assert asyncio.run(switch.feedback_phases()) == 1 and plant.live_phases == 1


def test_stuck_contacts_show_on_the_mirror(factory: Any, clock: VirtualClock, plant: Plant, wiring: GpioWiring) -> None:
    wiring.phase_switch(coil_pin=COIL, mirror_pin=MIRROR)
    switch = GpioPhaseSwitch("phase switch", coil_pin=COIL, mirror_pin=MIRROR, pin_factory=factory)
    plant.phase_switch_stuck = True
    asyncio.run(switch.set_phases(3))
    _settle(clock, wiring, 1.0)
    assert switch.phases_commanded == 3 and asyncio.run(switch.feedback_phases()) == 1 and plant.live_phases == 1


@pytest.mark.parametrize("bad", [0, 2, 4])
def test_only_one_or_three_phases(factory: Any, bad: int) -> None:
    switch = GpioPhaseSwitch("phase switch", coil_pin=COIL, pin_factory=factory)
    with pytest.raises(ValueError, match="phase switch: phases must be 1 or 3"):
        asyncio.run(switch.set_phases(bad))
    assert switch.phases_commanded == 1


def test_without_a_mirror_there_is_no_feedback_and_release_leaves_one_phase(factory: Any) -> None:
    switch = GpioPhaseSwitch("phase switch", coil_pin=COIL, pin_factory=factory)
    assert switch.has_feedback is False and asyncio.run(switch.feedback_phases()) is None
    asyncio.run(switch.set_phases(3))
    switch.release()
    assert factory.pin(COIL).state == 0
    with pytest.raises(DeviceNotFound, match="phase switch"):
        asyncio.run(switch.set_phases(3))
