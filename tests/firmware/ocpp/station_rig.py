"""A simulated charger with its OCPP uplink and our embedded CSMS, on one virtual clock.

The station talks to the CSMS over an in-process MemoryLink, so a test runs hours of charger time in
milliseconds and deterministically. The `ocpp` package validates messages in a thread pool unless
told not to, which would let virtual time run on during a check: the rig switches that off.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ocpp.messages

from firmware.connector import Connector, ConnectorSettings
from firmware.metering.billing import Tariff
from firmware.ocpp.link import Link, MemoryLink, memory_link_pair
from firmware.ocpp.station import OcppStation, StationSettings
from firmware.ocpp.transport import TransportError
from firmware.ocpp.uplink import build_station
from firmware.simulation import SimulatedCharger
from hil.csms import CsmsEvent, CsmsPolicy, EmbeddedCsms

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
STATION = "CP1"


@dataclass
class StationRig:
    sim: SimulatedCharger
    csms: EmbeddedCsms
    station: OcppStation
    protocol: str
    links: list[MemoryLink] = field(default_factory=list)
    reachable: bool = True
    refused: bool = False  # the CSMS refuses us for good (as HTTP 401 would)
    resets: list[str] = field(default_factory=list)
    ocpp_events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def connector(self) -> Connector:
        assert self.sim.connector is not None
        return self.sim.connector

    @property
    def now(self) -> float:
        return self.sim.clock.monotonic()

    async def advance(self, seconds: float) -> None:
        await self.sim.advance(seconds)

    async def run(self, awaitable: Any) -> Any:
        return await self.sim.run_until_done(awaitable)

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.run(self.csms.call(STATION, action, payload))
        return result

    def calls(self, action: str | None = None, since: float = -1.0) -> list[CsmsEvent]:
        """Calls the station sent, in order."""
        return [
            e
            for e in self.csms.events
            if e.dir == "rx" and e.kind == "call" and (action is None or e.action == action) and e.t >= since
        ]

    def statuses(self, since: float = -1.0) -> list[str]:
        return [str(e.payload.get("status")) for e in self.calls("StatusNotification", since)]

    async def plug(self, state: str = "B") -> None:
        self.sim.plant.pp_ohm = 220.0  # 32 A cable
        self.sim.plant.ev_state = state

    async def draw(self, amps: float) -> None:
        self.sim.plant.ev_current_a = [amps, amps, amps]

    async def unplug(self) -> None:
        self.sim.plant.ev_current_a = [0.0, 0.0, 0.0]
        self.sim.plant.ev_state = "A"
        self.sim.plant.pp_ohm = None

    async def outage(self) -> None:
        """The CSMS becomes unreachable: the link drops and reconnects fail until restore()."""
        self.reachable = False
        await self.run(self.csms.close_station(STATION))

    def restore(self) -> None:
        self.reachable = True


@contextlib.asynccontextmanager
async def station_rig(
    tmp_path: Path,
    *,
    protocol: str = "ocpp1.6",
    policy: CsmsPolicy | None = None,
    config: dict[str, str] | None = None,
    free_charging: bool = False,
    before_start: Callable[[StationRig], None] | None = None,
    ev_at_boot: str | None = None,
    tariff: Tariff | None = None,
    board: str = "sim-ac",
) -> AsyncIterator[StationRig]:
    """``ev_at_boot`` ("B", "C"): an EV is already plugged in when the charger boots (a restart)."""

    def plug_at_boot(plant: Any) -> None:
        if ev_at_boot is not None:
            plant.pp_ohm, plant.ev_state = 220.0, ev_at_boot

    # In-loop validation for the rig's lifetime only: real-time tests elsewhere keep the library default.
    saved, ocpp.messages.ASYNC_VALIDATION = ocpp.messages.ASYNC_VALIDATION, False
    sim = SimulatedCharger(
        board,
        journal_path=tmp_path / "journal.db",
        settings=ConnectorSettings(free_charging=free_charging, tariff=tariff),
        before_start=plug_at_boot,
    )
    await sim.start()
    clock = sim.clock

    def wall() -> datetime:
        return T0 + timedelta(seconds=clock.monotonic())

    csms = EmbeddedCsms(clock=clock, policy=policy, wall_clock=wall)
    rig: StationRig | None = None

    async def link_factory() -> Link:
        assert rig is not None
        if not rig.reachable:
            raise ConnectionError("CSMS unreachable (test outage)")
        if rig.refused:
            raise TransportError("the CSMS refused our credentials (HTTP 401)")
        station_end, csms_end = memory_link_pair()
        rig.links.append(station_end)
        await csms.attach(STATION, csms_end, protocol)  # type: ignore[arg-type]
        return station_end

    version = {"ocpp1.6": "1.6", "ocpp2.0.1": "2.0.1", "ocpp2.1": "2.1"}[protocol]
    resets: list[str] = []

    async def reset_hook(kind: str) -> None:
        resets.append(kind)

    station = build_station(
        StationSettings(STATION, version=version),  # type: ignore[arg-type]
        {1: sim.connector} if sim.connector is not None else {},
        clock=clock,
        data_dir=tmp_path / "data",
        journal_path=tmp_path / "journal.db",
        wall_clock=wall,
        link_factory=link_factory,
        on_ocpp=lambda e: rig.ocpp_events.append(e) if rig is not None else None,
        reset_hook=reset_hook,
        config_defaults=config,
    )
    rig = StationRig(sim, csms, station, protocol, resets=resets)
    if before_start is not None:
        before_start(rig)
    await station.start()
    try:
        await rig.advance(1.0)
        yield rig
    finally:
        await rig.run(station.stop())
        await sim.close()
        await csms.stop()
        ocpp.messages.ASYNC_VALIDATION = saved
