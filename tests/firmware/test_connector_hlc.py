"""The connector under high-level communication (ISO 15118 / DIN 70121): 5 % duty, the contactor
closes only after the session's PowerDelivery and opens after its Stop; judged on the wires."""

from __future__ import annotations

import asyncio
from pathlib import Path

from firmware.limits import OCPP, Limit
from hal.types import PilotMode
from tests.firmware.connector_rig import charger, plug, wait_state, wait_until


def test_the_contactor_follows_the_sessions_power_delivery(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            rig.connector.set_hlc(True)
            await plug(rig, "B")
            await wait_until(rig, lambda: rig.pilot() == (PilotMode.PWM, 50), 1.0, "5 % duty")
            rig.load.demand_a, rig.load.obeys_offer = 16.0, False  # the EV follows its session, not the duty
            rig.plant.ev_state = "C"
            await wait_state(rig, "C2", 1.0)
            await rig.advance(5.0)
            assert not rig.coil(), "closed in C2 before the session's PowerDelivery"
            assert rig.connector.why().endswith("ISO 15118: waiting for the session's PowerDelivery")
            t_start = rig.now
            rig.connector.hlc_power(True)
            await wait_until(rig, rig.coil, 0.5, "closed after PowerDelivery(Start)")
            assert rig.coil_closed_at(t_start) is not None
            await rig.advance(2.0)
            t_stop = rig.now
            rig.connector.hlc_power(False)
            rig.load.demand_a = 0.0  # the EV stops drawing at PowerDelivery(Stop)
            await wait_until(rig, lambda: not rig.coil(), 2.0, "open once the EV stopped drawing")
            assert rig.pilot() == (PilotMode.PWM, 50), "the session goes on: the pilot stays at 5 %"
            assert rig.coil_opened_at(t_stop) is not None

    asyncio.run(scenario())


def test_under_hlc_the_overcurrent_check_uses_the_sessions_limit(tmp_path: Path) -> None:
    """An EV drawing within the limit chain for longer than the 7 s soft window is fine; above it, the
    soft overcurrent fault stops it as in basic charging."""

    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            rig.connector.set_hlc(True)
            await plug(rig, "B")
            rig.load.demand_a, rig.load.obeys_offer = 16.0, False
            rig.plant.ev_state = "C"
            await wait_state(rig, "C2", 1.0)
            rig.connector.hlc_power(True)
            await wait_until(rig, rig.coil, 0.5, "closed after PowerDelivery(Start)")
            await rig.advance(20.0)
            assert "overcurrent_soft" not in {c.value for c in rig.connector.supervisor.active}
            assert rig.coil()
            rig.connector.set_limit(Limit(OCPP, 8.0))  # the session's maximum drops; the EV ignores it
            t = rig.now
            raised = await wait_until(rig, lambda: rig.raised_at("overcurrent_soft", t) is not None, 12.0, "fault")
            assert raised - t >= 6.0

    asyncio.run(scenario())
