"""Fixtures shared by the GPIO driver tests: a fresh mock pin factory, a virtual clock, a plant and
the wiring between them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hal.buses import gpio_pin_factory
from hal.clock import VirtualClock
from hal.sim.gpio_wiring import GpioWiring
from hal.sim.plant import Plant


@pytest.fixture
def factory() -> Iterator[Any]:
    f = gpio_pin_factory("mock")
    yield f
    f.close()
    f.reset()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def plant() -> Plant:
    return Plant()


@pytest.fixture
def wiring(plant: Plant, factory: Any, clock: VirtualClock) -> GpioWiring:
    return GpioWiring(plant, factory, clock)
