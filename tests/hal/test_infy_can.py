"""InfyBidiConverter driven through InfyModuleSim over python-can virtual buses.

The driver's bus is opened with hal.buses.open_can (the board's real open path); the simulator and a
spy that records every frame each sit on their own virtual Bus on the same channel.

Identifiers below are written out by hand from the layout in standards-facts.md 6.1
(error << 26 | device << 22 | command << 16 | destination << 8 | source), module address 0x05,
controller 0xF0, device number 0x0A:
    read request  0x02A305F0 = 0x0A<<22 | 0x23<<16 | 0x05<<8 | 0xF0
    write request 0x02A405F0 = 0x0A<<22 | 0x24<<16 | 0x05<<8 | 0xF0
    write reply   0x02A4F005, read reply 0x02A3F005
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import can
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal.buses import open_can
from hal.clock import Clock, RealClock, VirtualClock
from hal.drivers.infy_can import (
    STATUS_BITS,
    InfyBidiConverter,
    InfyId,
    decode_id,
    decode_status_bits,
    encode_id,
    encode_payload,
)
from hal.errors import DeviceNotFound, DeviceTimeout, ProtocolError, UnsupportedOperation
from hal.interfaces import PowerConverter
from hal.sim.infy_module import InfyModuleSim, SimBattery
from hal.types import ConverterCapabilities, ConverterMode

pytestmark = pytest.mark.timeout(20)

ADDRESS = 0x05
READ_ID = 0x02A305F0
WRITE_ID = 0x02A405F0
READ_REPLY_ID = 0x02A3F005
WRITE_REPLY_ID = 0x02A4F005

CAPS = ConverterCapabilities(
    max_voltage_v=1000.0, min_voltage_v=150.0, max_current_a=100.0, max_power_w=30_000.0, bidirectional=True
)


@dataclass
class Rig:
    driver: InfyBidiConverter
    sim: InfyModuleSim
    spy: can.BusABC
    bus: Any

    def frames(self) -> list[can.Message]:
        """Every frame seen on the wire since the last call (bounded: the queue is finite)."""
        out = []
        while (msg := self.spy.recv(timeout=0)) is not None:
            out.append(msg)
        return out

    def requests(self) -> list[tuple[int, bytes]]:
        return [(m.arbitration_id, bytes(m.data)) for m in self.frames() if m.arbitration_id & 0xFF == 0xF0]


@asynccontextmanager
async def rig(
    clock: Clock | None = None,
    *,
    caps: ConverterCapabilities = CAPS,
    battery: SimBattery | None = None,
    **driver_kw: Any,
) -> AsyncIterator[Rig]:
    clock = clock or RealClock()
    channel = f"infy-{uuid4().hex}"
    bus = open_can("virtual", channel, 125_000)
    spy = can.Bus(interface="virtual", channel=channel)
    sim = InfyModuleSim(channel, clock=clock, address=ADDRESS, battery=battery or SimBattery(400.0, 0.1))
    driver_kw.setdefault("reply_timeout_s", 0.2)
    driver = InfyBidiConverter(
        bus, name="dc-converter", module_address=ADDRESS, capabilities=caps, clock=clock, **driver_kw
    )
    try:
        yield Rig(driver, sim, spy, bus)
    finally:
        await driver.stop()
        sim.close()
        spy.shutdown()
        bus.shutdown()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within the bound")
        await asyncio.sleep(0.001)


async def tick(clock: VirtualClock, driver: InfyBidiConverter, seconds: float = 1.0) -> None:
    """Advance virtual time by one keep-alive period and wait (in bounded real time) until the cycle
    that falls due has finished talking to the simulator."""
    before = driver.keepalive_cycles
    await clock.advance(seconds)
    await until(lambda: driver.keepalive_cycles > before)


def payload(b0: int, b1: int, value: int) -> bytes:
    return bytes([b0, b1, 0, 0]) + value.to_bytes(4, "big")


# ----------------------------------------------------------------------------- identifier layout


@given(
    error=st.integers(0, 7),
    device=st.integers(0, 15),
    command=st.integers(0, 0x3F),
    destination=st.integers(0, 0xFF),
    source=st.integers(0, 0xFF),
)
def test_id_round_trip(error: int, device: int, command: int, destination: int, source: int) -> None:
    fields = InfyId(error, device, command, destination, source)
    ident = encode_id(fields)
    assert 0 <= ident < 1 << 29
    assert decode_id(ident) == fields
    # The same layout written independently.
    assert ident == error << 26 | device << 22 | command << 16 | destination << 8 | source


@given(st.integers(0, (1 << 29) - 1))
def test_every_29_bit_id_decodes_and_re_encodes(ident: int) -> None:
    assert encode_id(decode_id(ident)) == ident


def test_id_fields_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="command"):
        encode_id(InfyId(0, 0x0A, 0x40, 0, 0xF0))
    with pytest.raises(ValueError, match="29-bit"):
        decode_id(1 << 29)


@given(b0=st.integers(0, 255), b1=st.integers(0, 255), value=st.integers(0, 0xFFFF_FFFF))
def test_payload_layout(b0: int, b1: int, value: int) -> None:
    data = encode_payload((b0, b1), value)
    assert len(data) == 8
    assert data[:4] == bytes([b0, b1, 0, 0])
    assert int.from_bytes(data[4:], "big") == value


def test_status_bit_names() -> None:
    # standards-facts.md 6.1 status list; byte7 = bits 0-7, byte6 = bits 8-15, byte5 = bits 16-23.
    flags, faults = decode_status_bits(1 << 12 | 1 << 8 | 1 << 16 | 1 << 0)
    assert flags == {"over_temperature", "dc_side_off", "power_limited", "output_short_circuit"}
    assert faults == {"over_temperature", "output_short_circuit"}
    assert decode_status_bits(0) == (frozenset(), frozenset())
    assert {name for name, _ in STATUS_BITS.values()} >= {"fan_fault", "input_phase_lost", "pfc_side_off"}


def test_constructor_refuses_broadcast_and_bad_controller() -> None:
    with pytest.raises(ValueError, match="broadcast"):
        InfyBidiConverter(
            object(),  # type: ignore[arg-type]
            name="x",
            module_address=0x3F,
            capabilities=CAPS,
            clock=RealClock(),
        )
    with pytest.raises(ValueError, match="controller"):
        InfyBidiConverter(
            object(),  # type: ignore[arg-type]
            name="x",
            module_address=1,
            capabilities=CAPS,
            clock=RealClock(),
            controller_address=0x10,
        )


# ----------------------------------------------------------------------------- exact frames


def test_is_a_power_converter() -> None:
    async def scenario() -> None:
        async with rig() as r:
            assert isinstance(r.driver, PowerConverter)

    run(scenario())


def test_frames_for_setpoint_mode_and_off() -> None:
    async def scenario() -> None:
        async with rig() as r:
            await r.driver.set_setpoint(400.5, 12.345)
            await r.driver.set_mode(ConverterMode.CHARGE)
            await r.driver.set_mode(ConverterMode.OFF)
            wire = r.frames()
            ours = [(m.arbitration_id, bytes(m.data)) for m in wire if m.arbitration_id & 0xFF == 0xF0]
            assert ours == [
                (WRITE_ID, bytes.fromhex("1001 0000 00061C74")),  # 400.5 V = 400500 mV
                (WRITE_ID, bytes.fromhex("1002 0000 00003039")),  # 12.345 A = 12345 mA
                (WRITE_ID, bytes.fromhex("2110 0000 000000A0")),  # working mode: rectifier
                (WRITE_ID, bytes.fromhex("1110 0000 000000A0")),  # on
                (WRITE_ID, bytes.fromhex("1110 0000 000000A1")),  # off
            ]
            assert all(m.is_extended_id and m.dlc == 8 for m in wire)
            replies = [m for m in wire if m.arbitration_id & 0xFF == ADDRESS]
            assert [m.arbitration_id for m in replies] == [WRITE_REPLY_ID] * 5
            assert [bytes(m.data) for m in replies] == [data for _, data in ours]
            assert r.sim.voltage_setpoint_v == 400.5
            assert r.sim.current_limit_a == 12.345
            assert not r.sim.output_on

    run(scenario())


def test_power_limit_becomes_a_current_limit() -> None:
    async def scenario() -> None:
        async with rig() as r:
            await r.driver.set_setpoint(400.0, 40.0, power_w=10_000.0)  # 10 kW / 400 V = 25 A < 40 A
            assert r.sim.current_limit_a == 25.0
            await r.driver.set_setpoint(400.0, 10.0, power_w=10_000.0)  # the current limit is lower
            assert r.sim.current_limit_a == 10.0
            r.frames()
            with pytest.raises(ValueError, match="power"):
                await r.driver.set_setpoint(400.0, 10.0, power_w=CAPS.max_power_w + 1)
            with pytest.raises(ValueError, match="power"):
                await r.driver.set_setpoint(400.0, 10.0, power_w=float("nan"))
            assert r.requests() == []  # a refused setpoint sends nothing

    run(scenario())


def test_read_status_frames_and_scaling() -> None:
    async def scenario() -> None:
        async with rig() as r:
            await r.driver.set_setpoint(401.0, 50.0)  # battery 400 V behind 0.1 ohm -> 10 A
            await r.driver.set_mode(ConverterMode.CHARGE)
            r.frames()
            status = await r.driver.read_status()
            wire = r.frames()
            assert [(m.arbitration_id, bytes(m.data)) for m in wire[0::2]] == [
                (READ_ID, payload(0x10, 0x01, 0)),
                (READ_ID, payload(0x10, 0x02, 0)),
                (READ_ID, payload(0x11, 0x10, 0)),
                (READ_ID, payload(0x11, 0x11, 0)),
            ]
            assert [(m.arbitration_id, bytes(m.data)) for m in wire[1::2]] == [
                (READ_REPLY_ID, payload(0x10, 0x01, 401_000)),
                (READ_REPLY_ID, payload(0x10, 0x02, 10_000)),
                (READ_REPLY_ID, payload(0x11, 0x10, 0)),  # on, no flags
                (READ_REPLY_ID, payload(0x11, 0x11, 0)),  # rectifier
            ]
            assert status.mode is ConverterMode.CHARGE
            assert status.output_on
            assert status.voltage_v == pytest.approx(401.0)
            assert status.current_a == pytest.approx(10.0)
            assert status.faults == frozenset()

            # Current-limited: 420 V wanted, 25 A allowed -> terminal 400 + 25 * 0.1 = 402.5 V.
            await r.driver.set_setpoint(420.0, 25.0)
            status = await r.driver.read_status()
            assert status.current_a == pytest.approx(25.0)
            assert status.voltage_v == pytest.approx(402.5)
            assert status.power_w == pytest.approx(402.5 * 25.0)

    run(scenario())


def test_discharge_reports_negative_current() -> None:
    async def scenario() -> None:
        async with rig() as r:
            await r.driver.set_setpoint(390.0, 30.0)  # battery 400 V would push 100 A; limit 30 A
            r.frames()
            await r.driver.set_mode(ConverterMode.DISCHARGE)
            assert r.requests() == [
                (WRITE_ID, payload(0x21, 0x10, 0xA1)),  # working mode: inverter
                (WRITE_ID, payload(0x11, 0x10, 0xA0)),
            ]
            status = await r.driver.read_status()
            assert status.mode is ConverterMode.DISCHARGE
            assert status.current_a == pytest.approx(-30.0)
            assert status.voltage_v == pytest.approx(397.0)
            assert status.power_w < 0
            assert r.sim.measurement() == pytest.approx((397.0, -30.0))

    run(scenario())


def test_reversing_direction_switches_off_first() -> None:
    async def scenario() -> None:
        async with rig() as r:
            await r.driver.set_setpoint(410.0, 10.0)
            await r.driver.set_mode(ConverterMode.CHARGE)
            r.frames()
            await r.driver.set_mode(ConverterMode.DISCHARGE)
            assert r.requests() == [
                (WRITE_ID, payload(0x11, 0x10, 0xA1)),
                (WRITE_ID, payload(0x21, 0x10, 0xA1)),
                (WRITE_ID, payload(0x11, 0x10, 0xA0)),
            ]
            assert r.sim.inverter_mode and r.sim.output_on

    run(scenario())


def test_group_addressing_uses_device_number_0x0b() -> None:
    async def scenario() -> None:
        async with rig(group=True) as r:
            await r.driver.read_status()
            ids = {ident for ident, _ in r.requests()}
            assert ids == {0x0B << 22 | 0x23 << 16 | ADDRESS << 8 | 0xF0}

    run(scenario())


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("voltage", "current", "words"),
    [
        (1000.5, 1.0, "outside 150.0..1000.0 V"),
        (149.0, 1.0, "outside 150.0..1000.0 V"),
        (400.0, 100.1, "outside 0..100.0 A"),
        (400.0, -1.0, "outside 0..100.0 A"),
        (400.0, 80.0, "exceeds the rated 30000 W"),
        (float("nan"), 1.0, "finite"),
        (400.0, float("inf"), "finite"),
    ],
)
def test_setpoint_validation_sends_nothing(voltage: float, current: float, words: str) -> None:
    async def scenario() -> None:
        async with rig() as r:
            with pytest.raises(ValueError, match=words):
                await r.driver.set_setpoint(voltage, current)
            assert r.frames() == []
            assert r.sim.voltage_setpoint_v == 0.0

    run(scenario())


def test_switching_on_needs_a_setpoint_and_discharge_needs_bidirectional() -> None:
    async def scenario() -> None:
        charge_only = ConverterCapabilities(1000.0, 150.0, 100.0, 30_000.0, bidirectional=False)
        async with rig(caps=charge_only) as r:
            with pytest.raises(ValueError, match="set_setpoint"):
                await r.driver.set_mode(ConverterMode.CHARGE)
            await r.driver.set_setpoint(400.0, 10.0)
            with pytest.raises(UnsupportedOperation, match="charge-only"):
                await r.driver.set_mode(ConverterMode.DISCHARGE)
            assert r.requests() == [
                (WRITE_ID, payload(0x10, 0x01, 400_000)),
                (WRITE_ID, payload(0x10, 0x02, 10_000)),
            ]

    run(scenario())


# ----------------------------------------------------------------------------- error paths


@pytest.mark.parametrize(
    ("code", "meaning"), [(0x02, "command invalid"), (0x03, "data invalid"), (0x07, "in start processing")]
)
def test_error_code_reply_raises_protocol_error(code: int, meaning: str) -> None:
    async def scenario() -> None:
        async with rig() as r:
            r.sim.inject_error(code)
            with pytest.raises(ProtocolError, match=meaning) as info:
                await r.driver.set_setpoint(400.0, 10.0)
            assert info.value.device == "dc-converter"
            replies = [m for m in r.frames() if m.arbitration_id & 0xFF == ADDRESS]
            assert replies[0].arbitration_id == code << 26 | WRITE_REPLY_ID
            with pytest.raises(ProtocolError, match=meaning):
                await r.driver.read_status()
            assert r.sim.voltage_setpoint_v == 0.0

    run(scenario())


def test_error_only_on_one_item() -> None:
    async def scenario() -> None:
        async with rig() as r:
            await r.driver.set_setpoint(400.0, 10.0)
            r.sim.inject_error(0x03, items={(0x11, 0x11)})
            with pytest.raises(ProtocolError, match=r"inverter status \(0x11 0x11\).*data invalid"):
                await r.driver.read_status()

    run(scenario())


def test_silent_module_times_out_quickly() -> None:
    async def scenario() -> None:
        async with rig(reply_timeout_s=0.05) as r:
            r.sim.silent = True
            started = time.monotonic()
            with pytest.raises(DeviceTimeout, match=r"module 0x05 did not answer the write") as info:
                await r.driver.set_setpoint(400.0, 10.0)
            assert time.monotonic() - started < 1.0
            assert info.value.device == "dc-converter"
            with pytest.raises(DeviceTimeout, match="read of DC voltage"):
                await r.driver.read_status()
            assert time.monotonic() - started < 2.0

    run(scenario())


def test_wrong_dlc_reply_is_a_protocol_error_and_stray_frames_are_ignored() -> None:
    async def scenario() -> None:
        async with rig() as r:
            r.sim.garbage = True
            with pytest.raises(ProtocolError, match="3 data bytes, expected 8"):
                await r.driver.read_status()
            r.sim.clear_faults()
            r.sim.send_stray_frame()  # unsolicited, wrong DLC, nothing pending: ignored
            await r.driver.set_setpoint(400.0, 10.0)
            status = await r.driver.read_status()
            assert status.voltage_v == pytest.approx(400.0)

    run(scenario())


def test_status_fault_bits_are_decoded() -> None:
    async def scenario() -> None:
        async with rig(walk_in=True, clock=VirtualClock()) as r:
            r.sim.set_status_faults({"over_temperature", "fan_fault", "input_phase_lost"})
            status = await r.driver.read_status()
            assert status.faults == {"over_temperature", "fan_fault", "input_phase_lost"}
            assert not status.output_on and status.mode is ConverterMode.OFF
            status_reply = [m for m in r.frames() if bytes(m.data[:2]) == b"\x11\x10"][1]
            # byte5 bit3 phase lost, byte6 bit0 DC side off + bit3 fan + bit4 over-temperature.
            assert bytes(status_reply.data[4:]) == bytes([0x00, 0x08, 0x19, 0x00])
            assert "dc_side_off" in r.driver.module_flags

    run(scenario())


SEND_ERRORS = [(errno.ENOBUFS, ProtocolError), (errno.ENETDOWN, DeviceNotFound)]


@pytest.mark.parametrize(("code", "error"), SEND_ERRORS)
def test_bus_send_errors_become_hal_errors(mocker: Any, code: int, error: type[Exception]) -> None:
    async def scenario() -> None:
        async with rig() as r:
            mocker.patch.object(r.bus, "send", side_effect=can.CanOperationError("send failed", code))
            with pytest.raises(error, match="sending the write of DC voltage"):
                await r.driver.set_setpoint(400.0, 10.0)

    run(scenario())


# ----------------------------------------------------------------------------- keep-alive


def test_keepalive_holds_the_module_on_and_its_watchdog_trips_after_stop() -> None:
    async def scenario() -> None:
        clock = VirtualClock()
        async with rig(clock) as r:
            await r.driver.set_setpoint(410.0, 20.0)
            await r.driver.set_mode(ConverterMode.CHARGE)
            await r.driver.start()
            r.sim.clear_logs()
            r.frames()
            for _ in range(30):
                await tick(clock, r.driver)
            assert clock.monotonic() == 30.0
            assert r.driver.keepalive_cycles == 30
            on_frames = [f for f in r.sim.received() if bytes(f.message.data) == payload(0x11, 0x10, 0xA0)]
            assert len(on_frames) == 30
            assert [f.time for f in on_frames] == [float(t) for t in range(1, 31)]
            # One cycle: mode, setpoints, walk-in, on/off, then the four reads.
            first_cycle = r.requests()[:9]
            assert first_cycle == [
                (WRITE_ID, payload(0x21, 0x10, 0xA0)),
                (WRITE_ID, payload(0x10, 0x01, 410_000)),
                (WRITE_ID, payload(0x10, 0x02, 20_000)),
                (WRITE_ID, payload(0x11, 0x22, 0xA0)),
                (WRITE_ID, payload(0x11, 0x10, 0xA0)),
                (READ_ID, payload(0x10, 0x01, 0)),
                (READ_ID, payload(0x10, 0x02, 0)),
                (READ_ID, payload(0x11, 0x10, 0)),
                (READ_ID, payload(0x11, 0x11, 0)),
            ]
            assert r.sim.watchdog_trips == 0
            assert r.sim.output_on
            assert r.driver.online

            await r.driver.stop()
            await clock.advance(9.9)
            assert r.sim.output_on, "the module's 10 s watchdog must not trip early"
            await clock.advance(0.2)
            assert not r.sim.output_on
            assert r.sim.watchdog_trips == 1

    run(scenario())


def test_comm_loss_then_recovery_reapplies_mode_and_setpoints() -> None:
    async def scenario() -> None:
        clock = VirtualClock()
        async with rig(clock, reply_timeout_s=0.02, comm_loss_s=3.0) as r:
            await r.driver.set_setpoint(390.0, 15.0)
            await r.driver.set_mode(ConverterMode.DISCHARGE)
            await r.driver.start()
            await tick(clock, r.driver)
            assert r.driver.online

            r.sim.silent = True  # cable unplugged at t = 1 s
            for _ in range(2):
                await tick(clock, r.driver)
            assert r.driver.online  # 2 s of silence: not yet a communication loss
            await tick(clock, r.driver)
            assert not r.driver.online  # 3 s
            with pytest.raises(DeviceTimeout, match="communication lost"):
                await r.driver.read_status()
            for _ in range(8):
                await tick(clock, r.driver)
            assert not r.sim.output_on  # t = 12 s: the module's own watchdog switched it off
            r.sim.power_cycle()  # and it lost its setpoints

            r.sim.clear_logs()
            r.sim.silent = False
            await tick(clock, r.driver)
            assert r.driver.online
            received = [bytes(f.message.data) for f in r.sim.received()]
            assert received[:5] == [
                payload(0x21, 0x10, 0xA1),
                payload(0x10, 0x01, 390_000),
                payload(0x10, 0x02, 15_000),
                payload(0x11, 0x22, 0xA0),
                payload(0x11, 0x10, 0xA0),
            ]
            assert r.sim.output_on and r.sim.inverter_mode
            assert r.sim.voltage_setpoint_v == 390.0 and r.sim.current_limit_a == 15.0
            status = await r.driver.read_status()
            assert status.mode is ConverterMode.DISCHARGE
            assert status.current_a == pytest.approx(-15.0)

    run(scenario())


def test_refusal_during_recovery_keeps_the_fault_up() -> None:
    async def scenario() -> None:
        clock = VirtualClock()
        async with rig(clock, reply_timeout_s=0.02, comm_loss_s=2.0) as r:
            await r.driver.set_setpoint(420.0, 15.0)
            await r.driver.start()
            r.sim.silent = True
            for _ in range(3):
                await tick(clock, r.driver)
            assert not r.driver.online
            r.sim.silent = False
            r.sim.inject_error(0x07)  # answering, but still starting up
            await tick(clock, r.driver)
            assert not r.driver.online
            assert isinstance(r.driver.last_error, ProtocolError)
            r.sim.clear_faults()
            await tick(clock, r.driver)
            assert r.driver.online

    run(scenario())
