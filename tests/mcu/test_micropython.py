"""The co-processor firmware on real MicroPython (the official WebAssembly port under Node, installed by
tests/mcu/micropython.py): its own files run tests/mcu/mpy_scenarios.py there, the same checks the
CPython tests make (every frame type, each hard fault within the safe-state budget, corrupted frames),
and nothing in it depends on CPython."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware.mcu_deploy import MEMORY_PROBE
from tests.mcu.micropython import run_micropython

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = [ROOT / "board" / "mcu" / name for name in ("protocol.py", "core.py", "loop.py")]
HERE = Path(__file__).resolve().parent
#: What mpy_scenarios.py checks: the boot event, an ACK for each of the 9 request types, a NACK, a status
#: push, the safe state for 7 hard faults, a corrupted frame ignored and the resync after it.
EXPECTED_CHECKS = 1 + 9 + 1 + 1 + 7 + 2
#: The RP2040 gives MicroPython about 190 KiB of heap; the firmware, its buffers and this whole test
#: must fit well inside it.
HEAP_BUDGET_BYTES = 150 * 1024
#: The firmware's modules alone, loaded as main.py loads them: a third of that heap at most.
FIRMWARE_HEAP_BUDGET_BYTES = 64 * 1024

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def test_the_firmware_runs_on_micropython_and_passes_its_checks() -> None:
    out = run_micropython(HERE / "mpy_scenarios.py", [*FIRMWARE, HERE / "fake_hw.py", HERE / "pi_side.py"])
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    *checks, summary = lines
    failed = [c for c in checks if not c["ok"]]
    assert not failed, failed
    assert summary["implementation"] == "micropython" and summary["version"][:2] == [1, 27]
    assert summary["checks"] == len(checks) == EXPECTED_CHECKS
    assert 0 < summary["mem_alloc"] < HEAP_BUDGET_BYTES
    print(f"MicroPython {summary['version']}: {len(checks)} checks, heap in use {summary['mem_alloc']} bytes")


def test_the_rp2040_seam_and_the_main_loop_run_on_micropython() -> None:
    files = [*FIRMWARE, ROOT / "board" / "mcu" / "hw_rp2040.py", ROOT / "board" / "mcu" / "pins.py"]
    out = run_micropython(HERE / "mpy_rp2040.py", [*files, HERE / "fake_machine.py"])
    result = json.loads(out.strip().splitlines()[-1])
    assert {0xC1, 0x81, 0x90} <= set(result["kinds"])  # EVENT_BOOT, HELLO and SET_PILOT acknowledged
    assert result["cp_state"] == 3 and result["fed"] == 5  # state C read in step with the PWM; watchdog fed
    assert abs(result["high_mv"] - 6000) < 50 and abs(result["low_mv"] + 12000) < 50


def test_the_deploy_memory_probe_runs_on_micropython(tmp_path: Path) -> None:
    """What `evse mcu deploy` reports, measured here on MicroPython with the firmware's modules loaded."""
    entry = tmp_path / "probe.py"
    entry.write_text(f"PROBE = {MEMORY_PROBE!r}\n" + (HERE / "mpy_memory.py").read_text())
    files = [*FIRMWARE, ROOT / "board" / "mcu" / "hw_rp2040.py", ROOT / "board" / "mcu" / "pins.py"]
    out = run_micropython(entry, files)
    _, used, free = out.strip().splitlines()[-1].split()
    assert 0 < int(used) < FIRMWARE_HEAP_BUDGET_BYTES < int(used) + int(free)
    print(f"firmware loaded on MicroPython: heap in use {used} bytes")


def test_a_firmware_file_that_breaks_on_micropython_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "core.py"
    broken.write_text("from __future__ import annotations\n")  # MicroPython has no __future__ module
    with pytest.raises(Exception, match="__future__"):
        run_micropython(
            HERE / "mpy_scenarios.py", [FIRMWARE[0], broken, FIRMWARE[2], HERE / "fake_hw.py", HERE / "pi_side.py"]
        )
