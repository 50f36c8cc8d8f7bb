"""MCP3202 / MCP3008 driver against the bit-level chip simulator, through the real open_spi path."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal.buses import open_spi
from hal.drivers.mcp3x0x import Mcp3x0x, command_bytes, decode_answer
from hal.errors import DeviceNotFound, ProtocolError
from hal.sim.mcp3x0x import Mcp3x0xSim
from hal.sim.spi import SimSpiBus


def make(
    chip: str, vref_v: float = 3.3, *, mode: int = 0, hiz_level: int = 1, noise_lsb: float = 0.0
) -> tuple[SimSpiBus, Mcp3x0xSim, Mcp3x0x]:
    bus = SimSpiBus()
    sim = Mcp3x0xSim(chip, vref_v=vref_v, hiz_level=hiz_level, noise_lsb=noise_lsb)  # type: ignore[arg-type]
    bus.attach(0, 0, sim)
    spi = open_spi(0, 0, max_speed_hz=1_000_000, mode=mode, factory=bus.factory)
    adc = Mcp3x0x(spi, chip=chip, vref_v=vref_v, name="adc0")  # type: ignore[arg-type]
    return bus, sim, adc


# ---------------------------------------------------------------------- bytes on the bus


def test_mcp3008_command_bytes_for_every_channel() -> None:
    bus, sim, adc = make("mcp3008")
    bus.log_transfers = True
    for ch in range(8):
        asyncio.run(adc.read_counts(ch))
    # DS21295 figure 6-1: 7 leading zeros + start, then SGL D2 D1 D0 and four don't-care bits.
    assert [tx for _, tx, _ in bus.transfers] == [bytes([0x01, 0x80 | ch << 4, 0x00]) for ch in range(8)]
    assert all(addr == (0, 0) for addr, _, _ in bus.transfers)
    assert sim.last_input == (7, None)


def test_mcp3202_command_bytes_for_both_channels() -> None:
    bus, _, adc = make("mcp3202")
    bus.log_transfers = True
    asyncio.run(adc.read_counts(0))
    asyncio.run(adc.read_counts(1))
    # DS21034 figure 6-1: start, then SGL=1, ODD=channel, MSBF=1.
    assert [tx for _, tx, _ in bus.transfers] == [b"\x01\xa0\x00", b"\x01\xe0\x00"]


@pytest.mark.parametrize(
    ("chip", "code", "hiz_level", "expected_rx"),
    [
        # MCP3008: five high-impedance bits, null 0, B9 B8 | B7..B0. 0x2A5 = 10_1010_0101.
        ("mcp3008", 0x2A5, 1, b"\xff\xfa\xa5"),
        ("mcp3008", 0x2A5, 0, b"\x00\x02\xa5"),
        # MCP3202: three high-impedance bits, null 0, B11..B8 | B7..B0. 0xABC.
        ("mcp3202", 0xABC, 1, b"\xff\xea\xbc"),
        ("mcp3202", 0xABC, 0, b"\x00\x0a\xbc"),
    ],
)
def test_answer_bit_layout_and_high_impedance_bits_ignored(
    chip: str, code: int, hiz_level: int, expected_rx: bytes
) -> None:
    bus, sim, adc = make(chip, vref_v=4.096, hiz_level=hiz_level)
    bus.log_transfers = True
    sim.set_channel_v(0, (code + 0.5) * adc.lsb_v)
    assert asyncio.run(adc.read_counts(0)) == code
    assert bus.transfers[-1][2] == expected_rx


# ---------------------------------------------------------------------- scaling


@pytest.mark.parametrize(
    ("chip", "vref_v", "volts", "counts"),
    [
        ("mcp3008", 3.3, 0.0, 0),
        ("mcp3008", 3.3, 1.65, 512),
        ("mcp3008", 3.3, 3.3, 1023),  # VIN = VREF saturates at the top code
        ("mcp3008", 3.3, 4.0, 1023),  # above the rail: clamped
        ("mcp3008", 3.3, -0.5, 0),
        ("mcp3202", 5.0, 2.5, 2048),
        ("mcp3202", 5.0, 1.0, 819),  # 4096 * 1.0 / 5.0 = 819.2
        ("mcp3202", 5.0, 5.0, 4095),
    ],
)
def test_scaling(chip: str, vref_v: float, volts: float, counts: int) -> None:
    _, sim, adc = make(chip, vref_v)
    sim.set_channel_v(1, volts)
    assert asyncio.run(adc.read_counts(1)) == counts
    assert asyncio.run(adc.read_volts(1)) == pytest.approx(counts * vref_v / (1 << adc.bits))


def test_chip_description() -> None:
    _, _, a8 = make("mcp3008")
    _, _, a2 = make("mcp3202", 5.0)
    assert (a8.channels, a8.bits, a8.full_scale_counts) == (8, 10, 1023)
    assert (a2.channels, a2.bits, a2.full_scale_counts) == (2, 12, 4095)
    assert a2.lsb_v == pytest.approx(5.0 / 4096)


@settings(max_examples=200, deadline=None)
@given(
    chip=st.sampled_from(["mcp3202", "mcp3008"]),
    vref_v=st.floats(min_value=1.0, max_value=5.5),
    fraction=st.floats(min_value=0.0, max_value=1.0),
    channel=st.integers(min_value=0, max_value=1),
)
def test_any_voltage_reads_back_within_one_lsb(chip: str, vref_v: float, fraction: float, channel: int) -> None:
    _, sim, adc = make(chip, vref_v)
    volts = fraction * vref_v
    sim.set_channel_v(channel, volts)
    # Truncation: the error is below one LSB, reaching it only at VIN = VREF (plus float rounding).
    assert abs(asyncio.run(adc.read_volts(channel)) - volts) <= adc.lsb_v * (1 + 1e-9)


def test_spi_mode_3_is_supported() -> None:
    _, sim, adc = make("mcp3008", mode=3)
    sim.set_channel_v(2, 1.65)
    assert asyncio.run(adc.read_counts(2)) == 512


def test_burst_returns_one_conversion_per_transfer() -> None:
    bus, sim, adc = make("mcp3202")
    bus.log_transfers = True
    sim.set_channel_v(1, 1.0)
    assert asyncio.run(adc.read_counts_burst(1, 7)) == [1241] * 7
    assert len(bus.transfers) == 7 and sim.conversions == 7


def test_noise_spreads_readings_around_the_true_code() -> None:
    _, sim, adc = make("mcp3202", noise_lsb=2.0)
    sim.set_channel_v(0, 2048.5 * adc.lsb_v)
    counts = asyncio.run(adc.read_counts_burst(0, 200))
    assert len(set(counts)) > 3
    assert abs(sum(counts) / len(counts) - 2048) < 1.0


# ---------------------------------------------------------------------- faults


def test_missing_chip_is_device_not_found_at_open() -> None:
    bus = SimSpiBus()
    bus.attach(0, 0, Mcp3x0xSim("mcp3008", vref_v=3.3))
    with pytest.raises(DeviceNotFound) as err:
        open_spi(0, 1, max_speed_hz=1_000_000, factory=bus.factory)
    assert err.value.device == "/dev/spidev0.1"


@pytest.mark.parametrize("chip", ["mcp3202", "mcp3008"])
def test_floating_miso_raises_protocol_error(chip: str) -> None:
    _, sim, adc = make(chip)
    sim.floating = True
    with pytest.raises(ProtocolError) as err:
        asyncio.run(adc.read_counts(0))
    assert err.value.device == "adc0"
    assert "null bit" in err.value.message and "ffffff" in err.value.message


def test_chip_detached_while_open_raises_protocol_error() -> None:
    bus, _, adc = make("mcp3008")
    bus.detach(0, 0)  # SimSpiDev: the bus floats high
    with pytest.raises(ProtocolError, match="null bit"):
        asyncio.run(adc.read_counts(0))


def test_stuck_zero_miso_reads_zero_counts_undetectably() -> None:
    # Documented limit: MISO stuck low looks exactly like 0 V on the input.
    _, sim, adc = make("mcp3008")
    sim.set_channel_v(0, 2.0)
    sim.stuck_zero = True
    assert asyncio.run(adc.read_counts(0)) == 0


def test_transfer_error_becomes_protocol_error() -> None:
    bus = SimSpiBus()
    bus.attach(0, 0, Mcp3x0xSim("mcp3008", vref_v=3.3))
    spi = open_spi(0, 0, max_speed_hz=1_000_000, factory=bus.factory)
    adc = Mcp3x0x(spi, chip="mcp3008", vref_v=3.3, name="adc0")
    spi.close()  # xfer2 on a closed spidev raises OSError (EBADF)
    with pytest.raises(ProtocolError, match="SPI transfer"):
        asyncio.run(adc.read_counts(0))


def test_driver_refuses_unsupported_spi_mode() -> None:
    bus = SimSpiBus()
    bus.attach(0, 0, Mcp3x0xSim("mcp3008", vref_v=3.3))
    spi = open_spi(0, 0, max_speed_hz=1_000_000, mode=1, factory=bus.factory)
    with pytest.raises(ValueError, match="mode 1"):
        Mcp3x0x(spi, chip="mcp3008", vref_v=3.3, name="adc0")
    spi.mode = 0
    adc = Mcp3x0x(spi, chip="mcp3008", vref_v=3.3, name="adc0")
    spi.mode = 2
    with pytest.raises(ProtocolError, match="mode 2"):
        asyncio.run(adc.read_counts(0))


@pytest.mark.parametrize("mode", [1, 2])
@pytest.mark.parametrize(("chip", "code"), [("mcp3008", 0x2A5), ("mcp3202", 0xABC)])
@pytest.mark.parametrize("hiz_level", [0, 1])
def test_sim_answers_wrong_mode_with_garbage_not_an_exception(chip: str, code: int, mode: int, hiz_level: int) -> None:
    sim = Mcp3x0xSim(chip, vref_v=4.096, hiz_level=hiz_level)  # type: ignore[arg-type]
    sim.set_channel_v(0, (code + 0.5) * 4.096 / (1 << sim.bits))
    tx = bytes(command_bytes(chip, 0))  # type: ignore[arg-type]
    good = sim.transfer(tx, mode=0, speed_hz=1_000_000)
    bad = sim.transfer(tx, mode=mode, speed_hz=1_000_000)
    assert decode_answer(chip, list(good)) == (0, code)  # type: ignore[arg-type]
    assert bad != good
    assert decode_answer(chip, list(bad)) != (0, code)  # type: ignore[arg-type]


def test_driver_refuses_a_clock_above_the_chip_maximum() -> None:
    bus = SimSpiBus()
    bus.attach(0, 0, Mcp3x0xSim("mcp3202", vref_v=3.3))
    spi = open_spi(0, 0, max_speed_hz=2_000_000, factory=bus.factory)
    with pytest.raises(ValueError, match="1800000 Hz maximum"):
        Mcp3x0x(spi, chip="mcp3202", vref_v=3.3, name="adc0")
    spi.max_speed_hz = 3_600_000
    assert Mcp3x0x(spi, chip="mcp3008", vref_v=3.3, name="adc0").channels == 8


def test_bad_arguments() -> None:
    bus, _, adc = make("mcp3202")
    with pytest.raises(ValueError, match=r"channels 0\.\.1"):
        asyncio.run(adc.read_counts(2))
    with pytest.raises(ValueError, match="unknown ADC chip"):
        command_bytes("mcp3004", 0)  # type: ignore[arg-type]
    spi = open_spi(0, 0, max_speed_hz=1_000_000, factory=bus.factory)
    with pytest.raises(ValueError, match="vref_v"):
        Mcp3x0x(spi, chip="mcp3202", vref_v=0.0, name="adc0")


# ---------------------------------------------------------------------- simulator fidelity


def test_sim_mcp3008_continues_lsb_first_then_zeros() -> None:
    sim = Mcp3x0xSim("mcp3008", vref_v=1.024, hiz_level=0)
    sim.set_channel_v(3, 0x2A5 * 0.001 + 0.0005)
    rx = sim.transfer(b"\x01\xb0\x00\x00\x00", mode=0, speed_hz=1_000_000)
    bits = "".join(f"{b:08b}" for b in rx)
    # null at bit 13, B9..B0 at 14..23, then B1..B9 (LSB first) at 24..32, then zeros.
    assert bits[13] == "0"
    assert bits[14:24] == f"{0x2A5:010b}"
    assert bits[24:33] == f"{0x2A5:010b}"[::-1][1:]
    assert bits[33:] == "0" * 7


@pytest.mark.parametrize(("msbf", "repeats"), [(1, False), (0, True)])
def test_sim_mcp3202_msbf_controls_the_lsb_first_repeat(msbf: int, repeats: bool) -> None:
    sim = Mcp3x0xSim("mcp3202", vref_v=4.096, hiz_level=0)
    sim.set_channel_v(1, 0xABC * 0.001 + 0.0005)
    rx = sim.transfer(bytes([0x01, 0xC0 | msbf << 5, 0x00, 0x00, 0x00]), mode=0, speed_hz=1_000_000)
    bits = "".join(f"{b:08b}" for b in rx)
    assert bits[11] == "0" and bits[12:24] == f"{0xABC:012b}"
    tail = f"{0xABC:012b}"[::-1][1:] + "00000" if repeats else "0" * 16
    assert bits[24:] == tail


def test_sim_pseudo_differential_inputs() -> None:
    sim = Mcp3x0xSim("mcp3008", vref_v=1.024, hiz_level=0)
    sim.set_channel_v(4, 0.6005)
    sim.set_channel_v(5, 0.200)
    # SGL=0, D2..D0=100: CH4 = IN+, CH5 = IN-; 101 swaps them (DS21295 table 5-2).
    plus = decode_answer("mcp3008", list(sim.transfer(b"\x01\x40\x00", mode=0, speed_hz=1_000_000)))
    assert plus == (0, 400) and sim.last_input == (4, 5)
    minus = decode_answer("mcp3008", list(sim.transfer(b"\x01\x50\x00", mode=0, speed_hz=1_000_000)))
    assert minus == (0, 0) and sim.last_input == (5, 4)


def test_sim_frame_without_start_bit_or_cut_short_does_not_convert() -> None:
    sim = Mcp3x0xSim("mcp3008", vref_v=3.3, hiz_level=1)
    assert sim.transfer(b"\x00\x00\x00", mode=0, speed_hz=1_000_000) == b"\xff\xff\xff"
    assert sim.transfer(b"\x00\x01", mode=0, speed_hz=1_000_000) == b"\xff\xff"
    assert sim.conversions == 0
