"""The site controller's V2B path (virtual clock, simulated sim-ac chargers): the signed share reaches a
per-connector setpoint, a negative one becomes a current bound only where the session carries the sign,
the EV's state of charge reaches the manager's discharge floor, and stale data means no discharge."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from firmware import limits as sources
from firmware.connector import Connector, ConnectorSettings
from firmware.energy.manager import ConnectorSpec, EnergyManager, SiteConfig
from firmware.energy.site_controller import SHARE_LIFETIME_CYCLES, SiteController
from firmware.simulation import SimulatedCharger
from hal.clock import VirtualClock

V = 230.0
GRID_W = 20_000.0
BUILDING_W = 30_000.0  # 10 kW above the grid limit: the EV must give 10 kW back


@contextlib.asynccontextmanager
async def one_charger(tmp_path: Path) -> AsyncIterator[tuple[VirtualClock, SimulatedCharger, Connector]]:
    clock = VirtualClock()
    charger = SimulatedCharger(
        "sim-ac",
        journal_path=tmp_path / "j.db",
        settings=ConnectorSettings(free_charging=True, fallback_a=6.0),
        clock=clock,
    )
    try:
        await charger.start()
        assert charger.connector is not None
        charger.plant.pp_ohm, charger.plant.ev_state = 220.0, "C"  # plugged in, authorised (free)
        await clock.advance(2.0)
        yield clock, charger, charger.connector
    finally:
        await charger.close()


def controller(
    clock: VirtualClock,
    connector: Connector,
    *,
    soc: Callable[[int, float], float | None] | None,
    carries_sign: bool,
    floor: float | None = 40.0,
    authorise: bool = True,
) -> SiteController:
    cfg = SiteConfig(grid_import_max_w=GRID_W, hold_s=0.0, min_pause_s=0.0)
    manager = EnergyManager(cfg, {1: ConnectorSpec(1, "board1", 3, V, bidirectional=True)})
    if authorise:
        manager.authorise_discharge(1, 11_000.0)
    return SiteController(
        manager,
        {1: connector},
        clock=clock,
        site_meter=lambda: BUILDING_W,
        soc=soc,
        bidirectional=lambda key: carries_sign,
        discharge_floor=lambda key: floor,
    )


def site_amps(connector: Connector, now: float) -> float | None:
    limit = connector.limits.get(sources.SITE)
    return limit.current_a if limit is not None and (limit.expires_at is None or limit.expires_at > now) else None


@pytest.mark.parametrize(
    ("soc", "carries_sign", "floor", "authorise", "manager_w", "share_w", "amps"),
    [
        # Above its floor, authorised, a BPT session: 10 kW back; the limit bounds |I| (10 kW / 690 W/A).
        pytest.param(55.0, True, 40.0, True, -10_000.0, -10_000.0, 14.4, id="discharges"),
        # The session cannot carry a sign (AC only, PWM): never a charge offer for a discharge share.
        pytest.param(55.0, False, 40.0, True, -10_000.0, 0.0, 0.0, id="no-sign-no-discharge"),
        pytest.param(40.0, True, 40.0, True, 0.0, 0.0, 0.0, id="at-its-floor"),
        pytest.param(None, True, 40.0, True, 0.0, 0.0, 0.0, id="soc-unknown-with-a-floor"),
        pytest.param(None, True, None, True, -10_000.0, -10_000.0, 14.4, id="no-floor-set"),
        pytest.param(55.0, True, 40.0, False, 0.0, 0.0, 0.0, id="not-authorised"),
    ],
)
def test_the_signed_share_reaches_the_setpoint_within_floor_and_authorisation(
    tmp_path: Path,
    soc: float | None,
    carries_sign: bool,
    floor: float | None,
    authorise: bool,
    manager_w: float,
    share_w: float,
    amps: float,
) -> None:
    async def main() -> None:
        async with asyncio.timeout(30), one_charger(tmp_path) as (clock, _, connector):
            seen: list[tuple[int, float]] = []

            def ev_soc(key: int, now: float) -> float | None:
                seen.append((key, now))
                return soc

            control = controller(
                clock, connector, soc=ev_soc, carries_sign=carries_sign, floor=floor, authorise=authorise
            )
            assert control.setpoint(1) is None  # before the first cycle: nothing in force
            result = control.step()
            assert seen and seen[-1] == (1, clock.monotonic())  # asked each cycle, at the cycle's time
            assert result.connectors[1].power_w == pytest.approx(manager_w)
            assert control.setpoint(1) == pytest.approx(share_w)
            assert site_amps(connector, clock.monotonic()) == pytest.approx(amps)

    asyncio.run(main())


def test_a_stalled_manager_leaves_no_discharge_setpoint(tmp_path: Path) -> None:
    async def main() -> None:
        async with asyncio.timeout(30), one_charger(tmp_path) as (clock, _, connector):
            control = controller(clock, connector, soc=lambda key, now: 55.0, carries_sign=True)
            control.step()
            assert control.setpoint(1) == pytest.approx(-10_000.0)
            await clock.advance(SHARE_LIFETIME_CYCLES * control.manager.site.period_s + 0.1)
            assert control.setpoint(1) is None  # expired with its limit: the port falls back to charge-only
            assert control.setpoint(2) is None  # a connector it does not run

    asyncio.run(main())


def test_a_failing_soc_source_is_an_unknown_soc(tmp_path: Path) -> None:
    def broken(key: int, now: float) -> float | None:
        raise RuntimeError("port gone")

    async def main() -> None:
        async with asyncio.timeout(30), one_charger(tmp_path) as (clock, _, connector):
            for soc in (broken, lambda key, now: float("nan"), lambda key, now: 150.0):
                control = controller(clock, connector, soc=soc, carries_sign=True)
                assert control.step().connectors[1].power_w == 0.0  # floor set, SoC unknown: no discharge

    asyncio.run(main())
