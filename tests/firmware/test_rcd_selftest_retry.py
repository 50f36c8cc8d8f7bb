"""A failed RCD self-test at boot blocks charging, and is retried every 300 s (at most 6 times)
while no EV is connected; a passing retry clears the fault."""

from __future__ import annotations

import asyncio

import pytest

import firmware.connector
from firmware.connector import RCD_SELFTEST_RETRIES, RCD_SELFTEST_RETRY_PERIOD, ConnectorSettings
from firmware.safety.faults import FaultCode
from firmware.simulation import SimulatedCharger
from hal.sim.gpio_wiring import RcdWiring


def _rcd_wiring(rig: SimulatedCharger) -> RcdWiring:
    assert rig.hal is not None and rig.hal.sim is not None
    return next(p for p in rig.hal.sim.wiring.parts if isinstance(p, RcdWiring))


#: The retry period is shortened in these tests so that they run in seconds; its value is checked here.
SHORT_PERIOD = 10.0


@pytest.fixture(autouse=True)
def short_retry_period(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(firmware.connector, "RCD_SELFTEST_RETRY_PERIOD", SHORT_PERIOD)


def test_retry_constants_follow_openevse() -> None:
    assert (RCD_SELFTEST_RETRY_PERIOD, RCD_SELFTEST_RETRIES) == (300.0, 6)


def test_failed_selftest_blocks_charging_and_a_passing_retry_clears_it() -> None:
    async def scenario() -> list[tuple[float, bool, str]]:
        rig = SimulatedCharger("sim-ac", settings=ConnectorSettings(free_charging=True))
        await rig.open_hal()
        wiring = _rcd_wiring(rig)
        wiring.test_winding_broken = True
        connector = await rig.boot()
        seen = []
        try:
            assert FaultCode.RCD_SELFTEST_FAILED in connector.supervisor.active
            rig.plant.ev_state, rig.plant.pp_ohm = "B", 220.0
            await rig.advance(2.0)
            seen.append((rig.clock.monotonic(), connector.status().pilot_mode == "pwm", connector.machine.state))
            rig.plant.ev_state = "A"  # retries only run with no EV connected
            wiring.test_winding_broken = False  # repaired
            await rig.advance(SHORT_PERIOD + 5.0)
            assert FaultCode.RCD_SELFTEST_FAILED not in connector.supervisor.active
            rig.plant.ev_state = "B"
            await rig.advance(1.0)
            seen.append((rig.clock.monotonic(), connector.status().pilot_mode == "pwm", connector.machine.state))
        finally:
            await rig.close()
        return seen

    (_, offered_before, state_before), (_, offered_after, state_after) = asyncio.run(scenario())
    assert not offered_before and state_before == "B1"
    assert offered_after and state_after == "B2"


def test_retries_stop_after_six() -> None:
    async def scenario() -> int:
        rig = SimulatedCharger("sim-ac", settings=ConnectorSettings(free_charging=True))
        await rig.open_hal()
        wiring = _rcd_wiring(rig)
        wiring.test_winding_broken = True
        connector = await rig.boot()
        tests = 0
        original = connector.hal.rcd.self_test

        async def counting() -> bool:
            nonlocal tests
            tests += 1
            return await original()

        connector.hal.rcd.self_test = counting  # type: ignore[method-assign]
        try:
            await rig.advance(SHORT_PERIOD * (RCD_SELFTEST_RETRIES + 3))
            assert FaultCode.RCD_SELFTEST_FAILED in connector.supervisor.active
        finally:
            await rig.close()
        return tests

    assert asyncio.run(scenario()) == RCD_SELFTEST_RETRIES
