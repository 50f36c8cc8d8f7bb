"""Register-level model of the ATM90E32AS energy metering IC, for :class:`hal.sim.spi.SimSpiBus`.

It answers 32-bit SPI frames exactly as the chip frames them (16-bit command word, bit 15 = read,
bits 9..0 = address, then a 16-bit data word, MSB first; standards-facts.md 5.2) and keeps its own
register file: soft reset, the CfgRegAccEn write lock, LastSPIData, measurement registers computed from
a source of truth (the :class:`hal.sim.plant.Plant` or callables), and the 16-bit read-to-clear energy
registers filled from power over time read from the injected clock.

Modelling choices (the datasheet details that could not be confirmed from public sources are marked):

* Measurement registers encode the true values with the chip's scaling (Urms 0.01 V, Irms 0.001 A,
  Pmean 0.00032 W over two words, Freq 0.01 Hz, energy 0.01 CF per count). The simulated board's front
  end is exact when the chip holds the gains given as ``ugain``/``igain``/``pga_gain``; other gain
  register values scale Urms (Ugain) and Irms (Igain, PGA) in proportion, as a real mis-calibrated
  board would. Power and energy follow the PGA but not Ugain/Igain (the chip calibrates them through
  PQGain, left at its unity reset value).
* Energy per count follows the PL constant (PL = 4.5e11 / meter constant; 0x0861C468 <-> 3200 imp/kWh).
  Each phase keeps the fractional count between updates, so no energy is lost to rounding. A register
  that passes 0xFFFF wraps (assumption: the datasheet's overflow behaviour was not available).
* The plant is taken to have held its present value since the previous SPI access; scenario code that
  changes the plant between reads should call :meth:`Atm90e32Sim.sync` first to close the interval.
* While CfgRegAccEn is not 0x55AA, writes to the configuration and calibration block (0x30-0x6F) are
  ignored; status/control registers (0x00-0x2F, 0x70-0x7F) stay writable (assumed range). Measurement
  registers (0x80 up) are read-only.
* For 5 ms after a soft reset the chip ignores frames and does not drive SDO (ESPHome waits 5 ms + 1 ms).
  SDO is only driven during the data word of a read; an undriven line reads as 0xFF.
* Open drivers run the chip in SPI mode 3 (ESPHome) or mode 0 (CircuitSetup on AVR), both of which
  sample on the rising SCLK edge; the model accepts those two. In mode 1 or 2 it samples one edge late:
  it sees the host's stream shifted left one bit and the host sees SDO shifted right one bit.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Sequence

from hal.clock import Clock
from hal.sim.plant import Plant

# Register addresses (M90E32AS register map as given by ESPHome atm90e32_reg.h and the CircuitSetup library).
METER_EN = 0x00
PL_CONST_H = 0x31
PL_CONST_L = 0x32
MMODE0 = 0x33
MMODE1 = 0x34
SOFT_RESET = 0x70
LAST_SPI_DATA = 0x78
CFG_REG_ACC_EN = 0x7F
UGAIN = (0x61, 0x65, 0x69)
IGAIN = (0x62, 0x66, 0x6A)
AP_ENERGY = (0x81, 0x82, 0x83)  # forward active energy A/B/C, read-to-clear
AN_ENERGY = (0x85, 0x86, 0x87)  # reverse active energy A/B/C, read-to-clear
PMEAN = (0xB1, 0xB2, 0xB3)
PMEAN_LSB = (0xC1, 0xC2, 0xC3)
URMS = (0xD9, 0xDA, 0xDB)
IRMS = (0xDD, 0xDE, 0xDF)
FREQ = 0xF8

SOFT_RESET_KEY = 0x789A
UNLOCK_KEY = 0x55AA
RESET_BUSY_S = 0.005  # the chip is unreachable for 5 ms after a soft reset
LOCKED_BLOCK = range(0x30, 0x70)  # configuration + calibration registers guarded by CfgRegAccEn
READ_ONLY_FROM = 0x80  # measurement registers

# Power-on values modelled for the registers the driver configures: PL constant 0x0861C468 (the value
# every open driver calls "default"), MMode0 3P4W 50 Hz, PGA x1, metering off, gains zero.
_RESET_VALUES = {METER_EN: 0x0000, PL_CONST_H: 0x0861, PL_CONST_L: 0xC468, MMODE0: 0x0087, MMODE1: 0x0000}

# Scaling of the measurement registers (standards-facts.md 5.2).
VOLTS_PER_LSB = 0.01
AMPS_PER_LSB = 0.001
WATTS_PER_LSB = 0.00032
HERTZ_PER_LSB = 0.01
PL_NUMERATOR = 450_000_000_000  # PL_constant = 4.5e11 / meter constant [imp/kWh]
CF_PER_COUNT = 0.01
FREQUENCY_DETECT_V = 20.0  # below this on every phase the model reports no frequency (Freq = 0)
_PGA_FACTOR = {0b00: 1.0, 0b01: 2.0, 0b10: 4.0, 0b11: 1.0}  # 0b11 is reserved; modelled as x1

#: Gain register values at which this simulated board reads exactly (ESPHome's default gains).
DEFAULT_UGAIN = (41820, 41820, 41820)
DEFAULT_IGAIN = (25498, 25498, 25498)


class Atm90e32Fault(enum.Enum):
    NONE = "none"
    FLOATING_MISO = "floating_miso"  # SDO not connected: every byte reads 0xFF
    STUCK_ZERO = "stuck_zero"  # SDO shorted low: every byte reads 0x00
    GARBAGE = "garbage"  # random words on SDO (wrong chip, broken level shifter)
    WRONG_MODE = "wrong_mode"  # chip samples on the wrong clock edge, whatever mode the host set


class Atm90e32Sim:
    """One ATM90E32AS on a simulated SPI bus (implements :class:`hal.sim.spi.SpiChipSim`).

    The source of truth is ``plant`` (``grid_voltage_v``, ``ev_current_a`` signed, ``grid_frequency_hz``)
    unless ``voltage_v``/``current_a``/``frequency_hz`` callables are given, which take precedence.
    ``ugain``/``igain``/``pga_gain`` are the chip settings at which this board's readings are exact.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        plant: Plant | None = None,
        voltage_v: Callable[[], Sequence[float]] | None = None,
        current_a: Callable[[], Sequence[float]] | None = None,
        frequency_hz: Callable[[], float] | None = None,
        ugain: Sequence[int] = DEFAULT_UGAIN,
        igain: Sequence[int] = DEFAULT_IGAIN,
        pga_gain: int = 2,
        seed: int = 0,
    ) -> None:
        if len(ugain) != 3 or len(igain) != 3:
            raise ValueError("ugain and igain need three entries (phases A, B, C)")
        if pga_gain not in (1, 2, 4):
            raise ValueError("pga_gain must be 1, 2 or 4")
        self._clock = clock
        self._plant = plant
        self._voltage_fn = voltage_v
        self._current_fn = current_a
        self._frequency_fn = frequency_hz
        self._ref_ugain = tuple(ugain)
        self._ref_igain = tuple(igain)
        self._ref_pga = float(pga_gain)
        self._rng = random.Random(seed)
        self.fault = Atm90e32Fault.NONE
        #: When True the chip refuses the unlock key, so configuration writes never stick.
        self.reject_unlock = False
        self.ignored_writes: list[tuple[int, int]] = []  # (address, value) writes the chip dropped
        self._forced: dict[int, int] = {}
        self._corrupt_skip = 0
        self._corrupt_count = 0
        self._regs: dict[int, int] = {}
        self._locked = True
        self._last_spi = 0
        self._busy_until = -math.inf
        self._fwd = [0, 0, 0]
        self._rev = [0, 0, 0]
        self._fwd_frac = [0.0, 0.0, 0.0]
        self._rev_frac = [0.0, 0.0, 0.0]
        self._last_t = clock.monotonic()
        self._load_reset_values()

    # ------------------------------------------------------------------ scenario / test knobs
    def power_cycle(self) -> None:
        """Supply dropped and came back: registers to power-on values, energy registers empty."""
        self._load_reset_values()
        self._last_spi = 0
        self._busy_until = -math.inf
        self._last_t = self._clock.monotonic()

    def sync(self) -> None:
        """Accumulate energy up to now with the plant as it is, before scenario code changes it."""
        self._integrate()

    def force_register(self, address: int, value: int | None) -> None:
        """Make reads of ``address`` return ``value`` (a chip internal fault); ``None`` undoes it."""
        if value is None:
            self._forced.pop(address, None)
        else:
            self._forced[address] = value & 0xFFFF

    def corrupt_reads(self, count: int = 1, *, after: int = 0) -> None:
        """Flip a bit on SDO in ``count`` read data words, after letting ``after`` reads through clean
        (noise on the wire: the chip's LastSPIData still holds what it meant to send)."""
        self._corrupt_skip = after
        self._corrupt_count = count

    def register(self, address: int) -> int:
        """Peek at the register file without an SPI access (measurement registers excluded)."""
        return self._regs.get(address, 0)

    def energy_counts(self, phase: int) -> tuple[int, int]:
        """(forward, reverse) counts waiting in a phase's read-to-clear registers."""
        return self._fwd[phase], self._rev[phase]

    @property
    def locked(self) -> bool:
        return self._locked

    # ---------------------------------------------------------------------------- SPI side
    def transfer(self, tx: bytes, *, mode: int, speed_hz: int) -> bytes:
        if len(tx) != 4:
            return b"\xff" * len(tx)  # not a 32-clock frame: the chip discards it and leaves SDO idle
        self._integrate()
        word = int.from_bytes(tx, "big")
        late_edge = self.fault is Atm90e32Fault.WRONG_MODE or mode not in (0, 3)
        if late_edge:
            word = word << 1 & 0xFFFF_FFFF
        data_out: int | None = None
        if self._clock.monotonic() >= self._busy_until:
            command, data = word >> 16, word & 0xFFFF
            address = command & 0x03FF
            if command & 0x8000:
                data_out = self._read_register(address)
            else:
                self._write_register(address, data)
        if data_out is not None and self._corrupt_count > 0:
            if self._corrupt_skip > 0:
                self._corrupt_skip -= 1
            else:
                self._corrupt_count -= 1
                data_out ^= 0x0100
        rx = 0xFFFF_0000 | (0xFFFF if data_out is None else data_out)
        if late_edge:
            rx = rx >> 1 | 0x8000_0000
        if self.fault is Atm90e32Fault.FLOATING_MISO:
            rx = 0xFFFF_FFFF
        elif self.fault is Atm90e32Fault.STUCK_ZERO:
            rx = 0
        elif self.fault is Atm90e32Fault.GARBAGE:
            rx = self._rng.getrandbits(32)
        return rx.to_bytes(4, "big")

    # ------------------------------------------------------------------------ register file
    def _load_reset_values(self) -> None:
        self._regs = dict(_RESET_VALUES)
        self._locked = True
        self._fwd = [0, 0, 0]
        self._rev = [0, 0, 0]
        self._fwd_frac = [0.0, 0.0, 0.0]
        self._rev_frac = [0.0, 0.0, 0.0]

    def _write_register(self, address: int, value: int) -> None:
        self._last_spi = value  # the interface latched the word whether or not the register takes it
        if address == SOFT_RESET:
            if value == SOFT_RESET_KEY:
                self._load_reset_values()
                self._busy_until = self._clock.monotonic() + RESET_BUSY_S
            return
        if address == CFG_REG_ACC_EN:
            accepted = value != UNLOCK_KEY or not self.reject_unlock
            self._regs[address] = value if accepted else 0
            self._locked = not (accepted and value == UNLOCK_KEY)
            return
        if address >= READ_ONLY_FROM or (address in LOCKED_BLOCK and self._locked) or address == LAST_SPI_DATA:
            self.ignored_writes.append((address, value))
            return
        self._regs[address] = value

    def _read_register(self, address: int) -> int:
        if address == LAST_SPI_DATA:
            return self._last_spi
        if address in self._forced:
            value = self._forced[address]
        elif address in AP_ENERGY:
            phase = AP_ENERGY.index(address)
            value, self._fwd[phase] = self._fwd[phase], 0
        elif address in AN_ENERGY:
            phase = AN_ENERGY.index(address)
            value, self._rev[phase] = self._rev[phase], 0
        elif address >= READ_ONLY_FROM:
            value = self._measurement(address)
        else:
            value = self._regs.get(address, 0)
        self._last_spi = value
        return value

    # ------------------------------------------------------------------------- measurement
    def _truth(self) -> tuple[list[float], list[float], float]:
        plant = self._plant
        if self._voltage_fn is not None:
            volts = list(self._voltage_fn())
        elif plant is not None:
            volts = list(plant.grid_voltage_v[: plant.phases])
        else:
            volts = []
        if self._current_fn is not None:
            amps = list(self._current_fn())
        elif plant is not None:
            amps = list(plant.ev_current_a[: plant.phases])
        else:
            amps = []
        if self._frequency_fn is not None:
            hertz = float(self._frequency_fn())
        else:
            hertz = plant.grid_frequency_hz if plant is not None else 0.0
        volts = [*volts, 0.0, 0.0, 0.0][:3]
        amps = [*amps, 0.0, 0.0, 0.0][:3]
        return volts, amps, hertz

    def _metering(self) -> bool:
        return self._regs.get(METER_EN, 0) == 0x0001

    def _pga_factor(self, phase: int) -> float:
        code = self._regs.get(MMODE1, 0) >> (2 * phase) & 0b11
        return _PGA_FACTOR[code] / self._ref_pga

    def _phase_power_w(self, volts: float, amps: float, phase: int) -> float:
        return volts * amps * self._pga_factor(phase)

    def _measurement(self, address: int) -> int:
        if not self._metering():
            return 0
        volts, amps, hertz = self._truth()
        if address in URMS:
            phase = URMS.index(address)
            scaled = volts[phase] * self._regs.get(UGAIN[phase], 0) / self._ref_ugain[phase]
            return _clamp16(round(scaled / VOLTS_PER_LSB))
        if address in IRMS:
            phase = IRMS.index(address)
            gain = self._regs.get(IGAIN[phase], 0) / self._ref_igain[phase] * self._pga_factor(phase)
            return _clamp16(round(abs(amps[phase]) * gain / AMPS_PER_LSB))
        if address in PMEAN or address in PMEAN_LSB:
            phase = PMEAN.index(address) if address in PMEAN else PMEAN_LSB.index(address)
            raw = round(self._phase_power_w(volts[phase], amps[phase], phase) / WATTS_PER_LSB)
            raw = max(-(1 << 31), min((1 << 31) - 1, raw)) & 0xFFFF_FFFF
            return raw >> 16 if address in PMEAN else raw & 0xFFFF
        if address == FREQ:
            if max(abs(v) for v in volts) < FREQUENCY_DETECT_V:
                return 0
            return _clamp16(round(hertz / HERTZ_PER_LSB))
        return 0

    def _wh_per_count(self) -> float | None:
        pl = self._regs.get(PL_CONST_H, 0) << 16 | self._regs.get(PL_CONST_L, 0)
        if pl == 0:
            return None
        return CF_PER_COUNT * 1000.0 * pl / PL_NUMERATOR

    def _integrate(self) -> None:
        now = self._clock.monotonic()
        dt = now - self._last_t
        self._last_t = now
        per_count = self._wh_per_count()
        if dt <= 0 or per_count is None or not self._metering() or now < self._busy_until:
            return
        volts, amps, _ = self._truth()
        for phase in range(3):
            counts = self._phase_power_w(volts[phase], amps[phase], phase) * dt / 3600.0 / per_count
            if counts > 0:
                self._fwd_frac[phase] += counts
                whole = math.floor(self._fwd_frac[phase])
                self._fwd_frac[phase] -= whole
                self._fwd[phase] = (self._fwd[phase] + whole) & 0xFFFF
            elif counts < 0:
                self._rev_frac[phase] -= counts
                whole = math.floor(self._rev_frac[phase])
                self._rev_frac[phase] -= whole
                self._rev[phase] = (self._rev[phase] + whole) & 0xFFFF


def _clamp16(value: int) -> int:
    return max(0, min(0xFFFF, value))
