"""OCPP and 1/3-phase switching: the read-only ConnectorSwitch3to1PhaseSupported key follows the board,
and a charging profile in W is applied as amps on the phases that carry the current, recomputed when
the connector switches (numberPhases = 1 on three live phases must not triple the power)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from firmware.limits import OCPP
from tests.firmware.ocpp.station_rig import station_rig


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("board", "expected"), [("sim-ac-1p3p", "true"), ("sim-ac", "false")])
def test_the_switch_key_follows_the_board(tmp_path: Path, board: str, expected: str) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, board=board) as rig:
            answer = await rig.call("GetConfiguration", {"key": ["ConnectorSwitch3to1PhaseSupported"]})
            [key] = answer["configurationKey"]
            assert (key["value"], key["readonly"]) == (expected, True)

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_watt_profile_is_applied_on_the_live_phases_and_follows_a_switch(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, board="sim-ac-1p3p") as rig:
            await rig.advance(2.0)
            profile: dict[str, Any] = {
                "chargingProfileId": 3,
                "stackLevel": 0,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Relative",
                "chargingSchedule": {
                    "chargingRateUnit": "W",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 4140.0, "numberPhases": 1}],
                },
            }
            answer = await rig.call("SetChargingProfile", {"connectorId": 1, "csChargingProfiles": profile})
            assert answer["status"] == "Accepted"
            await rig.advance(1.0)

            def ocpp_a() -> float:
                limit = rig.connector.limits.get(OCPP)
                assert limit is not None
                return limit.current_a

            assert rig.connector.phases_active == 3
            assert ocpp_a() == pytest.approx(6.0)  # 4140 W on three live phases, not 18 A on each
            rig.connector.request_phases(1)
            await rig.advance(1.0)
            assert rig.connector.phases_active == 1
            assert ocpp_a() == pytest.approx(18.0)  # the same 4140 W on one phase

    asyncio.run(scenario())
