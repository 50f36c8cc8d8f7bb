"""``evse run``: the firmware on a board, in real time, until SIGTERM or SIGINT.

Boot order: open the journal (a corrupt one is moved aside and a new one started, never a crash),
open the board with the meter totals resumed from the journal, start the connector (self-test,
reconciliation with the hardware), then the control socket and, on a board with an RFID reader, the
task that hands the cards read to the OCPP station (or, without an uplink, authorises the connector).
Shutdown runs the same way backwards and leaves the hardware safe (contactor open, pilot F).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from board.build import open_board
from board.schema import BoardConfig
from firmware.connector import Connector, ConnectorSettings
from firmware.control import ControlServer
from firmware.journal import Journal
from firmware.ocpp.station import StationSettings
from hal.clock import Clock, RealClock
from hal.errors import HalError
from hal.interfaces import IdReader

if TYPE_CHECKING:
    from firmware.energy.config import EnergyConfig
    from firmware.iso15118.config import SeccConfig
    from firmware.j3072.config import J3072Config

log = logging.getLogger(__name__)

#: Pause after a failed read before the reader is tried again: a dead UART must neither spin the loop
#: nor flood the log, and a reader that comes back is used again within this long.
ID_READER_RETRY_S = 5.0


async def run_firmware(
    cfg: BoardConfig,
    *,
    journal_path: Path,
    control_path: Path,
    settings: ConnectorSettings,
    stop: asyncio.Event | None = None,
    sim_ev_state: str | None = None,
    uplink: StationSettings | None = None,
    data_dir: Path | None = None,
    energy: EnergyConfig | None = None,
    secc: SeccConfig | None = None,
    j3072: J3072Config | None = None,
) -> None:
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    journal, recovered = Journal.open_or_recover(journal_path)
    if recovered is not None:
        log.error("journal %s was unreadable; moved to %s and started a new one", journal_path, recovered)
    tariff = settings.tariff
    if tariff is not None:
        # Fixed into each new session at its start; a running session keeps the tariff it started with.
        log.info(
            "tariff %s: %s per kWh, %s per hour, export credit %s per kWh%s",
            tariff.currency,
            tariff.energy_per_kwh,
            tariff.time_per_hour,
            tariff.export_credit_per_kwh,
            f" ({tariff.text})" if tariff.text else "",
        )
    else:
        log.info("no tariff configured: billing records carry energy and time, no price")
    clock = RealClock()
    totals = journal.resume_meter_totals(settings.connector_id)
    hal = await open_board(cfg, clock, meter_totals_wh=totals)
    if sim_ev_state is not None:
        if hal.sim is None:
            await hal.close()
            raise ValueError("--sim-ev only applies to a simulated board")
        # An EV already plugged in when the (simulated) charger boots: a restart during a session.
        hal.sim.plant.ev_state = sim_ev_state
        hal.sim.plant.pp_ohm = 220.0 if sim_ev_state != "A" else None
    connector = Connector(hal, clock=clock, journal=journal, settings=settings, on_event=_log_event)
    stop = stop or asyncio.Event()
    station = None
    if uplink is not None:
        from firmware.ocpp.uplink import build_station

        async def reset(kind: str) -> None:
            # The service manager (systemd Restart=always) starts the firmware again: that is the reset.
            log.warning("the CSMS asked for a %s reset: shutting down to be restarted", kind)
            stop.set()

        station = build_station(
            uplink,
            {settings.connector_id: connector},
            clock=clock,
            data_dir=(data_dir or journal_path.parent) / "ocpp",
            journal_path=journal_path,
            reset_hook=reset,
            on_ocpp=_log_ocpp,
        )
    energy_service = None
    if energy is not None:
        from firmware.energy.service import EnergyService

        station_id = uplink.station_id if uplink is not None else cfg.board.name
        # A J3072 connector discharges through the PEV's onboard inverter: bidirectional in the manager.
        j3072_connectors = frozenset({j3072.connector}) if j3072 is not None else frozenset()
        energy_service = EnergyService.build(
            energy,
            cfg,
            {settings.connector_id: connector},
            clock=clock,
            station_id=station_id,
            bidirectional=j3072_connectors,
        )
    hlc = None
    if secc is not None:
        from firmware.iso15118.ac_port import manager_discharge, needs_provider, share_setpoint, soc_provider
        from firmware.iso15118.secc import Secc

        allowance = None
        if energy_service is not None:
            allowance = manager_discharge(energy_service.manager, settings.connector_id, clock)
        hlc, port = Secc.for_connector(secc, connector, discharge_allowance=allowance, on_event=_log_event)
        if energy_service is not None:
            site_control = energy_service.controller
            # The EV's departure and energy request (ISO 15118) reach the manager unless the user set theirs.
            site_control.needs = needs_provider({settings.connector_id: port}, user=energy_service.bridge.needs)
            # V2G: the manager's signed share becomes the -20 charge loop's target (a negative one only while
            # discharge is granted), the EV's SoC reaches its discharge floor, and a negative share bounds
            # the current only while the session carries the sign (firmware/energy/site_controller.py).
            port.set_setpoint(share_setpoint(site_control.setpoint, settings.connector_id))
            site_control.soc = soc_provider({settings.connector_id: port})
            site_control.bidirectional = lambda key: key == settings.connector_id and port.bidirectional
    j3072_service = None
    if j3072 is not None:
        if j3072.connector != settings.connector_id:
            raise ValueError(f"the J3072 configuration is for connector {j3072.connector}, not {settings.connector_id}")
        from firmware.j3072.service import J3072Service

        j3072_service = J3072Service.build(
            j3072,
            monotonic=clock.monotonic,
            wall_clock=time.time,
            journal=journal,
            manager=energy_service.manager if energy_service is not None else None,
            controller=energy_service.controller if energy_service is not None else None,
            evse_id=cfg.board.name,
        )
        connector.add_listener(j3072_service.on_connector_event)
        session = j3072_service.session
        # The EVSE's own check that the PEV obeys the gate: an export without authorisation is a fault.
        connector.discharge_permitted = lambda: session.authorised
        if station is not None and uplink is not None:
            from firmware.j3072.report import VENDOR_ID

            j3072_service.attach_station(uplink.version, station.enqueue)
            station.data_transfer[VENDOR_ID] = j3072_service.data_transfer
    control = ControlServer(
        connector,
        control_path,
        site_why=_joined_why(
            energy_service.why if energy_service is not None else None,
            j3072_service.why if j3072_service is not None else None,
        ),
        plant=hal.sim.plant if hal.sim else None,
        present_id=(lambda tag: station.present_id(settings.connector_id, tag)) if station is not None else None,
    )
    reader_task: asyncio.Task[None] | None = None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await connector.start()
        if station is not None:
            await station.start()
        if energy_service is not None:
            await energy_service.start()
        if hlc is not None:
            await hlc.start()
        if j3072_service is not None:
            await j3072_service.start()
        await control.start()
        if hal.id_reader is not None and cfg.rfid is not None:
            if cfg.rfid.connector == settings.connector_id:
                present = id_presenter(connector, station, cfg.rfid.connector)
                reader_task = asyncio.create_task(run_id_reader(hal.id_reader, present, clock=clock), name="rfid")
            else:
                log.error(
                    "rfid.connector = %d but this firmware runs connector %d: the card reader is not used",
                    cfg.rfid.connector,
                    settings.connector_id,
                )
        log.info("running board %s; control socket %s", cfg.board.name, control_path)
        await stop.wait()
    finally:
        if reader_task is not None:
            reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader_task
        await control.stop()
        if j3072_service is not None:
            await j3072_service.stop()
        if hlc is not None:
            await hlc.stop()
        if energy_service is not None:
            await energy_service.stop()
        if station is not None:
            await station.stop()
        await connector.stop()
        await hal.close()
        journal.close()


def _joined_why(*parts: Callable[[], str] | None) -> Callable[[], str] | None:
    """The site's explanations for ``evse why`` (energy manager, J3072), one after the other."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    return lambda: "\n\n".join(p() for p in present)


