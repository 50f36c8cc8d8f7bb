"""Microchip MCP3202 (12-bit, 2 channels) and MCP3008 (10-bit, 8 channels) SPI ADCs.

Both chips are driven with the three-byte framing of their datasheets' "Using the ... with
Microcontroller (MCU) SPI Ports" section (MCP3202 DS21034 section 6.1, MCP3004/3008 DS21295 section
6.1): leading zeros, which the chip ignores, put the start bit at the end of the first byte so the
result lands right-aligned in the last two received bytes. One conversion is one ``xfer2`` call,
because the chip starts a conversion on the falling edge of CS and spidev keeps CS low for the whole
of one call.

Command bits, MSB first on MOSI (``S`` = start, ``SGL`` = 1 for single-ended):

    MCP3202  0000_0001  SGL ODD MSBF x_xxxx  xxxx_xxxx   (ODD selects CH0/CH1)
    MCP3008  0000_0001  SGL D2 D1 D0 xxxx    xxxx_xxxx   (D2..D0 select CH0..CH7)

Answer on MISO (``?`` = the chip's DOUT is still high impedance, ``0`` = the null bit):

    MCP3202  ????_????  ???0 B11 B10 B9 B8   B7..B0      (null on the falling edge of the MSBF clock)
    MCP3008  ????_????  ????_?0 B9 B8        B7..B0      (null one clock after D0: the extra
                                                          sample clock, DS21295 section 5.0)

The MCP3202's MSBF bit only decides what the chip sends *after* B0; datasheet revisions A and D
describe its polarity oppositely, and some parts are reported to ignore it. The 24-clock frame ends
exactly at B0, so the driver's result does not depend on which is right.

What can and cannot be detected (neither chip has an ID register):

* MISO stuck at 1 (no chip on a bus with a pull-up on MISO, a chip without power, a detached wire):
  every bit reads 1, including the null bit, which a working chip always drives low. The driver
  raises :class:`ProtocolError` for a null bit of 1.
* MISO stuck at 0 (no chip on a Raspberry Pi: GPIO9/MISO has its pull-down enabled at reset, BCM2835
  peripherals "GPIO Pull-up/down" table): the null bit is 0 as expected and the result reads 0 counts,
  which is also what a grounded input gives. This cannot be told apart from 0 V at the bus level. A
  board that wants the missing chip detected fits a pull-up on MISO; otherwise a board self-test must
  read a channel that is known not to sit at 0 V (a proximity pull-up with no cable reads full scale).
* A wrong SPI mode (1 or 2) shifts the frame by one bit and gives garbage that may look plausible;
  the driver refuses to run unless the device is in mode 0 or 3, the two modes both chips support
  (DS21034 / DS21295 section 6.1, figures 6-1 and 6-2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hal.buses import SpiDevice
from hal.errors import ProtocolError

ChipName = Literal["mcp3202", "mcp3008"]

#: SPI modes 0,0 and 1,1: DS21034 and DS21295, section 6.1 ("SPI Mode 0,0" / "SPI Mode 1,1").
SUPPORTED_SPI_MODES = (0, 3)

#: The three-byte frame both chips are read with.
FRAME_BYTES = 3


@dataclass(frozen=True)
class ChipSpec:
    label: str
    channels: int
    bits: int
    #: Position of the null bit in the second received byte (bit 7 = first clock of that byte).
    null_bit: int
    #: Highest SCLK at VDD = 2.7 V, i.e. safe at any supply (DS21034 / DS21295 timing tables).
    max_speed_hz_at_2v7: int
    #: Highest SCLK at VDD = 5 V.
    max_speed_hz_at_5v: int


CHIPS: dict[str, ChipSpec] = {
    # DS21034 figure 6-1: three unknown bits, the null bit, then B11..B8 in the second byte.
    "mcp3202": ChipSpec(
        "MCP3202", channels=2, bits=12, null_bit=4, max_speed_hz_at_2v7=900_000, max_speed_hz_at_5v=1_800_000
    ),
    # DS21295 figure 6-1: five unknown bits, the null bit, then B9 and B8 in the second byte.
    "mcp3008": ChipSpec(
        "MCP3008", channels=8, bits=10, null_bit=2, max_speed_hz_at_2v7=1_350_000, max_speed_hz_at_5v=3_600_000
    ),
}

_START = 0x01  # start bit in the last clock of byte 0, after seven leading zeros
_MCP3202_SGL = 0x80  # byte 1 bit 7: single-ended (DS21034 table 5-1)
_MCP3202_ODD_SHIFT = 6  # byte 1 bit 6: ODD/SIGN = channel in single-ended mode
_MCP3202_MSBF = 0x20  # byte 1 bit 5: MSB-first only, zeros after B0 (DS21034 rev. D section 5.1)
_MCP3008_SGL = 0x80  # byte 1 bit 7: single-ended (DS21295 table 5-2)
_MCP3008_CHANNEL_SHIFT = 4  # byte 1 bits 6..4: D2 D1 D0


def spec_of(chip: str) -> ChipSpec:
    try:
        return CHIPS[chip]
    except KeyError:
        raise ValueError(f"unknown ADC chip {chip!r}; allowed: {', '.join(sorted(CHIPS))}") from None


def command_bytes(chip: ChipName, channel: int) -> list[int]:
    """The MOSI bytes of one single-ended conversion of ``channel``."""
    spec = spec_of(chip)
    if not 0 <= channel < spec.channels:
        raise ValueError(f"{spec.label} has channels 0..{spec.channels - 1}, not {channel}")
    if chip == "mcp3202":
        second = _MCP3202_SGL | (channel << _MCP3202_ODD_SHIFT) | _MCP3202_MSBF
    else:
        second = _MCP3008_SGL | (channel << _MCP3008_CHANNEL_SHIFT)
    return [_START, second, 0x00]


def decode_answer(chip: ChipName, rx: list[int]) -> tuple[int, int]:
    """(null bit, counts) from the three MISO bytes; the high-impedance bits are ignored."""
    spec = spec_of(chip)
    high_bits = spec.bits - 8
    null = (rx[1] >> spec.null_bit) & 1
    counts = ((rx[1] & ((1 << high_bits) - 1)) << 8) | rx[2]
    return null, counts


class Mcp3x0x:
    """Single-ended conversions on an MCP3202 or MCP3008 behind an opened spidev-like device.

    ``vref_v`` is the voltage on the chip's VREF pin (on the MCP3202, VDD is the reference): a
    reading of ``counts`` stands for ``counts * vref_v / 2**bits`` volts (DS21034 / DS21295 section
    4, "Digital Output Code": code = 2**bits * VIN / VREF).

    The SPI clock must not exceed the chip's limit at its supply (:class:`ChipSpec`); a clock above
    even the 5 V limit is refused here, because the sample capacitor would not charge and every
    reading would be silently low.
    """

    def __init__(self, spi: SpiDevice, *, chip: ChipName, vref_v: float, name: str) -> None:
        self._spec = spec_of(chip)
        if not vref_v > 0:
            raise ValueError(f"{name}: vref_v must be positive, got {vref_v}")
        if spi.mode not in SUPPORTED_SPI_MODES:
            raise ValueError(f"{name}: SPI device is in mode {spi.mode}; the {self._spec.label} works in modes 0 and 3")
        if spi.max_speed_hz > self._spec.max_speed_hz_at_5v:
            raise ValueError(
                f"{name}: SPI clock {spi.max_speed_hz} Hz is above the {self._spec.label}'s "
                f"{self._spec.max_speed_hz_at_5v} Hz maximum (at VDD = 5 V; "
                f"{self._spec.max_speed_hz_at_2v7} Hz at 2.7 V)"
            )
        self._spi = spi
        self._chip: ChipName = chip
        self._vref_v = vref_v
        self._name = name
        self._commands = [command_bytes(chip, ch) for ch in range(self._spec.channels)]

    # ------------------------------------------------------------------ description
    @property
    def name(self) -> str:
        return self._name

    @property
    def chip(self) -> ChipName:
        return self._chip

    @property
    def channels(self) -> int:
        return self._spec.channels

    @property
    def bits(self) -> int:
        return self._spec.bits

    @property
    def full_scale_counts(self) -> int:
        """The highest code the converter can output (1023 or 4095)."""
        return (1 << self._spec.bits) - 1

    @property
    def vref_v(self) -> float:
        return self._vref_v

    @property
    def lsb_v(self) -> float:
        return self._vref_v / (1 << self._spec.bits)

    def counts_to_volts(self, counts: int) -> float:
        return counts * self.lsb_v

    def check_channel(self, channel: int) -> None:
        """Raise ``ValueError`` for a channel the chip does not have (for callers' constructors)."""
        if not 0 <= channel < self._spec.channels:
            raise ValueError(
                f"{self._name}: {self._spec.label} has channels 0..{self._spec.channels - 1}, not {channel}"
            )

    # ------------------------------------------------------------------ I/O
    async def read_counts(self, channel: int) -> int:
        return self._convert(channel)

    async def read_volts(self, channel: int) -> float:
        return self.counts_to_volts(self._convert(channel))

    async def read_counts_burst(self, channel: int, samples: int) -> list[int]:
        """``samples`` conversions back to back, without yielding to the event loop in between, so
        they follow each other as closely as the SPI driver allows (one ``xfer2`` ioctl each)."""
        if samples < 1:
            raise ValueError(f"{self._name}: a burst needs at least one sample, got {samples}")
        return [self._convert(channel) for _ in range(samples)]

    def _convert(self, channel: int) -> int:
        self.check_channel(channel)
        mode = self._spi.mode
        if mode not in SUPPORTED_SPI_MODES:
            raise ProtocolError(
                self._name, f"SPI device switched to mode {mode}; the {self._spec.label} needs mode 0 or 3"
            )
        tx = self._commands[channel]
        try:
            rx = self._spi.xfer2(list(tx))
        except OSError as exc:
            raise ProtocolError(self._name, f"SPI transfer to the {self._spec.label} failed: {exc}") from exc
        if len(rx) != FRAME_BYTES:
            raise ProtocolError(self._name, f"SPI transfer returned {len(rx)} bytes for a {FRAME_BYTES}-byte frame")
        null, counts = decode_answer(self._chip, rx)
        if null != 0:
            raise ProtocolError(
                self._name,
                f"{self._spec.label} channel {channel}: null bit read as 1 (MISO bytes {bytes(rx).hex()}); "
                "a working chip always drives it low, so MISO is floating high or stuck at 1 "
                "(chip missing, unpowered or not selected by this chip-select)",
            )
        return counts
