"""Assemble a board's OCPP uplink: configuration, outbox, and the station client for the chosen version.

Files in the data directory: ``ocpp-config.json`` (1.6 configuration keys) or ``ocpp-device-model.json``
(the 2.0.1/2.1 device model's values set by the CSMS), ``local-list.json``,
``auth-cache.json`` and ``charging-profiles.json``; the outbox shares the session journal's SQLite
file, so a transaction and the messages that report it live and die together.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from firmware.connector import Connector
from firmware.ocpp.configuration import Configuration
from firmware.ocpp.link import Link
from firmware.ocpp.outbox import Outbox
from firmware.ocpp.station import OcppEventSink, OcppStation, ProtocolAdapter, StationSettings
from hal.clock import Clock

log = logging.getLogger(__name__)


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
    install_hook: Callable[[Path], Awaitable[bool]] | None = None,
    log_files: tuple[Path, ...] = (),
) -> OcppStation:
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    defaults = {"NumberOfConnectors": str(len(connectors)), **(config_defaults or {})}

    def adapter_factory(station: OcppStation) -> ProtocolAdapter:
        if settings.version == "1.6":
            from firmware.ocpp.v16 import V16Adapter

            keys = dict(defaults)
            if station.signed is not None:
                keys["MeterPublicKey"] = station.signed.signer.public_key_hex  # read-only: what signs
            if any(c.phases is not None for c in connectors.values()):
                keys["ConnectorSwitch3to1PhaseSupported"] = "true"
            config = Configuration(data_dir / "ocpp-config.json" if data_dir else None, defaults=keys)
            return V16Adapter(station, config)
        if settings.version in ("2.0.1", "2.1"):
            from firmware.ocpp.device_model import DeviceModel
            from firmware.ocpp.v201 import V21Adapter, V201Adapter

            device_model = DeviceModel(
                data_dir / "ocpp-device-model.json" if data_dir else None,
                evses=len(connectors),
                **_device_ratings(connectors),
            )
            if config_defaults:
                # They are 1.6 configuration keys; a 2.x station is configured through its device model.
                log.warning(
                    "OCPP %s: ignoring the 1.6 configuration defaults %s", settings.version, sorted(config_defaults)
                )
            adapter = V21Adapter if settings.version == "2.1" else V201Adapter
            return adapter(station, device_model)
        raise UplinkError(f"OCPP version {settings.version!r} is not supported; use 1.6, 2.0.1 or 2.1")

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
        install_hook=install_hook,
        log_files=log_files,
    )


def _device_ratings(connectors: dict[int, Connector]) -> dict[str, Any]:
    """The device model's physical characteristics (EVSE.Power maxLimit, SupplyPhases, ConnectorType) from
    the board rating of the first connector: every EVSE of a board shares its rating."""
    ratings = next(iter(connectors.values())).hal.config.ratings
    voltage = float(ratings.nominal_voltage_v or 230.0)
    return {
        "max_power_w": float(ratings.max_current_a) * voltage * ratings.phases,
        "supply_phases": ratings.phases,
        # 2.0.1 ConnectorEnumType: an AC board has a Type 2 socket, a DC board a CCS2 plug.
        "connector_type": "cCCS2" if ratings.supply == "dc" else "cType2",
    }
