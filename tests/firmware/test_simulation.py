"""The simulation rig refuses a real board unless asked to run one in real time (the HIL bench)."""

from __future__ import annotations

import pytest

from firmware.simulation import SimulatedCharger
from hal.clock import RealClock, VirtualClock


def test_a_real_board_is_refused_in_virtual_time() -> None:
    with pytest.raises(ValueError, match="pi-ac is not a simulated board"):
        SimulatedCharger("pi-ac")
    with pytest.raises(ValueError, match="needs real time"):
        SimulatedCharger("pi-ac", allow_real_board=True, clock=VirtualClock())


def test_a_real_board_in_real_time_when_allowed() -> None:
    charger = SimulatedCharger("pi-ac", allow_real_board=True, clock=RealClock())
    assert charger.config.board.name == "pi-ac" and charger.hal is None
