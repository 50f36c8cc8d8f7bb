"""The SCPI load driver against the simulated instrument on a pty: the exact lines sent, scaling, the
error queue, timeouts, garbage, rig limits and closing. Real time, with a 100 ms answer timeout."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal.buses import open_serial
from hal.errors import DeviceNotFound, DeviceTimeout, ProtocolError
from hil.bench.rig import LoadConfig
from hil.bench.scpi_load import (
    ScpiIdentity,
    ScpiInstrumentError,
    ScpiLoad,
    SetpointRefused,
    parse_number,
)
from hil.bench.sim_scpi import DEFAULT_IDN, ScpiLoadSim

TIMEOUT_S = 0.1
START = ["*CLS", "*IDN?", "*RST", "SYST:REM", "INP OFF"]


def _config(**overrides: Any) -> LoadConfig:
    fields: dict[str, Any] = {
        "port": "/dev/ttyUSB0",
        "baudrate": 9600,
        "timeout_s": TIMEOUT_S,
        "max_current_a": 32.0,
        "max_power_w": 7400.0,
    }
    fields.update(overrides)
    return LoadConfig(**fields)


@dataclass
class Bench:
    sim: ScpiLoadSim
    load: ScpiLoad

    def run(self, coro: Any) -> Any:
        return asyncio.run(coro)

    def fresh(self) -> None:
        """Forget what was received so far."""
        self.sim.received.clear()
        self.sim.raw.clear()


def _bench(config: LoadConfig) -> Iterator[Bench]:
    sim, path = ScpiLoadSim.open_pty()
    port = open_serial(path, 9600, timeout=0.01)
    try:
        yield Bench(sim, ScpiLoad(port, config))
    finally:
        port.close()
        sim.close()


@pytest.fixture
def bench() -> Iterator[Bench]:
    yield from _bench(_config())


def _with_checks(commands: list[str]) -> list[str]:
    return [line for command in commands for line in (command, "SYST:ERR?")]


# ----------------------------------------------------------------------------------- commands
def test_start_sends_the_setup_sequence_each_line_checked(bench: Bench) -> None:
    identity = bench.run(bench.load.start())
    assert identity == ScpiIdentity("EVSE-FIRMWARE", "SIM-LOAD-1", "0001", "1.0")
    assert bench.load.identity == identity
    assert bench.sim.received == _with_checks(START)
    assert bytes(bench.sim.raw) == "".join(f"{line}\n" for line in _with_checks(START)).encode()
    assert bench.sim.remote and not bench.sim.input_on


@pytest.mark.parametrize(
    ("amps", "line"),
    [(16, "CURR 16.000"), (6.5, "CURR 6.500"), (0, "CURR 0.000"), (0.0004, "CURR 0.000"), (31.9996, "CURR 32.000")],
)
def test_current_setpoint_lines(bench: Bench, amps: float, line: str) -> None:
    bench.run(bench.load.set_current(amps))
    assert bench.sim.received == [line, "SYST:ERR?"]


def test_input_on_and_measurements(bench: Bench) -> None:
    async def main() -> tuple[float, float, float, float]:
        await bench.load.start()
        idle = await bench.load.measure_current()
        await bench.load.set_current(16)
        await bench.load.set_input(True)
        return (
            idle,
            await bench.load.measure_current(),
            await bench.load.measure_voltage(),
            await bench.load.measure_power(),
        )

    bench.sim.voltage_v = 231.5
    idle, amps, volts, watts = bench.run(main())
    assert idle == 0.0
    assert amps == 16.0 and volts == 231.5 and watts == pytest.approx(16 * 231.5)
    assert bench.sim.commands[len(START) :] == [
        "MEAS:CURR?",
        "CURR 16.000",
        "INP ON",
        "MEAS:CURR?",
        "MEAS:VOLT?",
        "MEAS:POW?",
    ]


# ----------------------------------------------------------------------------------- error queue
def test_an_error_queue_entry_is_raised_with_the_command(bench: Bench) -> None:
    bench.sim.push_error(-221, "Settings conflict")
    with pytest.raises(ScpiInstrumentError) as info:
        bench.run(bench.load.set_input(True))
    assert info.value.command == "INP ON" and info.value.entries == [(-221, "Settings conflict")]
    assert "after 'INP ON'" in str(info.value) and '-221,"Settings conflict"' in str(info.value)
    bench.fresh()
    bench.run(bench.load.set_input(False))  # the queue was emptied: the next command is clean
    assert bench.sim.received == ["INP OFF", "SYST:ERR?"]


def test_every_queued_error_is_read_and_reported(bench: Bench) -> None:
    bench.sim.push_error(-222, "Data out of range")
    bench.sim.push_error(-113, "Undefined header")
    with pytest.raises(ScpiInstrumentError) as info:
        bench.run(bench.load.measure_voltage())
    assert info.value.entries == [(-222, "Data out of range"), (-113, "Undefined header")]
    assert bench.sim.received == ["MEAS:VOLT?", "SYST:ERR?", "SYST:ERR?", "SYST:ERR?"]


def test_a_setting_the_instrument_refuses_is_reported(bench: Bench) -> None:
    bench.sim.max_current_a = 10.0  # a smaller load than the rig file says
    with pytest.raises(ScpiInstrumentError, match=r"'CURR 16.000'.*-222,\"Data out of range\""):
        bench.run(bench.load.set_current(16))


def test_an_error_queue_that_never_empties_is_reported(bench: Bench) -> None:
    for _ in range(10):
        bench.sim.push_error(-100, "Command error")
    with pytest.raises(ScpiInstrumentError, match="did not empty after 8 reads"):
        bench.run(bench.load.remote())


# ----------------------------------------------------------------------------------- bounded time
def test_a_silent_instrument_times_out_in_bounded_time(bench: Bench) -> None:
    bench.sim.silent = True
    start = time.monotonic()
    with pytest.raises(DeviceTimeout) as info:
        bench.run(bench.load.measure_current())
    elapsed = time.monotonic() - start
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 0.3
    assert "no answer to 'MEAS:CURR?' within 100 ms" in str(info.value) and "9600" in str(info.value)
    assert info.value.device == "load"


def test_a_silent_error_check_times_out_too(bench: Bench) -> None:
    bench.sim.garbage(b"", "SYST:ERR?")  # answers everything but the error query
    with pytest.raises(DeviceTimeout, match="no answer to 'SYST:ERR\\?'"):
        bench.run(bench.load.set_input(False))


def test_a_line_that_never_ends_times_out_and_says_what_came(bench: Bench) -> None:
    bench.sim.garbage(b"1.6E+0", "MEAS:CURR?")
    with pytest.raises(DeviceTimeout, match=r"got only b'1.6E\+0'"):
        bench.run(bench.load.measure_current())


def test_a_late_answer_is_dropped_not_taken_for_the_next_one(bench: Bench) -> None:
    async def main() -> float:
        await bench.load.set_current(16)
        await bench.load.set_input(True)
        bench.sim.delay_next_answer(TIMEOUT_S * 1.5)
        with pytest.raises(DeviceTimeout):
            await bench.load.measure_current()  # its answer, 16 A, arrives after the deadline
        return await bench.load.measure_voltage()

    assert bench.run(main()) == 230.0


# ----------------------------------------------------------------------------------- garbage
@pytest.mark.parametrize(
    ("query", "reply", "method", "message"),
    [
        ("MEAS:CURR?", b"\xff\xfe\x80\n", "measure_current", "not ASCII text"),
        (
            "MEAS:VOLT?",
            b"twelve\n",
            "measure_voltage",
            "malformed answer to 'MEAS:VOLT?': 'twelve' (expected a number)",
        ),
        ("MEAS:VOLT?", b"nan\n", "measure_voltage", "expected a number"),
        ("MEAS:POW?", b"1,2\n", "measure_power", "expected a number"),
        ("MEAS:CURR?", b"1.0E+06\n", "measure_current", "implausible answer to 'MEAS:CURR?': 1e+06 A"),
        ("MEAS:CURR?", b"1.0\x07\n", "measure_current", "control characters"),
        ("MEAS:CURR?", b"1.0\n2.0\n", "measure_current", "more than one line"),
        ("MEAS:CURR?", b"7" * 300, "measure_current", "longer than 256 bytes"),
        ("*IDN?", b"HELLO\n", "identify", "malformed answer to '*IDN?': 'HELLO'"),
        ("SYST:ERR?", b"no errors\n", "remote", "malformed answer to 'SYST:ERR?' after 'SYST:REM'"),
    ],
)
def test_garbage_is_a_protocol_error(bench: Bench, query: str, reply: bytes, method: str, message: str) -> None:
    bench.sim.garbage(reply, query)
    with pytest.raises(ProtocolError) as info:
        bench.run(getattr(bench.load, method)())
    assert message in str(info.value)
    assert not isinstance(info.value, ScpiInstrumentError)


def test_scpi_not_a_number_is_a_protocol_error(bench: Bench) -> None:
    bench.sim.nan_readings = True
    with pytest.raises(ProtocolError, match=re.escape("9.91E37")):
        bench.run(bench.load.measure_current())


def test_crlf_answers_are_accepted(bench: Bench) -> None:
    bench.sim.garbage(b"2.30000E+02\r\n", "MEAS:VOLT?")
    assert bench.run(bench.load.measure_voltage()) == 230.0


# ----------------------------------------------------------------------------------- rig limits
@pytest.mark.parametrize(
    ("config", "amps", "message"),
    [
        (_config(), 32.5, "32.5 A refused: above the rig limit load.max_current_a = 32 A"),
        (_config(max_power_w=3000), 16, "16 A x 230 V = 3680 W is above the rig limit load.max_power_w = 3000 W"),
        (_config(), -1.0, "must be a number >= 0 A, got -1.0"),
        (_config(), math.nan, "must be a number >= 0 A, got nan"),
        (_config(), math.inf, "got inf"),
    ],
)
def test_a_setpoint_beyond_the_rig_limits_is_refused_without_sending(
    config: LoadConfig, amps: float, message: str
) -> None:
    for bench in _bench(config):
        with pytest.raises(SetpointRefused) as info:
            bench.run(bench.load.set_current(amps))
        assert message in str(info.value)
        time.sleep(0.05)  # anything sent would have arrived by now
        assert bench.sim.received == []


@given(
    max_current=st.floats(1, 100),
    max_power=st.floats(100, 50_000),
    volts=st.floats(100, 300),
    amps=st.floats(-10, 200, allow_nan=False),
)
def test_a_setpoint_is_accepted_exactly_within_both_limits(
    max_current: float, max_power: float, volts: float, amps: float
) -> None:
    config = _config(max_current_a=max_current, max_power_w=max_power, nominal_voltage_v=volts)
    load = ScpiLoad(_NullPort(), config)
    allowed = 0 <= amps <= max_current and amps * volts <= max_power
    try:
        load.check_current(amps)
        accepted = True
    except SetpointRefused:
        accepted = False
    assert accepted == allowed


class _NullPort:
    timeout: float | None = None
    write_timeout: float | None = None


# ----------------------------------------------------------------------------------- numbers
@given(st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from(["{:.5E}", "{:.3f}", "{:g}", "{:+.2e}"]))
def test_number_answers_round_trip(value: float, form: str) -> None:
    text = form.format(value)
    assert parse_number("load", "MEAS:CURR?", text) == pytest.approx(float(text))


@pytest.mark.parametrize("text", ["", "inf", "-nan", "1_000", "0x10", "1.2.3", "1e", "--1", " 1", "9.91E37"])
def test_malformed_numbers(text: str) -> None:
    with pytest.raises(ProtocolError):
        parse_number("load", "MEAS:CURR?", text)


# ----------------------------------------------------------------------------------- closing
def test_close_sends_inp_off_and_refuses_further_use(bench: Bench) -> None:
    bench.run(bench.load.close())
    assert bench.sim.received == ["INP OFF", "SYST:ERR?"]
    with pytest.raises(DeviceNotFound, match="driver closed"):
        bench.run(bench.load.measure_current())


def test_close_sends_inp_off_after_a_timeout(bench: Bench) -> None:
    async def main() -> None:
        await bench.load.set_current(10)
        await bench.load.set_input(True)
        bench.sim.silent = True
        with pytest.raises(DeviceTimeout):
            await bench.load.measure_current()
        bench.sim.silent = False
        await bench.load.close()

    bench.run(main())
    assert bench.sim.commands[-1] == "INP OFF" and not bench.sim.input_on


def test_close_sends_inp_off_after_garbage_and_instrument_errors(bench: Bench) -> None:
    async def main() -> None:
        await bench.load.set_input(True)
        bench.sim.garbage(b"\xff\n", "MEAS:CURR?")
        with pytest.raises(ProtocolError):
            await bench.load.measure_current()
        bench.sim.push_error(-350, "Queue overflow")
        with pytest.raises(ScpiInstrumentError):
            await bench.load.measure_voltage()
        await bench.load.close()

    bench.run(main())
    assert bench.sim.commands[-1] == "INP OFF" and not bench.sim.input_on


def test_close_on_a_silent_instrument_still_sends_and_reports(bench: Bench) -> None:
    bench.run(bench.load.set_input(True))
    bench.sim.silent = True  # it hears, acts, and cannot answer
    with pytest.raises(DeviceTimeout):
        bench.run(bench.load.close())
    assert bench.sim.commands[-1] == "INP OFF" and not bench.sim.input_on
    with pytest.raises(DeviceNotFound, match="driver closed"):
        bench.run(bench.load.set_input(True))
    bench.sim.silent = False
    bench.run(bench.load.close())  # a second close sends INP OFF again
    assert bench.sim.commands[-2:] == ["INP OFF", "INP OFF"]


def test_the_simulator_answers_long_forms_and_flags_unknown_commands() -> None:
    sim = ScpiLoadSim(-1)
    assert sim.handle("*idn?") == DEFAULT_IDN
    assert sim.handle(":SYSTem:REMote".upper()) is None and sim.remote
    sim.handle("CURRENT 12.5")
    sim.handle("input on")
    assert sim.handle("MEASURE:CURRENT?") == "1.25000E+01"
    sim.handle("FETCH:CURR?")
    sim.handle("CURR")
    sim.handle("CURR twelve")
    assert [sim.handle("SYST:ERR?") for _ in range(4)] == [
        '-113,"Undefined header"',
        '-109,"Missing parameter"',
        '-104,"Data type error"',
        '0,"No error"',
    ]
