"""Energy per session through the whole chain on the simulated board (plant -> ATM90E32 simulator ->
driver -> plausibility guard -> connector -> journal -> billing record), in virtual time: import and
export are kept apart, match what the plant delivered, and the bill prices both."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from firmware.connector import ConnectorSettings
from firmware.metering.billing import Tariff
from tests.firmware.connector_rig import charge, charger, unplug

TARIFF = Tariff("EUR", energy_per_kwh=Decimal("0.30"), export_credit_per_kwh=Decimal("0.10"), time_per_hour="0.60")


@pytest.mark.timeout(60)
def test_a_session_that_charges_then_discharges_bills_import_and_export_apart(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = ConnectorSettings(free_charging=True, tariff=TARIFF)
        async with charger(tmp_path, settings=settings) as rig:
            await charge(rig, amps=16.0)
            await rig.advance(600.0)
            imported_by_plant = rig.load.energy_wh
            rig.load.demand_a = -10.0  # the EV feeds the grid (V2G): the meter counts export
            await rig.advance(300.0)
            exported_by_plant = imported_by_plant - rig.load.energy_wh
            await unplug(rig)
            await rig.advance(1.0)
            [session] = rig.sessions()
            assert session.stop_reason == "EVDisconnected"
            # The meter's counts against the plant's own integration (1 s grid, 0.003 Wh steps).
            assert session.import_wh == pytest.approx(imported_by_plant, abs=3.0)
            assert session.export_wh == pytest.approx(exported_by_plant, abs=3.0)
            assert session.import_wh > 1800.0 and session.export_wh > 550.0
            bill = session.billing
            assert bill is not None and bill.price is not None and bill.meter_error is None
            assert bill.import_wh == session.import_wh and bill.export_wh == session.export_wh
            assert bill.price == TARIFF.price(session.import_wh, session.export_wh, bill.duration_s)
            assert bill.price.export_credit > 0 and bill.price.total == (
                bill.price.energy + bill.price.time - bill.price.export_credit
            )
            assert bill.duration_s == pytest.approx(session.duration_s, abs=0.001)  # journal time, to the ms

    asyncio.run(scenario())
