"""The Pi's co-processor driver (hal/drivers/mcu_link.py) against the co-processor firmware running on
real MicroPython (tests/mcu/micropython.py MicroPythonDevice), over a pty, in real time with bounded
waits: every frame type through the driver's HAL adapters, and the fail-safe when the Pi goes silent."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from hal.buses import open_serial
from hal.clock import RealClock
from hal.drivers.mcu_frames import ErrorFlag, SelftestState
from hal.drivers.mcu_link import (
    McuConnectorLock,
    McuContactor,
    McuLink,
    McuPilotOutput,
    McuProximity,
    McuResidualCurrentMonitor,
)
from tests.mcu.micropython import MicroPythonDevice

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
FILES = [*(ROOT / "board" / "mcu" / n for n in ("protocol.py", "core.py", "loop.py")), HERE / "fake_hw.py"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def until(predicate: object, what: str, within_s: float = 5.0) -> None:
    end = time.monotonic() + within_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_the_driver_and_the_micropython_firmware_exchange_every_frame_type() -> None:
    async def main() -> None:
        with MicroPythonDevice(HERE / "mpy_serve.py", FILES) as mcu:
            port = open_serial(mcu.path, 115200, 0.05)
            link = McuLink(port, name="mpy", clock=RealClock())
            try:
                async with asyncio.timeout(60):
                    hello = await link.start()  # HELLO, READ_STATUS, then HEARTBEATs
                    assert hello.protocol_version == 1
                    pilot = McuPilotOutput(link)
                    await pilot.set_pwm(267)  # SET_PILOT
                    mcu.plant("ev", "C")
                    await until(lambda: link.status is not None and link.status.cp_state.name == "C", "state C")
                    contactor = McuContactor(link)
                    await contactor.close()  # SET_CONTACTOR
                    assert mcu.query("coil") == "true" and await contactor.feedback_closed() is True
                    lock = McuConnectorLock(link)
                    await lock.lock()  # SET_LOCK
                    await until(lambda: link.status is not None and link.status.outputs & 0x10, "lock feedback")
                    rcm = McuResidualCurrentMonitor(link)
                    assert await rcm.self_test() is True  # RCD_SELFTEST (and its STATUS events)
                    status = await link.clear_errors(ErrorFlag(0xFFFF))  # CLEAR_ERRORS
                    assert status.selftest is SelftestState.PASSED
                    await link.read_status()  # READ_STATUS
                    mcu.plant("pp", 220)  # a 32 A cable's coding resistor (IEC 61851-1 Table B.2)
                    assert (await McuProximity(link).read()).ampacity_a == 32  # READ_PP
                    mcu.plant("residual_ma", 8.0)  # earth leakage: the co-processor acts by itself
                    await until(lambda: mcu.query("coil") == "false", "the coil released")
                    # Its STATUS push may still be on the way: wait for it, then read the input.
                    await until(
                        lambda: link.status is not None and bool(link.status.flags & ErrorFlag.RCD_TRIGGERED),
                        "the trip reported",
                    )
                    assert await rcm.tripped() is True
                    with pytest.raises(Exception, match="INTERLOCK"):
                        await contactor.close()
                    assert link.decoder_stats.bad_crc == 0
                    assert link.last_boot is not None  # EVENT_BOOT, sent at power-on
                    assert link.status_snapshot is not None  # EVENT_STATUS pushes keep it fresh
            finally:
                await link.stop()
                port.close()

    asyncio.run(main())


def test_when_the_pi_goes_silent_the_firmware_opens_the_contactor_by_itself() -> None:
    async def main() -> None:
        with MicroPythonDevice(HERE / "mpy_serve.py", FILES) as mcu:
            port = open_serial(mcu.path, 115200, 0.05)
            link = McuLink(port, name="mpy", clock=RealClock())
            async with asyncio.timeout(60):
                await link.start()
                await McuPilotOutput(link).set_pwm(267)
                mcu.plant("ev", "C")
                await until(lambda: link.status is not None and link.status.cp_state.name == "C", "state C")
                await McuContactor(link).close()
                assert mcu.query("coil") == "true"
                await link.stop()  # no more heartbeats
                port.close()
                silent = time.monotonic()
                await until(lambda: mcu.query("coil") == "false", "the fail-safe", within_s=3.0)
                took = time.monotonic() - silent
                assert 0.9 < took < 2.0, took  # the 1000 ms timeout, acted on at once
                assert mcu.query("mode") in ("2", "0")  # F, then X1 after 300 ms

    asyncio.run(main())
