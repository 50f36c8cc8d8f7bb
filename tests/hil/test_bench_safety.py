"""Bench safety: the confirmation flag, and the safe stop (load off first, then the EV emulator
unplugged; every step attempted, every failure reported), with fakes and with the real drivers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from hal.buses import open_serial
from hal.errors import DeviceNotFound, DeviceTimeout
from hil.bench.ev_emulator import RelayEvEmulator
from hil.bench.rig import EvEmulatorConfig, LoadConfig
from hil.bench.safety import (
    CONFIRM_FLAG,
    ConfirmationMissing,
    SafeStopError,
    require_confirmation,
    safe_stop,
)
from hil.bench.scpi_load import ScpiLoad
from hil.bench.sim_scpi import ScpiLoadSim


# ----------------------------------------------------------------------------------- confirmation
def test_bench_mode_is_refused_without_the_flag() -> None:
    with pytest.raises(ConfirmationMissing) as info:
        require_confirmation(False)
    assert CONFIRM_FLAG == "--i-have-an-emergency-stop"
    assert CONFIRM_FLAG in str(info.value) and "emergency stop within reach" in str(info.value)


def test_bench_mode_is_allowed_with_the_flag() -> None:
    require_confirmation(True)  # no exception: bench mode may start


# ----------------------------------------------------------------------------------- with fakes
class FakeLoad:
    def __init__(self, log: list[str], error: BaseException | None = None, hang: bool = False) -> None:
        self.log, self.error, self.hang = log, error, hang

    async def input_off(self) -> None:
        self.log.append("load off: started")
        if self.hang:
            await asyncio.sleep(3600)
        if self.error is not None:
            raise self.error
        self.log.append("load off")


class FakeEmulator:
    def __init__(self, log: list[str], error: Exception | None = None) -> None:
        self.log, self.error = log, error

    def open_all(self) -> None:
        self.log.append("emulator open")
        if self.error is not None:
            raise self.error


def test_the_load_goes_off_before_the_ev_is_unplugged() -> None:
    log: list[str] = []
    report = asyncio.run(safe_stop(FakeEmulator(log), FakeLoad(log)))
    assert log == ["load off: started", "load off", "emulator open"]
    assert report.ok and report.steps == [("load input off", None), ("EV emulator unplugged", None)]


def test_a_failing_load_does_not_stop_the_unplug() -> None:
    log: list[str] = []
    with pytest.raises(SafeStopError) as info:
        asyncio.run(safe_stop(FakeEmulator(log), FakeLoad(log, DeviceTimeout("load", "no answer to 'INP OFF'"))))
    assert log == ["load off: started", "emulator open"]
    report = info.value.report
    assert report.steps[1] == ("EV emulator unplugged", None)
    assert report.errors == ["load input off: DeviceTimeout: load: no answer to 'INP OFF'"]
    assert "make the bench safe with the emergency stop" in str(info.value)


def test_a_failing_emulator_is_reported_after_the_load_went_off() -> None:
    log: list[str] = []
    with pytest.raises(SafeStopError) as info:
        asyncio.run(safe_stop(FakeEmulator(log, DeviceNotFound("ev-emulator", "relay board gone")), FakeLoad(log)))
    assert log == ["load off: started", "load off", "emulator open"]
    assert info.value.report.errors == ["EV emulator unplugged: DeviceNotFound: ev-emulator: relay board gone"]


def test_both_failures_are_collected() -> None:
    log: list[str] = []
    with pytest.raises(SafeStopError) as info:
        asyncio.run(safe_stop(FakeEmulator(log, RuntimeError("b")), FakeLoad(log, ValueError("a"))))
    assert info.value.report.errors == ["load input off: ValueError: a", "EV emulator unplugged: RuntimeError: b"]
    assert "ValueError: a" in str(info.value) and "RuntimeError: b" in str(info.value)


def test_a_hanging_load_is_given_up_on_in_bounded_time() -> None:
    log: list[str] = []

    async def main() -> None:
        async with asyncio.timeout(2.0):
            await safe_stop(FakeEmulator(log), FakeLoad(log, hang=True), load_timeout_s=0.05)

    with pytest.raises(SafeStopError) as info:
        asyncio.run(main())
    assert info.value.report.errors == ["load input off: no result within 0.05 s"]
    assert log == ["load off: started", "emulator open"]


def test_the_emulator_is_unplugged_even_when_the_stop_is_cancelled() -> None:
    log: list[str] = []

    async def main() -> None:
        task = asyncio.create_task(safe_stop(FakeEmulator(log), FakeLoad(log, hang=True)))
        await asyncio.sleep(0.01)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    assert log == ["load off: started", "emulator open"]


def test_missing_instruments_are_skipped() -> None:
    log: list[str] = []
    assert asyncio.run(safe_stop(FakeEmulator(log), None)).steps == [("EV emulator unplugged", None)]
    assert asyncio.run(safe_stop(None, FakeLoad(log))).steps == [("load input off", None)]


# ----------------------------------------------------------------------------------- real drivers
@pytest.fixture
def rig() -> Iterator[tuple[ScpiLoadSim, ScpiLoad, RelayEvEmulator, Any]]:
    sim, path = ScpiLoadSim.open_pty()
    port = open_serial(path, 9600, timeout=0.01)
    factory = MockFactory()
    config = EvEmulatorConfig(
        relay_active_high=True,
        settle_ms=0,
        r2_pin=6,
        r3_c_pin=7,
        diode_bypass_pin=5,
        pilot_short_pin=4,
        pp_32a_pin=21,
        cable_a=32,
    )
    load = ScpiLoad(port, LoadConfig(port=path, baudrate=9600, timeout_s=0.1, max_current_a=32, max_power_w=7400))
    yield sim, load, RelayEvEmulator(config, pin_factory=factory), factory
    factory.close()
    factory.reset()
    port.close()
    sim.close()


def test_safe_stop_on_the_real_drivers(rig: tuple[ScpiLoadSim, ScpiLoad, RelayEvEmulator, Any]) -> None:
    sim, load, emulator, factory = rig

    async def main() -> None:
        await load.start()
        await load.set_current(16)
        await load.set_input(True)
        emulator.plug_in()
        emulator.force_state("C")
        await safe_stop(emulator, load)

    asyncio.run(main())
    assert not sim.input_on and sim.commands[-1] == "INP OFF"
    assert emulator.state == "A" and not any(emulator.relays.values())
    assert all(factory.pin(pin).state == 0 for pin in (4, 5, 6, 7, 21))


def test_safe_stop_with_a_silent_load_still_unplugs(rig: tuple[ScpiLoadSim, ScpiLoad, RelayEvEmulator, Any]) -> None:
    sim, load, emulator, _ = rig
    emulator.plug_in()
    emulator.force_state("C")
    sim.silent = True
    with pytest.raises(SafeStopError) as info:
        asyncio.run(safe_stop(emulator, load))
    assert "load input off: DeviceTimeout" in info.value.report.errors[0]
    assert emulator.state == "A" and not any(emulator.relays.values())
