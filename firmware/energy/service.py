"""The energy manager as ``evse run --energy FILE`` runs it: the site controller's loop, the EMS
interfaces (MQTT client, Modbus TCP server) when configured, and the explanation for ``evse why``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from board.schema import BoardConfig
from firmware.connector import Connector
from firmware.energy.config import EnergyConfig
from firmware.energy.ems_bridge import EmsBridge
from firmware.energy.manager import ConnectorSpec, EnergyManager
from firmware.energy.site_controller import SiteController
from hal.clock import Clock

log = logging.getLogger(__name__)


@dataclass
class EnergyService:
    manager: EnergyManager
    controller: SiteController
    bridge: EmsBridge
    config: EnergyConfig
    clock: Clock
    station_id: str
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _modbus: Any = None

    @classmethod
    def build(
        cls,
        config: EnergyConfig,
        board: BoardConfig,
        connectors: dict[int, Connector],
        *,
        clock: Clock,
        station_id: str,
        bidirectional: frozenset[int] = frozenset(),
    ) -> EnergyService:
        """``bidirectional``: connectors that may discharge although the board has no bidirectional
        converter: an AC connector whose PEV discharges through its own onboard inverter (SAE J3072)."""
        converter = board.converter
        specs = {
            n: ConnectorSpec(
                n,
                board.board.name,
                board.ratings.phases,
                board.ratings.nominal_voltage_v,
                bidirectional=(converter is not None and converter.bidirectional) or n in bidirectional,
                phase_switching=board.phase_switch is not None,
            )
            for n in connectors
        }
        manager = EnergyManager(config.site, specs)
        bridge = EmsBridge(manager, connectors, clock=clock)
        controller = SiteController(
            manager,
            connectors,
            clock=clock,
            site_meter=bridge.take_site_reading if config.site_meter == "ems" else None,
            needs=bridge.needs,
            discharge_floor=bridge.discharge_floor,
        )
        return cls(manager, controller, bridge, config, clock, station_id)

    def why(self) -> str:
        last = self.manager.last
        return last.explain() if last is not None else "site energy manager: no cycle yet"

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self.controller.run(), name="energy-manager"))
        mqtt = self.config.mqtt
        if mqtt is not None:
            from firmware.energy.ems_mqtt import EmsMqttClient

            client = EmsMqttClient(
                self.bridge,
                host=mqtt.host,
                port=mqtt.port,
                username=mqtt.username,
                password=mqtt.password,
                clock=self.clock,
                topic_prefix=mqtt.topic_prefix or f"evse/{self.station_id}",
            )
            self._tasks.append(asyncio.create_task(client.run(), name="ems-mqtt"))
        modbus = self.config.modbus
        if modbus is not None:
            from firmware.energy.ems_modbus import EmsModbusServer

            server = EmsModbusServer(
                self.bridge,
                unlock_key=modbus.unlock_key,
                clock=self.clock,
                host=modbus.bind,
                port=modbus.port,
                allowed_clients=modbus.allow,
            )
            await server.start()
            self._modbus = server
        log.info(
            "site energy manager: grid %.1f kW, %s split%s%s",
            self.config.site.grid_import_max_w / 1000,
            self.config.site.strategy,
            ", EMS over MQTT" if mqtt else "",
            ", EMS over Modbus TCP" if modbus else "",
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._modbus is not None:
            with contextlib.suppress(Exception):
                await self._modbus.stop()
            self._modbus = None
