"""On a simulated board the connector sleeps while nothing changes (hal.changes), yet reacts to a change
as fast as its polling loops would, and keeps its meter grid and its timers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from firmware.connector import CHECKPOINT_PERIOD, METER_PERIOD
from firmware.iec61851.pilot import duty_for_current
from firmware.iec61851.timing import PILOT_DEBOUNCE_POWER_DOWN, PILOT_SAMPLE_PERIOD, T_PWM_MIN_UPDATE_INTERVAL
from firmware.limits import Limit
from firmware.simulation import SimulatedCharger
from tests.firmware.connector_rig import charge, charger, unplug, wait_until

#: A polling pilot loop converts 25 ADC samples every 10 ms: 150 000 in a minute.
POLLED_CONVERSIONS_PER_MINUTE = 60 / PILOT_SAMPLE_PERIOD * 25


def test_a_steady_charge_sleeps_but_meters_every_second_and_reacts_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            await charge(rig, amps=16.0)
            await rig.advance(2.0)
            conversions, t0 = rig.adc.conversions, rig.now
            before = rig.journal.last_meter(1)
            await rig.advance(60.0)
            assert rig.adc.conversions - conversions < POLLED_CONVERSIONS_PER_MINUTE / 1000
            readings = [e["t"] for e in rig.meter_events(t0)]
            assert len(readings) == round(60 / METER_PERIOD)  # the meter grid does not sleep
            stored = rig.journal.last_meter(1)  # nor does the journal checkpoint
            assert stored is not None and (before is None or stored.import_wh > before.import_wh)
            assert rig.import_wh() - stored.import_wh <= 16 * 230 * (CHECKPOINT_PERIOD + METER_PERIOD) / 3600

            t = await unplug(rig)
            t_open = await wait_until(rig, lambda: not rig.coil(), 1.0, "coil off after unplug")
            assert t_open - t <= PILOT_DEBOUNCE_POWER_DOWN + PILOT_SAMPLE_PERIOD

    asyncio.run(scenario())


def test_a_deferred_duty_increase_happens_at_its_deadline_while_asleep(tmp_path: Path) -> None:
    """A raised limit may only raise the duty 5 s after the last change: the sleeping loops wake for it."""

    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            await charge(rig, amps=32.0)
            full = rig.pilot()
            rig.connector.set_limit(Limit("ems", 10.0))
            await rig.advance(0.1)
            t_low, _, low = rig.pilot_changes()[-1]
            assert low == duty_for_current(10.0)
            rig.connector.clear_limit("ems")
            t_up = await wait_until(rig, lambda: rig.pilot() == full, 6.0, "full offer again")
            assert t_low + T_PWM_MIN_UPDATE_INTERVAL <= t_up <= t_low + T_PWM_MIN_UPDATE_INTERVAL + 0.05

    asyncio.run(scenario())


def test_a_board_with_a_coprocessor_is_polled() -> None:
    """Readings that arrive over a serial link tell nobody: such a board gets no change signal."""

    async def scenario() -> None:
        sim = SimulatedCharger("sim-dc-bidi")
        hal = await sim.open_hal()
        try:
            assert hal.mcu is not None and hal.changes is None
        finally:
            await sim.run_until_done(hal.close())

    asyncio.run(scenario())