class _PresentsIds(Protocol):
    async def present_id(self, connector_id: int, id_tag: str) -> str: ...


def id_presenter(
    connector: Connector, station: _PresentsIds | None, connector_id: int
) -> Callable[[str], Awaitable[str]]:
    """Where a card read goes: the OCPP station decides (local list, cache, Authorize, offline
    policy, a second swipe ends the session); without an uplink the charger stands alone and the card
    authorises the connector as it is."""
    if station is not None:

        async def to_station(id_tag: str) -> str:
            return await station.present_id(connector_id, id_tag)

        return to_station

    async def standalone(id_tag: str) -> str:
        connector.authorize(id_tag)
        return "Accepted"

    return standalone


async def run_id_reader(
    reader: IdReader,
    present: Callable[[str], Awaitable[str]],
    *,
    clock: Clock,
    retry_after_s: float = ID_READER_RETRY_S,
) -> None:
    """Read cards until cancelled and hand each id to ``present``. A reader that fails is logged and
    tried again after ``retry_after_s``; a card whose presentation fails is logged and dropped. Nothing
    raised here may end the firmware."""
    while True:
        try:
            id_tag = await reader.read_id()
        except HalError as exc:  # names the device itself
            log.error("%s; reading cards again in %g s", exc, retry_after_s)
            await clock.sleep(retry_after_s)
            continue
        except Exception:
            log.exception("%s: reader failed; reading cards again in %g s", reader.name, retry_after_s)
            await clock.sleep(retry_after_s)
            continue
        try:
            status = await present(id_tag)
        except Exception:
            log.exception("%s: card %s could not be presented", reader.name, id_tag)
            continue
        log.info("%s: card %s: %s", reader.name, id_tag, status)


def _log_event(kind: str, data: dict[str, object]) -> None:
    log.info("%s %s", kind, data)


def _log_ocpp(event: dict[str, object]) -> None:
    log.info("ocpp %s %s %s", event.get("dir"), event.get("kind"), event.get("action"))
