"""The energy manager's configuration file (``evse run --energy FILE``, TOML).

::

    [site]
    grid_import_max_kw = 11.0       # the connection's import limit (P_grid_max)
    grid_export_max_kw = 0.0        # what may be exported (V2G); 0 = none
    strategy = "equal"              # equal | priority | departure
    period_s = 1.0                  # one cycle per period
    site_meter = "ems"              # ems: the site EMS reports the connection-point power | none
    meter_timeout_s = 10.0          # a silent site meter is a fallback after this
    fallback_ev_total_kw = 4.2      # the chargers' total while the site meter is silent (R142)
    ems_fallback_import_kw = 8.0    # the site import while the EMS setpoint has expired (default: the grid limit)

    [ems.mqtt]                      # optional: docs/ems.md
    host = "127.0.0.1"
    port = 1883
    username = "evse"
    password_file = "/etc/evse/mqtt-password"
    topic_prefix = "evse/CP1"       # default: evse/<station id>

    [ems.modbus]                    # optional: docs/ems.md
    bind = "127.0.0.1"
    port = 5020
    allow = ["127.0.0.1"]
    unlock_key_file = "/etc/evse/modbus-key"

Every error names the file and the key; unknown keys are refused (a typo must not silently leave a
limit at its default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.energy.balancing import STRATEGIES
from firmware.energy.manager import SiteConfig
from firmware.files import read_toml


class EnergyConfigError(ValueError):
    """The energy configuration file is missing, unreadable or wrong."""


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    username: str
    password: str
    topic_prefix: str | None


@dataclass(frozen=True)
class ModbusSettings:
    bind: str
    port: int
    allow: tuple[str, ...]
    unlock_key: int


@dataclass(frozen=True)
class EnergyConfig:
    site: SiteConfig
    site_meter: str  # "ems" | "none"
    mqtt: MqttSettings | None
    modbus: ModbusSettings | None


_SITE_KEYS = {
    "grid_import_max_kw",
    "grid_export_max_kw",
    "strategy",
    "period_s",
    "site_meter",
    "meter_timeout_s",
    "fallback_ev_total_kw",
    "ems_fallback_import_kw",
    "hold_s",
    "min_pause_s",
    "step_kw",
}


def load_energy_config(path: Path) -> EnergyConfig:
    doc = read_toml(path, "the energy configuration", EnergyConfigError)
    _only(path, "", doc, {"site", "ems"})
    site = _table(path, doc, "site")
    _only(path, "site", site, _SITE_KEYS)
    strategy = site.get("strategy", "equal")
    if strategy not in STRATEGIES:
        raise EnergyConfigError(f"{path}: site.strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    meter = site.get("site_meter", "none")
    if meter not in ("ems", "none"):
        raise EnergyConfigError(f"{path}: site.site_meter must be 'ems' or 'none', not {meter!r}")
    grid = _number(path, site, "grid_import_max_kw", required=True)
    ems_fallback = _number(path, site, "ems_fallback_import_kw")
    try:
        site_config = SiteConfig(
            grid_import_max_w=grid * 1000,
            grid_export_max_w=_number(path, site, "grid_export_max_kw", 0.0) * 1000,
            strategy=strategy,
            period_s=_number(path, site, "period_s", 1.0),
            meter_timeout_s=_number(path, site, "meter_timeout_s", 10.0),
            fallback_ev_total_w=_number(path, site, "fallback_ev_total_kw", 0.0) * 1000,
            ems_fallback_import_w=None if site.get("ems_fallback_import_kw") is None else ems_fallback * 1000,
            has_site_meter=meter != "none",
            hold_s=_number(path, site, "hold_s", 10.0),
            min_pause_s=_number(path, site, "min_pause_s", 60.0),
            step_w=_number(path, site, "step_kw", 0.69) * 1000,
        )
    except ValueError as exc:
        raise EnergyConfigError(f"{path}: [site]: {exc}") from exc
    ems = doc.get("ems", {})
    if not isinstance(ems, dict):
        raise EnergyConfigError(f"{path}: [ems] must be a table")
    _only(path, "ems", ems, {"mqtt", "modbus"})
    return EnergyConfig(site_config, meter, _mqtt(path, ems.get("mqtt")), _modbus(path, ems.get("modbus")))


def _mqtt(path: Path, table: Any) -> MqttSettings | None:
    if table is None:
        return None
    if not isinstance(table, dict):
        raise EnergyConfigError(f"{path}: [ems.mqtt] must be a table")
    _only(path, "ems.mqtt", table, {"host", "port", "username", "password_file", "topic_prefix"})
    host, username = _text(path, table, "ems.mqtt", "host"), _text(path, table, "ems.mqtt", "username")
    password_file = _text(path, table, "ems.mqtt", "password_file")
    try:
        password = Path(password_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise EnergyConfigError(f"{path}: ems.mqtt.password_file: cannot read {password_file}: {exc}") from exc
    prefix = table.get("topic_prefix")
    if prefix is not None and not isinstance(prefix, str):
        raise EnergyConfigError(f"{path}: ems.mqtt.topic_prefix must be a string")
    return MqttSettings(
        host=host,
        port=_port(path, table, "ems.mqtt", 1883),
        username=username,
        password=password,
        topic_prefix=prefix,
    )


def _modbus(path: Path, table: Any) -> ModbusSettings | None:
    if table is None:
        return None
    if not isinstance(table, dict):
        raise EnergyConfigError(f"{path}: [ems.modbus] must be a table")
    _only(path, "ems.modbus", table, {"bind", "port", "allow", "unlock_key_file"})
    allow = table.get("allow", ["127.0.0.1"])
    if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
        raise EnergyConfigError(f"{path}: ems.modbus.allow must be a list of IP addresses")
    key_file = _text(path, table, "ems.modbus", "unlock_key_file")
    try:
        key = int(Path(key_file).read_text(encoding="utf-8").strip(), 0)
    except (OSError, ValueError) as exc:
        raise EnergyConfigError(f"{path}: ems.modbus.unlock_key_file: {key_file}: {exc}") from exc
    if not 1 <= key <= 0xFFFF:
        raise EnergyConfigError(f"{path}: ems.modbus.unlock_key_file: the key must be 1..65535 (one register)")
    bind = table.get("bind", "127.0.0.1")
    if not isinstance(bind, str):
        raise EnergyConfigError(f"{path}: ems.modbus.bind must be an address")
    return ModbusSettings(bind=bind, port=_port(path, table, "ems.modbus", 502), allow=tuple(allow), unlock_key=key)


# ---------------------------------------------------------------------------------------------- helpers
def _only(path: Path, where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        place = f"[{where}]" if where else "the top level"
        raise EnergyConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)} in {place}; known: {', '.join(sorted(allowed))}"
        )


def _table(path: Path, doc: dict[str, Any], name: str) -> dict[str, Any]:
    table = doc.get(name)
    if not isinstance(table, dict):
        raise EnergyConfigError(f"{path}: a [{name}] table is required")
    return table


def _number(
    path: Path, table: dict[str, Any], key: str, default: float | None = None, *, required: bool = False
) -> float:
    value = table.get(key, default)
    if value is None:
        if required:
            raise EnergyConfigError(f"{path}: site.{key} is required")
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise EnergyConfigError(f"{path}: site.{key} must be a number >= 0, not {value!r}")
    return float(value)


def _text(path: Path, table: dict[str, Any], where: str, key: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise EnergyConfigError(f"{path}: {where}.{key} is required (a string)")
    return value


def _port(path: Path, table: dict[str, Any], where: str, default: int) -> int:
    value = table.get("port", default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise EnergyConfigError(f"{path}: {where}.port must be 1..65535, not {value!r}")
    return value
