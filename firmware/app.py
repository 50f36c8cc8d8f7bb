"""``evse run``: the firmware on a board, in real time, until SIGTERM or SIGINT.

Boot order: open the journal (a corrupt one is moved aside and a new one started, never a crash),
open the board with the meter totals resumed from the journal, start the connector (self-test,
reconciliation with the hardware), then the control socket. Shutdown runs the same way backwards and
leaves the hardware safe (contactor open, pilot F).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from board.build import open_board
from board.schema import BoardConfig
from firmware.connector import Connector, ConnectorSettings
from firmware.control import ControlServer
from firmware.journal import Journal
from firmware.ocpp.station import StationSettings
from hal.clock import RealClock

log = logging.getLogger(__name__)


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
) -> None:
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    journal, recovered = Journal.open_or_recover(journal_path)
    if recovered is not None:
        log.error("journal %s was unreadable; moved to %s and started a new one", journal_path, recovered)
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
    control = ControlServer(
        connector,
        control_path,
        plant=hal.sim.plant if hal.sim else None,
        present_id=(lambda tag: station.present_id(settings.connector_id, tag)) if station is not None else None,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await connector.start()
        if station is not None:
            await station.start()
        await control.start()
        log.info("running board %s; control socket %s", cfg.board.name, control_path)
        await stop.wait()
    finally:
        await control.stop()
        if station is not None:
            await station.stop()
        await connector.stop()
        await hal.close()
        journal.close()


def _log_event(kind: str, data: dict[str, object]) -> None:
    log.info("%s %s", kind, data)


def _log_ocpp(event: dict[str, object]) -> None:
    log.info("ocpp %s %s %s", event.get("dir"), event.get("kind"), event.get("action"))
