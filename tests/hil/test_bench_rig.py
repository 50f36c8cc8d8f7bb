"""Rig files: the shipped example loads, and a broken file gets a message naming the file, the field,
what is wrong and the value."""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from board.loader import load_board, resolve
from hil.bench.rig import RigError, load_rig, parse_rig
from hil.bench.session import board_gpio_pins, check_pins

EXAMPLE = Path(__file__).resolve().parents[2] / "hil" / "bench" / "example-rig.toml"
_DELETE = object()


def _raw() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text())


def test_the_example_rig_loads() -> None:
    rig = load_rig(EXAMPLE)
    assert rig.rig.name == "example-bench"
    assert rig.gpio.factory == "lgpio"
    assert rig.ev.relay_active_high is False and rig.ev.cable_a == 32
    assert rig.gpio.chip == 2  # an I2C expander: the board keeps the Pi's header
    assert rig.ev.pp_pin(32) == 10 and rig.ev.pp_pin(13) == 8
    assert rig.estop.active_high is True and rig.estop.antivalent_pin == 15
    assert rig.load is not None and rig.load.max_current_a == 32.0 and rig.load.baudrate == 9600
    assert rig.can is not None and rig.can.channel == "can1"
    pins = rig.gpio_pins()
    assert pins[2] == "ev.r2_pin" and pins[14] == "estop.pin" and len(pins) == 12


@pytest.mark.parametrize("board", ["pi-ac", "pi-mcu-ac", "pi-dc-bidi", "sim-ac"])
def test_the_example_rig_fits_every_shipped_board_and_only_another_chip_would_clash(board: str) -> None:
    rig = load_rig(EXAMPLE)
    cfg = load_board(resolve(board))
    assert check_pins(rig, cfg) == []
    on_the_boards_chip = rig.model_copy(update={"gpio": rig.gpio.model_copy(update={"chip": 0})})
    board_lines = set(board_gpio_pins(cfg))
    clashes = check_pins(on_the_boards_chip, cfg)
    assert len(clashes) == len(board_lines & set(rig.gpio_pins()))
    if board == "pi-ac":
        assert clashes  # pi-ac uses lines 5-8 and 13 of chip 0 too


def test_load_and_can_are_optional() -> None:
    data = _raw()
    del data["load"], data["can"]
    rig = parse_rig(data, "pilot-only.toml")
    assert rig.load is None and rig.can is None


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return apply


BROKEN: list[tuple[Callable[[dict[str, Any]], None], list[str]]] = [
    (_set("ev.r3_c_pin", 40), ["ev.r3_c_pin: Input should be less than or equal to 27 (got 40)"]),
    (_set("ev.r2_pin", 14), ["GPIO 14 is used twice: ev.r2_pin and estop.pin"]),
    (_set("estop.antivalent_pin", 10), ["GPIO 10 is used twice: ev.pp_32a_pin and estop.antivalent_pin"]),
    (_set("ev.relay_active_high", _DELETE), ["ev.relay_active_high: missing (required)"]),
    (_set("estop.active_high", _DELETE), ["estop.active_high: missing (required)"]),
    (_set("estop", _DELETE), ["estop: missing (required)"]),
    (_set("ev.cable_a", 16), ["ev.cable_a: Input should be 13, 20, 32 or 63 (got 16)"]),
    (_set("ev.pp_32a_pin", _DELETE), ["ev.cable_a = 32 needs ev.pp_32a_pin (the relay that selects it)"]),
    (_set("ev.settle_ms", -1), ["ev.settle_ms: Input should be greater than or equal to 0 (got -1)"]),
    (_set("ev.relays", 3), ["ev.relays: unknown field; allowed here:", "r2_pin", "relay_active_high", "settle_ms"]),
    (_set("bench", {}), ["bench: unknown field; allowed here: can, estop, ev, format, gpio, load, rig"]),
    (_set("estop.pull", "sideways"), ["estop.pull: Input should be 'up' or 'down' (got 'sideways')"]),
    (_set("estop.poll_ms", 0), ["estop.poll_ms: Input should be greater than 0 (got 0)"]),
    (_set("load.baudrate", 9601), ["load.baudrate: Input should be 1200, 2400", "115200 (got 9601)"]),
    (_set("load.max_current_a", 0), ["load.max_current_a: Input should be greater than 0 (got 0)"]),
    (_set("load.timeout_s", 10), ["load.timeout_s: Input should be less than or equal to 5 (got 10)"]),
    (_set("load.port", ""), ["load.port: String should have at least 1 character (got '')"]),
    (_set("load.max_power_w", "lots"), ["load.max_power_w: Input should be a valid number", "(got 'lots')"]),
    (_set("load.nominal_voltage_v", 400.0), ["load.nominal_voltage_v = 400.0 is above load.max_voltage_v = 300.0"]),
    (_set("load.max_current", 32), ["load.max_current: unknown field; allowed here:", "max_current_a", "max_power_w"]),
    (_set("can.bitrate", 800000), ["can.bitrate: Input should be 125000, 250000, 500000 or 1000000 (got 800000)"]),
    (_set("can.interface", "usb2can"), ["can.interface: Input should be 'socketcan'", "(got 'usb2can')"]),
    (_set("gpio.factory", "rpigpio"), ["gpio.factory: Input should be 'lgpio' or 'mock' (got 'rpigpio')"]),
    (_set("rig.name", "My Bench"), ["rig.name: String should match pattern", "(got 'My Bench')"]),
    (_set("format", 2), ["format: got 2; this rig reads format = 1"]),
    (_set("format", _DELETE), ["format: missing; this rig reads rig files with format = 1"]),
]


@pytest.mark.parametrize(("mutate", "fragments"), BROKEN, ids=[b[1][0][:50] for b in BROKEN])
def test_broken_rig_gets_a_precise_message(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], fragments: list[str]
) -> None:
    data = copy.deepcopy(_raw())
    mutate(data)
    path = tmp_path / "broken-rig.toml"
    with pytest.raises(RigError) as info:
        parse_rig(data, path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert len(info.value.problems) == 1, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    data = _raw()
    data["ev"]["r2_pin"] = 99
    data["load"]["baudrate"] = 1
    with pytest.raises(RigError) as info:
        parse_rig(data, tmp_path / "r.toml")
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{tmp_path / 'r.toml'}: ev.r2_pin:") and "(got 99)" in lines[0]
    assert lines[1].startswith(f"{tmp_path / 'r.toml'}: load.baudrate:") and "(got 1)" in lines[1]


def test_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('format = 1\n[rig\nname = "x"\n')
    with pytest.raises(RigError) as info:
        load_rig(path)
    assert str(info.value).startswith(f"{path}: not valid TOML") and "line 2" in str(info.value)


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(RigError, match=re.escape("missing.toml: cannot read: No such file or directory")):
        load_rig(tmp_path / "missing.toml")
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"format = 1\n# \xe9\n")
    with pytest.raises(RigError, match=re.escape("latin1.toml: not UTF-8 text")):
        load_rig(path)
