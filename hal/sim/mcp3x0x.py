"""Bit-level model of the Microchip MCP3202 and MCP3008 SPI ADCs.

The model walks the MOSI bits of one transfer (one CS-low frame) the way the chip's shift logic does
(DS21034 / DS21295 section 5.1): leading zeros are ignored, the first 1 is the start bit, the next
bits select the input, the chip samples that input, drives a 0 null bit and then shifts out the
result MSB first. Before the null bit DOUT is high impedance; the model lets the test choose what the
bus reads there (``hiz_level``: 1 where MISO has a pull-up, 0 on a Pi whose GPIO9 pull-down is on).

After B0 the chips keep talking if clocks continue: the MCP3008 repeats the word LSB first and then
sends zeros (DS21295 figure 5-1 note); the MCP3202 does the same when MSBF = 0 and sends zeros when
MSBF = 1 (DS21034 rev. D section 5.1; rev. A states the opposite polarity).

Faults a test can inject: ``floating`` (no chip driving MISO on a pulled-up bus: every bit reads 1),
``stuck_zero`` (MISO shorted or pulled to ground: every bit reads 0), ``noise_lsb`` (Gaussian input
noise, in LSB, before quantisation). A wrong SPI mode (1 or 2) is answered the way a real chip
misbehaves, not with an exception: the chip then latches each MOSI bit one clock late, so the whole
answer comes one bit late and the master reads a shifted, wrong word.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Literal

from hal.changes import ChangeSignal

ChipName = Literal["mcp3202", "mcp3008"]

_BITS = {"mcp3202": 12, "mcp3008": 10}
_CHANNELS = {"mcp3202": 2, "mcp3008": 8}
# Clocks from the start bit to the null bit: MCP3202 start, SGL, ODD, MSBF, null (DS21034 5.1);
# MCP3008 start, SGL, D2, D1, D0, one more sample clock, null (DS21295 5.0).
_NULL_AFTER_START = {"mcp3202": 4, "mcp3008": 6}
_CONFIG_BITS = {"mcp3202": 3, "mcp3008": 4}
_GOOD_MODES = (0, 3)
#: Attributes a test turns to change what the chip answers.
_KNOBS = frozenset({"vref_v", "hiz_level", "noise_lsb", "floating", "stuck_zero"})


class Mcp3x0xSim:
    """One MCP3202 or MCP3008 on a simulated SPI bus (implements ``hal.sim.spi.SpiChipSim``).

    Channel inputs are callables returning volts at the pin; each is called once per conversion
    (at the sampling instant), so a callable may model a signal that changes between samples. An
    input with no callable reads 0 V.
    """

    def __init__(
        self,
        chip: ChipName,
        *,
        vref_v: float,
        hiz_level: int = 1,
        noise_lsb: float = 0.0,
        seed: int = 0,
        changes: ChangeSignal | None = None,
    ) -> None:
        if chip not in _BITS:
            raise ValueError(f"unknown ADC chip {chip!r}; allowed: {', '.join(sorted(_BITS))}")
        if hiz_level not in (0, 1):
            raise ValueError("hiz_level is the bus level MISO reads while DOUT is released: 0 or 1")
        self.chip: ChipName = chip
        self.vref_v = vref_v
        self.bits = _BITS[chip]
        self.channels = _CHANNELS[chip]
        self.hiz_level = hiz_level
        self.noise_lsb = noise_lsb
        self.floating = False
        self.stuck_zero = False
        self.conversions = 0
        self.last_input: tuple[int, int | None] | None = None  # (IN+, IN-) of the last conversion
        self._inputs: dict[int, Callable[[], float]] = {}
        self._rng = random.Random(seed)
        self.changes = changes  # notified when an input or a fault knob changes (hal.changes)

    def __setattr__(self, name: str, value: object) -> None:
        changed = name in _KNOBS and self.__dict__.get(name) != value
        super().__setattr__(name, value)
        if changed:
            self._notify()

    def _notify(self) -> None:
        changes = self.__dict__.get("changes")
        if changes is not None:
            changes.notify()

    # ------------------------------------------------------------------ inputs
    def set_channel(self, channel: int, fn: Callable[[], float]) -> None:
        self._check(channel)
        self._inputs[channel] = fn
        self._notify()

    def set_channel_v(self, channel: int, volts: float) -> None:
        self.set_channel(channel, lambda: volts)

    def _check(self, channel: int) -> None:
        if not 0 <= channel < self.channels:
            raise ValueError(f"{self.chip} has channels 0..{self.channels - 1}, not {channel}")

    def _pin_v(self, channel: int) -> float:
        fn = self._inputs.get(channel)
        return 0.0 if fn is None else float(fn())

    def code_for(self, volts: float) -> int:
        """What the converter outputs for ``volts`` between IN+ and IN-: clamped to the input range
        (the ESD diodes clamp the pin, the code saturates) and truncated (code = 2**bits * V / VREF)."""
        full = 1 << self.bits
        if self.noise_lsb:
            volts += self._rng.gauss(0.0, self.noise_lsb) * self.vref_v / full
        if not math.isfinite(volts):
            volts = 0.0
        code = math.floor(volts / self.vref_v * full)
        return min(max(code, 0), full - 1)

    # ------------------------------------------------------------------ bus
    def transfer(self, tx: bytes, *, mode: int, speed_hz: int) -> bytes:
        nbits = len(tx) * 8
        if self.floating:
            return b"\xff" * len(tx)
        if self.stuck_zero:
            return bytes(len(tx))
        mosi = [(byte >> (7 - i)) & 1 for byte in tx for i in range(8)]
        if mode not in _GOOD_MODES:
            # Sampling on the edge where the master changes MOSI: the chip sees each bit one clock late.
            mosi = [0, *mosi[:-1]]
        miso = [self.hiz_level] * nbits
        try:
            start = mosi.index(1)
        except ValueError:
            return _pack(miso)  # no start bit: the chip never leaves its idle state
        config_end = start + _CONFIG_BITS[self.chip]
        if config_end >= nbits:
            return _pack(miso)  # CS rose before the input was chosen: no conversion
        config = mosi[start + 1 : config_end + 1]
        code = self._convert(config)
        out = self._output_bits(code, config)
        null_at = start + _NULL_AFTER_START[self.chip]
        for i, bit in enumerate(out):
            if null_at + i < nbits:
                miso[null_at + i] = bit
        # After the LSB-first repeat (or straight after B0) the chip sends zeros for as long as CS
        # stays low.
        for i in range(null_at + len(out), nbits):
            miso[i] = 0
        return _pack(miso)

    def _convert(self, config: list[int]) -> int:
        sgl = config[0]
        if self.chip == "mcp3202":
            select = config[1]  # ODD/SIGN
            pair_base = 0
        else:
            select = (config[1] << 2) | (config[2] << 1) | config[3]  # D2 D1 D0
            pair_base = select & ~1
        self.conversions += 1
        if sgl:
            self.last_input = (select, None)
            return self.code_for(self._pin_v(select))
        # Pseudo-differential (DS21034 table 5-1, DS21295 table 5-2): the odd/even bit picks which
        # channel of the pair is IN+; IN+ below IN- reads code 0.
        odd = select & 1
        plus, minus = (pair_base + 1, pair_base) if odd else (pair_base, pair_base + 1)
        self.last_input = (plus, minus)
        return self.code_for(self._pin_v(plus) - self._pin_v(minus))

    def _output_bits(self, code: int, config: list[int]) -> list[int]:
        msb_first = [(code >> (self.bits - 1 - i)) & 1 for i in range(self.bits)]
        lsb_repeat = [(code >> i) & 1 for i in range(1, self.bits)]  # B1..B(n-1); B0 is shared
        repeats = self.chip == "mcp3008" or config[2] == 0  # MCP3202: MSBF = 0 repeats LSB first
        return [0, *msb_first, *(lsb_repeat if repeats else [])]


def _pack(bits: list[int]) -> bytes:
    out = bytearray()
    for i in range(0, len(bits), 8):
        byte = 0
        for bit in bits[i : i + 8]:
            byte = (byte << 1) | bit
        out.append(byte)
    return bytes(out)
