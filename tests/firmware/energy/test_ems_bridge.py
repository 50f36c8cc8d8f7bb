"""The EMS bridge: what the EMS sends becomes the manager's inputs, with the charger running on the
simulated board in virtual time, and what the EMS reads back is the manager's view."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from firmware.connector import ConnectorSettings
from firmware.energy.ems_bridge import EmsBridge
from firmware.energy.ems_port import ConnectorState, UserPreferences
from firmware.energy.manager import ConnectorSpec, EnergyManager, SiteConfig
from firmware.energy.site_controller import SiteController
from firmware.iec61851.pilot import current_for_duty
from firmware.simulation import SimulatedCharger

WALL0 = 1_800_000_000.0


@pytest.mark.timeout(60)
def test_ems_commands_steer_the_charger_and_the_snapshot_tells_why(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with SimulatedCharger(
            "sim-ac", journal_path=tmp_path / "j.db", settings=ConnectorSettings(free_charging=True)
        ) as sim:
            connector = sim.connector
            assert connector is not None
            clock = sim.clock
            manager = EnergyManager(
                SiteConfig(grid_import_max_w=22_000, ems_fallback_import_w=10_000, hold_s=0, min_pause_s=0),
                {1: ConnectorSpec(1, "sim-ac", 3, 230.0)},
            )
            bridge = EmsBridge(manager, {1: connector}, clock=clock, wall_clock=lambda: WALL0 + clock.monotonic())
            control = SiteController(
                manager, {1: connector}, clock=clock, site_meter=bridge.take_site_reading, needs=bridge.needs
            )
            task = asyncio.create_task(control.run())
            try:
                sim.plant.pp_ohm, sim.plant.ev_state = 220.0, "C"

                def offer() -> float:
                    status = connector.status()
                    return current_for_duty(status.duty_permille) if status.pilot_mode == "pwm" else 0.0

                def ev_follows() -> None:
                    sim.plant.ev_current_a = [offer() if sim.plant.contacts_closed else 0.0] * 3

                async def run_for(seconds: int, building_w: float) -> None:
                    for _ in range(seconds):
                        ev_follows()
                        draw = sum(sim.plant.power_w()) if sim.plant.contacts_closed else 0.0
                        bridge.site_measurement(power_w=building_w + draw, source="test", now=clock.monotonic())
                        await clock.advance(1.0)

                # The EMS limits the site to 12 kW with 5 kW of other loads: 7 kW for the EV (10.1 A).
                bridge.set_site_limit(
                    import_max_w=12_000, export_max_w=None, expires_at=clock.monotonic() + 30, source="ems:test"
                )
                await run_for(10, 5_000)
                assert 9.5 <= offer() <= 10.2
                snap = bridge.snapshot()
                assert snap.import_limit_w == 12_000 and snap.limit_source == "ems" and not snap.fallback
                assert snap.site_power_w is not None and snap.site_power_w <= 12_000 + 1
                [c1] = snap.connectors
                assert c1.state is ConnectorState.CHARGING and c1.limit_source in ("ems", "hardware")

                # The EMS goes silent: after its setpoint's validity, the static 10 kW (R142): 5 kW, 7.2 A.
                await run_for(30, 5_000)
                snap = bridge.snapshot()
                assert snap.fallback and snap.import_limit_w == 10_000
                assert 6.8 <= offer() <= 7.3

                # A connector setpoint of 4.5 kW caps the EV below the site budget; cleared, it is gone.
                bridge.set_connector_setpoint(1, power_w=4_500, expires_at=None, source="ems:test")
                bridge.set_site_limit(import_max_w=30_000, export_max_w=None, expires_at=None, source="ems:test")
                await run_for(5, 5_000)
                assert 6.0 <= offer() <= 6.6 and bridge.snapshot().connector(1).setpoint_w == 4_500  # type: ignore[union-attr]
                bridge.set_connector_setpoint(1, power_w=None, expires_at=None, source="ems:test")
                await run_for(5, 5_000)
                assert offer() > 20

                # The user's preferences: 0.5 kWh at most for this session: the cap pauses the connector.
                bridge.set_preferences(1, UserPreferences(max_energy_wh=0.5))
                await run_for(40, 5_000)
                assert offer() == 0.0

                with pytest.raises(ValueError, match="no connector 2"):
                    bridge.set_connector_setpoint(2, power_w=1_000, expires_at=None, source="ems:test")
                with pytest.raises(ValueError, match="not a power"):
                    bridge.site_measurement(power_w=math.nan, source="ems:test", now=0.0)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

    asyncio.run(scenario())
