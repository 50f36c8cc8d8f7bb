"""Assemble a board's OCPP uplink: configuration, outbox, and the station client for the chosen version.

Files in the data directory: ``ocpp-config.json`` (1.6 configuration keys), ``local-list.json``,
``auth-cache.json`` and ``charging-profiles.json``; the outbox shares the session journal's SQLite
file, so a transaction and the messages that report it live and die together.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from firmware.connector import Connector
from firmware.ocpp.configuration import Configuration
from firmware.ocpp.link import Link
from firmware.ocpp.outbox import Outbox
from firmware.ocpp.station import OcppEventSink, OcppStation, ProtocolAdapter, StationSettings
from hal.clock import Clock


class UplinkError(ValueError):
    """The uplink cannot be built as configured."""


def build_station(
    settings: StationSettings,
    connectors: dict[int, Connector],
    *,
    clock: Clock,
    data_dir: Path | None,
    journal_path: Path | None,
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    link_factory: Callable[[], Awaitable[Link]] | None = None,
    on_ocpp: OcppEventSink | None = None,
    reset_hook: Callable[[str], Awaitable[None]] | None = None,
    config_defaults: dict[str, str] | None = None,
) -> OcppStation:
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    defaults = {"NumberOfConnectors": str(len(connectors)), **(config_defaults or {})}

    def adapter_factory(station: OcppStation) -> ProtocolAdapter:
        if settings.version == "1.6":
            from firmware.ocpp.v16 import V16Adapter

            config = Configuration(data_dir / "ocpp-config.json" if data_dir else None, defaults=defaults)
            return V16Adapter(station, config)
        raise UplinkError(f"OCPP {settings.version} is not available in this build; use 1.6")

    outbox = Outbox(journal_path, wall_clock=lambda: wall_clock().timestamp())
    return OcppStation(
        settings,
        connectors,
        clock=clock,
        data_dir=data_dir,
        outbox=outbox,
        adapter_factory=adapter_factory,
        wall_clock=wall_clock,
        link_factory=link_factory,
        on_ocpp=on_ocpp,
        reset_hook=reset_hook,
    )
