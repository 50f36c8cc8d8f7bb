"""The EMS Modbus TCP server, driven by pymodbus's own client over loopback.

Registers are decoded here with struct, independently of the server's encoders, following the map in
docs/ems.md: int32 as two registers high word first, 0x80000000 for "not set", ASCII 2 characters per
register. Real sockets, bounded timeouts; the server's clock is a VirtualClock (it only reads it).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from firmware.energy.ems_modbus import EmsModbusServer, connector_input_registers, site_input_registers
from firmware.energy.ems_port import (
    MAX_ENERGY_WH,
    MAX_POWER_W,
    ConnectorSnapshot,
    ConnectorState,
    EmsSnapshot,
    UserPreferences,
)
from hal.clock import VirtualClock
from tests.firmware.energy.fake_ems import FakeEms

KEY = 0x5EC2E7A5
NOW = 1000.0
TEST_TIMEOUT_S = 20.0
NONE32 = [0x8000, 0x0000]  # int32 "not set"
# Modbus exception codes (Modbus Application Protocol V1.1b3, section 7).
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 1, 2, 3


def i32(value: int) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">i", value))
    return [hi, lo]


def u32(value: int) -> list[int]:
    return [value >> 16, value & 0xFFFF]


def as_i32(regs: list[int]) -> int | None:
    value = int(struct.unpack(">i", struct.pack(">HH", *regs))[0])
    return None if value == -0x80000000 else value


def as_text(regs: list[int]) -> str:
    return struct.pack(f">{len(regs)}H", *regs).rstrip(b"\0").decode("ascii")


def _snapshot() -> EmsSnapshot:
    return EmsSnapshot(
        site_power_w=4400.4,
        import_limit_w=17000.0,
        export_limit_w=None,
        limit_source="ems",
        fallback=False,
        connectors=(
            ConnectorSnapshot(1, ConnectorState.CHARGING, 7400.0, 1234.6, 11000.0, 0.0, "grid", None, False),
            ConnectorSnapshot(
                2,
                ConnectorState.DISCHARGING,
                -3000.0,
                -250.0,
                11000.0,
                -5000.0,
                "ems-setpoint-source-long",
                -3000.0,
                True,
                ("OVERTEMP",),
            ),
        ),
    )


@contextlib.asynccontextmanager
async def serving(ems: FakeEms, **kw: Any) -> AsyncIterator[EmsModbusServer]:
    server = EmsModbusServer(ems, unlock_key=KEY, clock=VirtualClock(NOW), port=0, **kw)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def connected(server: EmsModbusServer, *, unlock: bool = False) -> AsyncIterator[AsyncModbusTcpClient]:
    client = AsyncModbusTcpClient("127.0.0.1", port=server.bound_port, timeout=1, retries=0, reconnect_delay=0)
    try:
        assert await client.connect()
        if unlock:
            assert not (await client.write_registers(1000, u32(KEY), device_id=1)).isError()
        yield client
    finally:
        client.close()


async def read_input(client: AsyncModbusTcpClient, address: int, count: int) -> list[int]:
    response = await client.read_input_registers(address, count=count, device_id=1)
    assert not response.isError(), response
    return list(response.registers)


async def write(client: AsyncModbusTcpClient, address: int, values: list[int]) -> int | None:
    """Write registers; the Modbus exception code, or None when accepted."""
    if len(values) == 1:
        response = await client.write_register(address, values[0], device_id=1)
    else:
        response = await client.write_registers(address, values, device_id=1)
    return int(response.exception_code) if response.isError() else None


def _run(coro: Any) -> None:
    asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT_S))


def test_input_registers_read_back_the_snapshot() -> None:
    async def main() -> None:
        async with serving(FakeEms(_snapshot)) as server, connected(server) as client:
            site = await read_input(client, 0, 20)
            assert site[0:2] == [1, 2]  # map version, connector count
            assert as_i32(site[2:4]) == 4400  # site power, rounded to W
            assert as_i32(site[4:6]) == 17000  # import limit in force
            assert as_i32(site[6:8]) is None  # no export limit
            assert site[8:12] == [0, 0, 0, 0]  # no fallback, writes locked, no heartbeat yet, reserved
            assert as_text(site[12:20]) == "ems"

            both = await read_input(client, 100, 48)
            c1, c2 = both[:24], both[24:]
            assert c1[0:2] == [1, int(ConnectorState.CHARGING)] == [1, 3]
            assert [as_i32(c1[i : i + 2]) for i in (2, 4, 6, 8, 10)] == [7400, 1235, 11000, 0, None]
            assert c1[12:14] == [0, 0] and as_text(c1[14:22]) == "grid"
            assert c2[0:2] == [2, 4]
            assert [as_i32(c2[i : i + 2]) for i in (2, 4, 6, 8, 10)] == [-3000, -250, 11000, -5000, -3000]
            assert c2[12:14] == [1, 1]  # fallback active, one fault
            assert as_text(c2[14:22]) == "ems-setpoint-sou"  # 16 characters at most

            # A read may split a 32-bit value: it is one snapshot either way.
            assert (await read_input(client, 3, 2)) == site[3:5]
            # Unmapped addresses and absent connectors are illegal addresses.
            for address, count in [(20, 1), (18, 4), (148, 1), (99, 2), (2000, 1)]:
                response = await client.read_input_registers(address, count=count, device_id=1)
                assert response.isError() and response.exception_code == ILLEGAL_ADDRESS, (address, response)
            coils = await client.read_coils(0, count=1, device_id=1)
            assert coils.isError() and coils.exception_code == ILLEGAL_FUNCTION

    _run(main())


# (holding address, registers, the call the energy manager must see)
WRITES: list[tuple[int, list[int], tuple[str, dict[str, Any]]]] = [
    (
        1004,
        [*i32(11000), *NONE32, 60],
        (
            "set_site_limit",
            {"import_max_w": 11000.0, "export_max_w": None, "expires_at": NOW + 60, "source": "ems:modbus"},
        ),
    ),
    (
        1004,
        [*NONE32, *i32(4600), 0],
        ("set_site_limit", {"import_max_w": None, "export_max_w": 4600.0, "expires_at": None, "source": "ems:modbus"}),
    ),
    (1010, [*i32(5000), 900], ("demand_response", {"reduce_by_w": 5000.0, "until": NOW + 900, "source": "ems:modbus"})),
    (
        1120,
        [*i32(-5000), 30],
        (
            "set_connector_setpoint",
            {"connector": 2, "power_w": -5000.0, "expires_at": NOW + 30, "source": "ems:modbus"},
        ),
    ),
    (
        1100,
        [*NONE32, 0],
        ("set_connector_setpoint", {"connector": 1, "power_w": None, "expires_at": None, "source": "ems:modbus"}),
    ),
    (
        1104,
        [*u32(1767225600), *i32(10000), *NONE32, *i32(-500), 30],  # price -0.05 per kWh in 1/10000
        ("set_preferences", {"connector": 1, "prefs": UserPreferences(1767225600.0, 10000.0, None, -0.05, 30.0)}),
    ),
    (
        1124,
        [0, 0, *NONE32, *i32(60000), *NONE32, 0xFFFF],
        ("set_preferences", {"connector": 2, "prefs": UserPreferences(max_energy_wh=60000.0)}),
    ),
    # The site meter reading at the connection point: + import, - export (seed R60/R64), to +-100 MW.
    (1014, [0xFFFF, 0xFB1E], ("site_measurement", {"power_w": -1250.0, "source": "ems:modbus", "now": NOW})),
    (1014, i32(100_000_000), ("site_measurement", {"power_w": 1e8, "source": "ems:modbus", "now": NOW})),
    (1014, i32(0), ("site_measurement", {"power_w": 0.0, "source": "ems:modbus", "now": NOW})),
]


def test_accepted_writes_reach_the_energy_manager_and_read_back() -> None:
    async def main() -> None:
        ems = FakeEms(_snapshot)
        async with serving(ems) as server, connected(server, unlock=True) as client:
            assert (await read_input(client, 9, 1)) == [1]  # this connection is unlocked
            for address, values, _ in WRITES:
                assert await write(client, address, values) is None, address
                held = await client.read_holding_registers(address, count=len(values), device_id=1)
                assert list(held.registers) == values
            assert ems.commands() == [call for _, _, call in WRITES]
            # The watchdog register: a single-register write, echoed in input register 10.
            assert await write(client, 1002, [42]) is None
            assert (await read_input(client, 10, 1)) == [42]
            # Unlock + every write + the watchdog: each is a heartbeat.
            assert ems.calls.count(("heartbeat", {"source": "ems:modbus", "now": NOW})) == len(WRITES) + 2
            # The key is write-only.
            assert list((await client.read_holding_registers(1000, count=3, device_id=1)).registers) == [0, 0, 42]

    _run(main())


# (holding address, registers, expected Modbus exception code)
INVALID: list[tuple[int, list[int], int]] = [
    (1004, [*i32(-1), *NONE32, 60], ILLEGAL_VALUE),  # negative import limit
    (1004, [*i32(200_000_000), *NONE32, 60], ILLEGAL_VALUE),  # 200 MW
    (1004, [*NONE32, *i32(-10), 0], ILLEGAL_VALUE),  # export limit is a magnitude
    (1010, [*i32(5000), 0], ILLEGAL_VALUE),  # demand response without a validity
    (1010, [*i32(-5000), 60], ILLEGAL_VALUE),
    (1100, [*i32(1_000_000_000), 10], ILLEGAL_VALUE),
    (1104, [0, 0, *i32(5000), *i32(1000), *NONE32, 0xFFFF], ILLEGAL_VALUE),  # min energy above max
    (1104, [0, 0, *NONE32, *NONE32, *NONE32, 101], ILLEGAL_VALUE),  # SoC floor 101 %
    (1104, [0, 0, *NONE32, *NONE32, *i32(20_000_000), 0xFFFF], ILLEGAL_VALUE),  # price 2000 per kWh
    (1104, [*u32(4_200_000_000), *NONE32, *NONE32, *NONE32, 0xFFFF], ILLEGAL_VALUE),  # departure after 2100
    (1004, [*i32(11000), *NONE32], ILLEGAL_ADDRESS),  # a group written in part
    (1005, [1000], ILLEGAL_ADDRESS),  # half of an int32
    (1004, [*i32(11000), *NONE32, 60, 0], ILLEGAL_ADDRESS),  # a group and a reserved register
    (1003, [0], ILLEGAL_ADDRESS),  # reserved
    (1140, [*i32(1000), 10], ILLEGAL_ADDRESS),  # connector 3 does not exist
    (1000 + 50, [1], ILLEGAL_ADDRESS),  # outside every block
    (1014, i32(100_000_001), ILLEGAL_VALUE),  # site power beyond 100 MW
    (1014, i32(-200_000_000), ILLEGAL_VALUE),
    (1014, NONE32, ILLEGAL_VALUE),  # a reading is a number; "no reading" is said by not writing
    (1014, [0xFFFF], ILLEGAL_ADDRESS),  # half of the site power
    (1015, [0xFB1E], ILLEGAL_ADDRESS),
    (1014, [*i32(4400), 0], ILLEGAL_ADDRESS),  # the group and one register beyond it
]


def test_invalid_writes_are_rejected_and_never_reach_the_energy_manager() -> None:
    async def main() -> None:
        ems = FakeEms(_snapshot)
        async with serving(ems) as server, connected(server, unlock=True) as client:
            for address, values, code in INVALID:
                assert await write(client, address, values) == code, (address, values)
            coil = await client.write_coil(0, True, device_id=1)
            assert coil.isError() and coil.exception_code == ILLEGAL_FUNCTION
            assert ems.commands() == []
            # Rejected writes change nothing that reads back.
            held = await client.read_holding_registers(1004, count=5, device_id=1)
            assert list(held.registers) == [*NONE32, *NONE32, 0]
            held = await client.read_holding_registers(1014, count=2, device_id=1)
            assert list(held.registers) == NONE32  # no site measurement written yet
            # A command the energy manager refuses is an illegal value too.
            ems.refuse = True
            assert await write(client, 1004, [*i32(11000), *NONE32, 60]) == ILLEGAL_VALUE
            assert ems.commands() == []
            ems.refuse = False
            assert await write(client, 1004, [*i32(11000), *NONE32, 60]) is None
            assert len(ems.commands()) == 1

    _run(main())


def test_writes_are_refused_until_the_unlock_key_on_that_connection() -> None:
    async def main() -> None:
        ems = FakeEms(_snapshot)
        limit = [*i32(11000), *NONE32, 60]
        async with serving(ems) as server, connected(server) as client, connected(server) as other:
            assert await write(client, 1004, limit) == ILLEGAL_FUNCTION
            assert await write(client, 1002, [1]) == ILLEGAL_FUNCTION  # the watchdog too
            assert await write(client, 1014, i32(4400)) == ILLEGAL_FUNCTION  # and the site measurement
            assert await write(client, 1000, u32(KEY ^ 1)) == ILLEGAL_VALUE  # wrong key
            assert await write(client, 1004, limit) == ILLEGAL_FUNCTION
            assert ems.calls == []
            assert await write(client, 1000, u32(KEY)) is None
            assert await write(client, 1004, limit) is None
            # Unlocking is per TCP connection.
            assert (await read_input(other, 9, 1)) == [0]
            assert await write(other, 1004, limit) == ILLEGAL_FUNCTION
            assert await write(other, 1014, i32(4400)) == ILLEGAL_FUNCTION
            assert await write(client, 1014, i32(4400)) is None
            # A wrong key locks the connection again.
            assert await write(client, 1000, [0, 0]) == ILLEGAL_VALUE
            assert await write(client, 1004, limit) == ILLEGAL_FUNCTION
            assert await write(client, 1014, i32(-4400)) == ILLEGAL_FUNCTION
            assert [name for name, _ in ems.commands()] == ["set_site_limit", "site_measurement"]
            assert ems.commands()[1][1] == {"power_w": 4400.0, "source": "ems:modbus", "now": NOW}

    _run(main())


def test_a_client_outside_the_allow_list_is_disconnected_before_any_request() -> None:
    async def main() -> None:
        ems = FakeEms(_snapshot)
        async with serving(ems, allowed_clients=["192.0.2.10", "198.51.100.0/24"]) as server:
            client = AsyncModbusTcpClient("127.0.0.1", port=server.bound_port, timeout=0.5, retries=0)
            try:
                await client.connect()
                with pytest.raises(ModbusException):  # the server hung up: no answer at all
                    await client.write_registers(1000, u32(KEY), device_id=1)
                with pytest.raises(ModbusException):
                    await client.read_input_registers(0, count=2, device_id=1)
            finally:
                client.close()
        assert ems.calls == []
        async with serving(ems, allowed_clients=["127.0.0.0/8"]) as server, connected(server) as client:
            assert (await read_input(client, 0, 2)) == [1, 2]

    _run(main())


def test_configuration_is_checked() -> None:
    for key in (0, -1, 2**32, True):
        with pytest.raises(ValueError, match="unlock_key"):
            EmsModbusServer(FakeEms(_snapshot), unlock_key=key, clock=VirtualClock())
    with pytest.raises(ValueError, match="allowed_clients"):
        EmsModbusServer(FakeEms(_snapshot), unlock_key=KEY, clock=VirtualClock(), allowed_clients=["ems.local"])


_power = st.one_of(st.none(), st.floats(-MAX_POWER_W, MAX_POWER_W))


@given(
    site=st.floats(-MAX_POWER_W, MAX_POWER_W),
    limit=st.one_of(st.none(), st.floats(0, MAX_POWER_W)),
    power=st.floats(-MAX_POWER_W, MAX_POWER_W),
    energy=st.floats(-MAX_ENERGY_WH, MAX_ENERGY_WH),
    setpoint=_power,
    state=st.sampled_from(ConnectorState),
    source=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
)
def test_every_value_decodes_back_to_the_nearest_watt(
    site: float,
    limit: float | None,
    power: float,
    energy: float,
    setpoint: float | None,
    state: ConnectorState,
    source: str,
) -> None:
    connector = ConnectorSnapshot(5, state, power, energy, limit, None, source, setpoint, False)
    snap = EmsSnapshot(site, limit, None, source, True, (connector,))
    regs = site_input_registers(snap, unlocked=False, heartbeat=7)
    assert as_i32(regs[2:4]) == round(site)
    assert as_i32(regs[4:6]) == (None if limit is None else round(limit))
    assert regs[8] == 1 and regs[10] == 7
    assert as_text(regs[12:20]) == source[:16]
    regs = connector_input_registers(connector)
    assert regs[0:2] == [5, int(state)]
    assert as_i32(regs[2:4]) == round(power)
    assert as_i32(regs[4:6]) == round(energy)
    assert as_i32(regs[10:12]) == (None if setpoint is None else round(setpoint))
    assert all(0 <= r <= 0xFFFF for r in regs)
