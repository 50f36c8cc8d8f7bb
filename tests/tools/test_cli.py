"""The ``evse`` command: board list/check and the bring-up probe on the simulated boards."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from board.build import open_board
from board.loader import load_board, shipped_boards
from firmware.cli import main
from tools.probe import probe


def test_board_list_names_every_shipped_board(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["board", "list"]) == 0
    out = capsys.readouterr().out
    for name in shipped_boards():
        assert name in out
    assert "BROKEN" not in out


def test_board_check_ok_and_broken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(shipped_boards()["sim-ac"].read_text().replace("pwm_pin = 18", "pwm_pin = 4"))
    assert main(["board", "check", "sim-ac", "pi-dc-bidi"]) == 0
    assert "sim-ac: OK" in capsys.readouterr().out
    assert main(["board", "check", "sim-ac", str(broken)]) == 1
    err = capsys.readouterr().err
    assert f"{broken}: pilot.pwm_pin: this pin has no hardware PWM" in err
    assert "(got 4)" in err


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["sim-ac", "sim-dc-bidi"])
def test_probe_passes_on_every_peripheral_of_a_sim_board(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hal", "probe", "--board", name, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    results = report[name]
    assert all(r["ok"] for r in results), results
    functions = " ".join(r["function"] for r in results)
    for expected in ("pilot", "proximity", "contactor", "rcd", "meter"):
        assert expected in functions
    if name == "sim-dc-bidi":
        assert "converter" in functions and "imd" in functions


@pytest.mark.timeout(60)
def test_probe_reports_a_welded_contactor_and_goes_on() -> None:
    async def run() -> list[tuple[str, bool, str]]:
        hal = await open_board(load_board("sim-ac"))
        try:
            assert hal.sim is not None
            hal.sim.plant.contactor_welded = True
            await hal.settle()
            results = await probe(hal, actuate=True)
        finally:
            await hal.close()
        return [(r.function, r.ok, r.detail) for r in results]

    results = asyncio.run(run())
    contactor = next(r for r in results if r[0].startswith("contactor"))
    assert contactor[1] is False and "welded" in contactor[2]
    # every other peripheral was still probed, and passed
    assert all(ok for fn, ok, _ in results if not fn.startswith("contactor"))
    assert len(results) == 8


@pytest.mark.timeout(60)
def test_probe_reports_a_missing_meter_chip() -> None:
    async def run() -> tuple[bool, str]:
        hal = await open_board(load_board("sim-ac"))
        try:
            assert hal.sim is not None and hal.sim.spi is not None
            hal.sim.spi.detach(0, 1)  # the meter's chip select now reaches nothing: MISO floats high
            results = await probe(hal, actuate=True)
        finally:
            await hal.close()
        meter = next(r for r in results if r.function.startswith("meter"))
        return meter.ok, meter.detail

    ok, detail = asyncio.run(run())
    assert not ok
    assert "ATM90E32 on SPI0.1" in detail


def test_probe_of_a_real_board_without_hardware_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    # This machine has no /dev/spidev*, gpiochip for lgpio or CAN: a clear error, exit 1, no traceback.
    status = main(["hal", "probe", "--board", "pi-ac"])
    captured = capsys.readouterr()
    assert status == 1
    assert "cannot open" in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("fmt", ["table", "dot", "mermaid"])
def test_states_prints_and_draws_the_table(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    from firmware.iec61851.machine import STATES, transition_rows

    assert main(["states", "--format", fmt]) == 0
    out = capsys.readouterr().out
    for state in STATES:
        assert state in out
    if fmt == "table":
        assert len([line for line in out.splitlines() if "->" in line]) == len(transition_rows())
        assert "offer_allowed" in out
    elif fmt == "dot":
        assert out.startswith("digraph connector {") and '"C2" -> "B2"' in out
    else:
        assert out.startswith("stateDiagram-v2") and "C2 --> B2: ev_b" in out


@pytest.mark.timeout(120)
def test_demo_runs_a_full_session_and_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from firmware.demo import run_demo

    assert asyncio.run(run_demo(tmp_path)) == 0
    out = capsys.readouterr().out
    for expected in ("B2 -> C2", "limit ems = 16 A", "fault rcd_tripped RAISED", "EVDisconnected", "demo: PASSED"):
        assert expected in out
    assert (tmp_path / "report.html").is_file() and (tmp_path / "trace.jsonl").is_file()


def test_status_without_a_running_firmware_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--control", str(tmp_path / "none.sock")]) == 1
    assert "no firmware answering" in capsys.readouterr().err


def test_ctl_parameters_must_be_key_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ctl", "limit", "sixteen"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_faults_lists_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    from firmware.safety.faults import FaultCode

    assert main(["faults"]) == 0
    out = capsys.readouterr().out
    for code in FaultCode:
        assert code.value in out
    assert "contactor_welded  [emergency, recovers: service]" in out
