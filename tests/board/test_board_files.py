"""Every shipped board file loads; broken board files fail with a message that names the file, the
field, the value and what is allowed."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from board.loader import BoardError, load_board, parse_board, resolve, shipped_boards
from board.schema import Atm90e32Config, Sdm630Config

SHIPPED = [
    "sim-ac",
    "sim-ac-1p3p",
    "sim-ac-sdm630",
    "sim-dc-bidi",
    "sim-mcu-ac",
    "pi-ac",
    "pi-ac-1p3p",
    "pi-ac-sdm630",
    "pi-mcu-ac",
    "pi-dc-bidi",
]


def _raw(name: str) -> dict[str, Any]:
    return tomllib.loads(shipped_boards()[name].read_text())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_board_loads(name: str) -> None:
    cfg = load_board(name)
    assert cfg.board.name == name
    assert cfg.board.simulated == name.startswith("sim-")


def test_every_shipped_file_is_listed() -> None:
    assert sorted(shipped_boards()) == sorted(SHIPPED)


@pytest.mark.parametrize("name", ["pi-ac", "pi-ac-1p3p", "pi-ac-sdm630"])
def test_pi_gpio_boards_are_marked_as_needing_an_external_trip(name: str) -> None:
    cfg = load_board(name)
    assert cfg.safety.realtime == "pi-gpio"
    assert cfg.safety.external_hardware_trip is True
    assert "external hardware trip" in cfg.board.description


@pytest.mark.parametrize(
    ("name", "meter_type", "port"),
    [
        ("sim-ac", Atm90e32Config, None),
        ("pi-ac", Atm90e32Config, None),
        ("sim-ac-sdm630", Sdm630Config, "sim"),
        ("pi-ac-sdm630", Sdm630Config, "/dev/ttyUSB0"),
    ],
)
def test_meter_table_picks_the_driver_model(name: str, meter_type: type, port: str | None) -> None:
    meter = load_board(name).meter
    assert isinstance(meter, meter_type)
    if isinstance(meter, Sdm630Config):
        assert meter.port == port
        assert (meter.baudrate, meter.parity, meter.stopbits, meter.unit) == (9600, "N", 1, 1)
        assert meter.reverse is False


def test_modbus_meter_defaults_and_no_calibration_rule() -> None:
    data = _raw("sim-ac")
    data["meter"] = {"driver": "sdm630", "port": "sim"}  # an SDM630 needs no per-phase calibration table
    cfg = parse_board(data)
    assert isinstance(cfg.meter, Sdm630Config)
    assert (cfg.meter.baudrate, cfg.meter.parity, cfg.meter.unit, cfg.meter.timeout_s) == (9600, "N", 1, 0.5)
    assert (cfg.meter.max_voltage_v, cfg.meter.max_current_a, cfg.meter.reverse) == (300.0, 100.0, False)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = d
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is _DELETE:
            del node[int(last) if isinstance(node, list) else last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return apply


_DELETE = object()

# (board, mutation, fragments that must all appear in the message)
BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], list[str]]] = [
    ("sim-ac", _set("pilot.pwm_pin", 17), ["pilot.pwm_pin", "17", "12, 13, 18, 19"]),
    ("sim-ac", _set("pilot.driver", "bitbang"), ["pilot.driver", "'bitbang'", "gpio-pwm", "coprocessor"]),
    ("sim-ac", _set("ratings.phases", 2), ["ratings.phases", "2", "1 or 3"]),
    ("sim-ac", _set("ratings.max_current_a", 100.0), ["ratings.max_current_a", "100", "6..80 A"]),
    ("sim-ac", _set("ratings.connector", "ccs2"), ["ratings.connector", "'ccs2'", "DC connector"]),
    ("sim-ac", _set("ratings.grid_frequency_hz", 55), ["ratings.grid_frequency_hz", "55", "50 or 60"]),
    ("sim-ac", _set("contactor.mirror_pin", 18), ["GPIO 18 is used twice", "pilot.pwm_pin", "contactor.mirror_pin"]),
    ("sim-ac", _set("contactor.coil_pin", 40), ["contactor.coil_pin", "40", "less than or equal to 27"]),
    ("sim-ac", _set("proximity.channel", 0), ["ADC channel 0 is used twice", "pilot_sense", "proximity"]),
    ("sim-ac", _set("adc.chip", "mcp3202"), ["temperature[0].channel = 2", "channels 0..1"]),
    ("sim-ac", _set("meter.spi_device", 0), ["SPI bus 0 device 0 is used twice", "adc", "meter"]),
    ("sim-ac", _set("buses.gpio.factory", "lgpio"), ["buses.gpio.factory", "'lgpio'", "simulated", "'mock'"]),
    ("sim-ac", _set("buses.spi", _DELETE), ["[buses.spi] is missing"]),
    ("sim-ac", _set("meter.phases.2", _DELETE), ["meter.phases", "2 calibration entries", "ratings.phases = 3"]),
    ("sim-ac", _set("meter.phases.0.ugain", 70000), ["meter.phases[0].ugain", "70000", "65535"]),
    (
        "sim-ac",
        _set("pilot.colour", "red"),
        ["pilot.colour", "unknown field", "driver, e_pin, pwm_channel, pwm_chip, pwm_pin"],
    ),
    ("sim-ac", _set("contactor.coil", 3), ["contactor.coil", "unknown field", "coil_pin"]),
    ("sim-ac", _set("rcd", _DELETE), ["rcd: missing"]),
    ("sim-ac", _set("temperature.0.trip_c", 60.0), ["temperature[0]", "trip_c (60.0) must be above"]),
    ("sim-ac", _set("lock.unlock_pin", _DELETE), ["lock", "unlock_pin"]),
    ("sim-ac", _set("contactor", {"driver": "coprocessor"}), ["pilot and contactor must be driven by the same part"]),
    ("pi-ac", _set("safety.external_hardware_trip", False), ["external_hardware_trip must be true"]),
    ("pi-ac", _set("pilot.pwm_chip", _DELETE), ["pilot.pwm_chip and pilot.pwm_channel are required", "hardware PWM"]),
    ("pi-ac", _set("buses.gpio.factory", "mock"), ["buses.gpio.factory = 'mock'", "simulated = true"]),
    ("pi-mcu-ac", _set("buses.serial", _DELETE), ["uses a serial driver", "[buses.serial] is missing"]),
    ("pi-mcu-ac", _set("safety.realtime", "pi-gpio"), ["safety.realtime = 'pi-gpio'", "'coprocessor'"]),
    ("pi-mcu-ac", _set("buses.serial.baudrate", 9600), ["buses.serial.baudrate", "9600", "115200"]),
    ("pi-dc-bidi", _set("imd", _DELETE), ["needs an insulation monitor"]),
    ("pi-dc-bidi", _set("converter.min_voltage_v", 1200.0), ["converter", "min_voltage_v (1200.0) must be below"]),
    ("pi-dc-bidi", _set("converter.module_address", 0x3F), ["converter.module_address", "63", "62"]),
    ("pi-dc-bidi", _set("buses.can.bitrate", 1000000), ["buses.can.bitrate", "1000000", "125000"]),
    ("pi-dc-bidi", _set("ratings.max_current_a", 80.0), ["ratings.max_current_a = 80.0 exceeds converter"]),
    ("pi-dc-bidi", _set("converter.driver", "winline"), ["converter.driver", "'winline'", "'infy-beg1k075g'"]),
    ("sim-ac", _set("meter.driver", "pzem"), ["meter.driver: got 'pzem'", "'atm90e32', 'sdm630'"]),
    ("sim-ac", _set("meter.driver", _DELETE), ["meter.driver: missing"]),
    ("sim-ac", _set("meter", "sdm630"), ["meter: must be a table with driver = 'atm90e32' or 'sdm630'"]),
    ("sim-ac-sdm630", _set("meter.port", "/dev/ttyUSB0"), ["simulated = true but meter.port = '/dev/ttyUSB0'"]),
    ("pi-ac-sdm630", _set("meter.port", "sim"), ["meter.port = 'sim' is only allowed with board.simulated = true"]),
    (
        "pi-ac-sdm630",
        _set("meter.port", "/dev/serial0"),
        ["serial port /dev/serial0 is used twice", "rfid.port", "meter.port"],
    ),
    ("sim-ac-1p3p", _set("ratings.phases", 1), ["[phase_switch]", "needs ratings.phases = 3"]),
    ("sim-ac-1p3p", _set("phase_switch.mirror_pin", 24), ["GPIO 24 is used twice", "phase_switch.mirror_pin"]),
    ("sim-ac-1p3p", _set("phase_switch.settle_s", 0.1), ["phase_switch.settle_s", "greater than or equal to 1"]),
    ("sim-ac-1p3p", _set("phase_switch.driver", "modbus"), ["phase_switch.driver", "'modbus'", "'gpio'"]),
    ("pi-ac-sdm630", _set("meter.baudrate", 115200), ["meter.baudrate", "115200", "9600"]),
    ("pi-ac-sdm630", _set("meter.parity", "X"), ["meter.parity", "'X'", "'N', 'E' or 'O'"]),
    ("pi-ac-sdm630", _set("meter.unit", 0), ["meter.unit", "greater than or equal to 1", "(got 0)"]),
    ("pi-ac-sdm630", _set("meter.unit", 248), ["meter.unit", "less than or equal to 247"]),
    ("pi-ac-sdm630", _set("meter.timeout_s", 0.0), ["meter.timeout_s", "greater than 0"]),
    ("pi-ac-sdm630", _set("meter.port", ""), ["meter.port", "at least 1 character"]),
    ("pi-ac-sdm630", _set("meter.spi_bus", 0), ["meter.spi_bus", "unknown field", "baudrate, driver, max_current_a"]),
    ("pi-ac-sdm630", _set("meter", _DELETE), ["an AC board needs a [meter]"]),
    (
        "pi-mcu-ac",
        _set("meter", {"driver": "sdm630", "port": "/dev/ttyAMA0"}),
        ["serial port /dev/ttyAMA0 is used twice", "buses.serial.port", "meter.port"],
    ),
    (
        "pi-mcu-ac",
        _set("rfid", {"driver": "rdm6300", "port": "/dev/ttyAMA0"}),
        ["serial port /dev/ttyAMA0 is used twice", "buses.serial.port", "rfid.port"],
    ),
    ("sim-ac", _set("format", 2), ["format: got 2", "format = 1"]),
    ("sim-ac", _set("format", _DELETE), ["format: missing"]),
]


@pytest.mark.parametrize(("name", "mutate", "fragments"), BROKEN)
def test_broken_board_gets_a_precise_message(
    tmp_path: Path, name: str, mutate: Callable[[dict[str, Any]], None], fragments: list[str]
) -> None:
    data = copy.deepcopy(_raw(name))
    mutate(data)
    path = tmp_path / f"broken-{name}.toml"
    with pytest.raises(BoardError) as info:
        parse_board(data, path)
    message = str(info.value)
    assert message.startswith(str(path) + ": ")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('format = 1\n[board\nname = "x"\n')
    with pytest.raises(BoardError) as info:
        load_board(path)
    assert str(path) in str(info.value)
    assert "not valid TOML" in str(info.value)
    assert "line 2" in str(info.value)


def test_missing_file_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(BoardError, match="cannot read"):
        load_board(tmp_path / "nope.toml")
    with pytest.raises(BoardError, match=r"shipped: .*sim-ac"):
        resolve("no-such-board")


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    data = _raw("sim-ac")
    data["pilot"]["pwm_pin"] = "eighteen"
    data["ratings"]["phases"] = 4
    with pytest.raises(BoardError) as info:
        parse_board(data, tmp_path / "two.toml")
    assert len(info.value.problems) == 2
