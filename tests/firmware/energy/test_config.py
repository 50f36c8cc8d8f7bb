"""The energy configuration file: a full file loads, every mistake is named with its file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.energy.config import EnergyConfigError, load_energy_config


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "energy.toml"
    path.write_text(text)
    return path


def test_a_full_file_loads(tmp_path: Path) -> None:
    (tmp_path / "mqtt-password").write_text("s3cret\n")
    (tmp_path / "modbus-key").write_text("0x5A5A\n")
    path = _write(
        tmp_path,
        f"""
[site]
grid_import_max_kw = 11
grid_export_max_kw = 3.5
strategy = "departure"
site_meter = "ems"
fallback_ev_total_kw = 4.2
ems_fallback_import_kw = 8

[ems.mqtt]
host = "127.0.0.1"
username = "evse"
password_file = "{tmp_path / "mqtt-password"}"

[ems.modbus]
port = 5020
allow = ["127.0.0.1", "10.0.0.5"]
unlock_key_file = "{tmp_path / "modbus-key"}"
""",
    )
    cfg = load_energy_config(path)
    assert (cfg.site.grid_import_max_w, cfg.site.grid_export_max_w) == (11_000, 3_500)
    assert cfg.site.strategy == "departure" and cfg.site.has_site_meter and cfg.site_meter == "ems"
    assert (cfg.site.fallback_ev_total_w, cfg.site.ems_fallback_import_w) == (4_200, 8_000)
    assert cfg.mqtt is not None and cfg.mqtt.password == "s3cret" and cfg.mqtt.port == 1883
    assert cfg.modbus is not None and cfg.modbus.unlock_key == 0x5A5A and cfg.modbus.allow == ("127.0.0.1", "10.0.0.5")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[site]\n", "site.grid_import_max_kw is required"),
        ("[site]\ngrid_import_max_kw = -1\n", "site.grid_import_max_kw must be a number >= 0"),
        ("[site]\ngrid_import_max_kw = 11\nstrategy = 'fastest'\n", "site.strategy must be one of"),
        ("[site]\ngrid_import_max_kw = 11\ngrid_limit = 3\n", "unknown key(s) grid_limit in [site]"),
        ("[site]\ngrid_import_max_kw = 11\nsite_meter = 'modbus'\n", "site.site_meter must be 'ems' or 'none'"),
        ("[site]\ngrid_import_max_kw = 11\n[ems.mqtt]\nhost = 'x'\n", "ems.mqtt.username is required"),
        ("[site]\ngrid_import_max_kw = 11\n[ems.mqtt]\nhost = 'x'\nusername = 'u'\npassword_file = '/nonexistent'\n",
         "ems.mqtt.password_file: cannot read /nonexistent"),
        ("not toml [", "not valid TOML"),
        ("[ems]\n", "a [site] table is required"),
    ],
)  # fmt: skip
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(EnergyConfigError) as info:
        load_energy_config(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EnergyConfigError, match="cannot read the energy configuration"):
        load_energy_config(tmp_path / "nope.toml")
