"""ATM90E32AS (Microchip/Atmel) poly-phase energy metering IC on SPI, as a :class:`hal.interfaces.Meter`.

Wire format (standards-facts.md 5.2; register addresses from ESPHome ``atm90e32_reg.h``, which the
CircuitSetup Arduino library matches): every access is one 32-bit frame with chip select
held low, MSB first: a 16-bit command word (bit 15 = 1 for read, bits 9..0 = register address) followed
by a 16-bit data word. On a read the chip clocks the register out during the data word.

SPI mode: ESPHome runs the chip in mode 3 (``atm90e32.h``: ``CLOCK_POLARITY_HIGH,
CLOCK_PHASE_TRAILING``), as does CircuitSetup's library on ESP32/SAMD (``SPI_MODE3``), while the same
library uses ``SPI_MODE0`` on AVR; both modes sample on the rising SCLK edge. We use mode 3, the mode of
the most used open driver (standards-facts.md 5.2 says mode 0, which should work as well). Speed:
CircuitSetup notes "SPI interface rate is 200 to 160k bps" and older ESPHome used 200 kHz (newer
ESPHome runs 1 MHz); we stay at 200 kHz, which also leaves the >= 4 us between address word and valid
read data that CircuitSetup waits for (one 200 kHz clock is 5 us). The datasheet's SPI timing table
could not be consulted here; raise the speed only after checking it.

Energy: the per-phase active energy registers are 16-bit and cleared when read, so this driver keeps the
running import/export totals on the host (floats in Wh that only grow) and can resume them from the
firmware's journal after a reboot. The registers hold at most 65535 counts (204.8 Wh at the default
meter constant), so ``read()`` must be called often enough: see :func:`max_read_interval_s`.

Garbage detection: each measurement read is followed by a read of LastSPIData (0x78), which holds the
last word the SPI interface moved (ESPHome ``validate_spi_read_``), and every value is checked against
what the chip can produce. A failed check raises :class:`hal.errors.ProtocolError` naming the register
and its raw value; nothing doubtful is returned or added to the energy totals.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from hal.buses import SpiDevice
from hal.clock import Clock
from hal.errors import DeviceNotFound, ImplausibleReading, ProtocolError
from hal.types import MeterReading

# --------------------------------------------------------------------------------------------- bus
#: SPI mode for hal.buses.open_spi (see module docstring: mode 3 as ESPHome; mode 0 also samples right).
SPI_MODE = 3
#: Recommended SCLK for hal.buses.open_spi (CircuitSetup ATM90E32 library: 200 kHz).
MAX_SPEED_HZ = 200_000

# ------------------------------------------------------------------------- registers (M90E32AS map)
REG_METER_EN = 0x00  # MeterEn: 0x0001 enables metering
REG_PL_CONST_H = 0x31  # PLconstH: high word of the PL constant
REG_PL_CONST_L = 0x32  # PLconstL: low word of the PL constant
REG_MMODE0 = 0x33  # MMode0: metering mode (line frequency, 3P4W/3P3W)
REG_MMODE1 = 0x34  # MMode1: PGA gain of the current channels
REG_SOFT_RESET = 0x70  # SoftReset: write 0x789A to reset
REG_LAST_SPI_DATA = 0x78  # LastSPIData: last word read or written over SPI
REG_CFG_REG_ACC_EN = 0x7F  # CfgRegAccEn: 0x55AA unlocks configuration writes, 0x0000 locks
REG_UGAIN = (0x61, 0x65, 0x69)  # UgainA/B/C: voltage RMS gain
REG_IGAIN = (0x62, 0x66, 0x6A)  # IgainA/B/C: current RMS gain
REG_AP_ENERGY = (0x81, 0x82, 0x83)  # APenergyA/B/C: forward active energy, read-to-clear
REG_AN_ENERGY = (0x85, 0x86, 0x87)  # ANenergyA/B/C: reverse active energy, read-to-clear
REG_PMEAN = (0xB1, 0xB2, 0xB3)  # PmeanA/B/C: mean active power, high word
REG_PMEAN_LSB = (0xC1, 0xC2, 0xC3)  # PmeanALSB/B/C: mean active power, low word
REG_URMS = (0xD9, 0xDA, 0xDB)  # UrmsA/B/C: voltage RMS
REG_IRMS = (0xDD, 0xDE, 0xDF)  # IrmsA/B/C: current RMS
REG_FREQ = 0xF8  # Freq: line frequency

_PHASE_LETTERS = "ABC"


def register_name(address: int) -> str:
    """Datasheet name of a register this driver touches, for error messages."""
    fixed = {
        REG_METER_EN: "MeterEn",
        REG_PL_CONST_H: "PLconstH",
        REG_PL_CONST_L: "PLconstL",
        REG_MMODE0: "MMode0",
        REG_MMODE1: "MMode1",
        REG_SOFT_RESET: "SoftReset",
        REG_LAST_SPI_DATA: "LastSPIData",
        REG_CFG_REG_ACC_EN: "CfgRegAccEn",
        REG_FREQ: "Freq",
    }
    if address in fixed:
        return fixed[address]
    for stem, table in (
        ("Ugain", REG_UGAIN),
        ("Igain", REG_IGAIN),
        ("APenergy", REG_AP_ENERGY),
        ("ANenergy", REG_AN_ENERGY),
        ("Pmean", REG_PMEAN),
        ("Urms", REG_URMS),
        ("Irms", REG_IRMS),
    ):
        if address in table:
            return f"{stem}{_PHASE_LETTERS[table.index(address)]}"
    if address in REG_PMEAN_LSB:
        return f"Pmean{_PHASE_LETTERS[REG_PMEAN_LSB.index(address)]}LSB"
    return f"register 0x{address:03X}"


# ----------------------------------------------------------------------------------- magic values
SOFT_RESET_KEY = 0x789A  # datasheet, SoftReset (0x70)
CFG_UNLOCK_KEY = 0x55AA  # datasheet, CfgRegAccEn (0x7F)
CFG_LOCK = 0x0000
METER_ENABLE = 0x0001  # datasheet, MeterEn (0x00)
#: After a soft reset the chip needs >= 5 ms before it answers (ESPHome waits 5 ms + 1 ms).
RESET_WAIT_S = 0.006
READ_BIT = 0x8000  # bit 15 of the command word selects a read
ADDRESS_MASK = 0x03FF  # 10-bit register address

# ------------------------------------------------------------------------------------------ scaling
VOLTS_PER_LSB = 0.01  # Urms: reg / 100 V (standards-facts.md 5.2)
AMPS_PER_LSB = 0.001  # Irms: reg / 1000 A
WATTS_PER_LSB = 0.00032  # Pmean: signed 32-bit (high << 16 | LSB word) * 0.00032 W
HERTZ_PER_LSB = 0.01  # Freq: reg / 100 Hz
#: Default PL constant 0x0861C468 = 140625000 (standards-facts.md 5.2) = 4.5e11 / 3200 imp/kWh.
DEFAULT_PL_CONSTANT = 140_625_000
#: PL_constant = 4.5e11 / MC (MC = meter constant in imp/kWh): 140625000 <-> 3200 imp/kWh.
PL_CONSTANT_NUMERATOR = 450_000_000_000
#: Energy registers count 0.01 CF pulses (standards-facts.md 5.2: 0.003125 Wh at 3200 imp/kWh).
CF_PER_COUNT = 0.01
ENERGY_REGISTER_MAX = 0xFFFF
#: MMode0 0x0087 = 3P4W, 50 Hz, all phases in the sums; bit 12 = 60 Hz; bit 8 = 3P3W (standards-facts 5.2).
MMODE0_BASE = 0x0087
MMODE0_60HZ = 1 << 12
MMODE0_3P3W = 1 << 8
#: MMode1: two PGA bits per current channel, 00 = x1, 01 = x2, 10 = x4 (0x15 = x2, 0x2A = x4 on A/B/C).
PGA_CODES = {1: 0b00, 2: 0b01, 4: 0b10}

# ----------------------------------------------------------------------------------- plausibility
#: Above this phase voltage the line frequency must be a real grid frequency.
VOLTAGE_PRESENT_V = 40.0
FREQUENCY_MIN_HZ = 45.0
FREQUENCY_MAX_HZ = 65.0
#: |P| may exceed Urms * Irms (which bounds it) only by measurement error and resolution.
POWER_TOLERANCE = 0.10
POWER_SLACK_W = 5.0


def wh_per_count(pl_constant: int) -> float:
    """Energy of one energy-register count for a PL constant (0.003125 Wh at the default)."""
    meter_constant_imp_per_kwh = PL_CONSTANT_NUMERATOR / pl_constant
    return CF_PER_COUNT * 1000.0 / meter_constant_imp_per_kwh


def max_read_interval_s(phase_power_w: float, pl_constant: int = DEFAULT_PL_CONSTANT) -> float:
    """Longest time between two ``read()`` calls before a phase's 16-bit energy register, filling at
    ``phase_power_w``, can hold more than it can count (100 s at 7.36 kW per phase)."""
    if phase_power_w <= 0:
        return math.inf
    return ENERGY_REGISTER_MAX * wh_per_count(pl_constant) * 3600.0 / phase_power_w


@dataclass(frozen=True)
class Atm90e32Calibration:
    """How the chip is configured at ``init()``, plus the plausibility limits of this board.

    ``ugain``/``igain`` are the per-phase UgainX/IgainX register values (one entry per phase, A first)
    found by calibrating this board against a reference meter; ``pga_gain`` is the current-channel
    PGA (1, 2 or 4, into MMode1); ``pl_constant`` sets the meter constant (PLconstH/L); ``three_wire``
    selects 3P3W in MMode0. ``max_voltage_v``/``max_current_a`` are the highest RMS values this board's
    voltage divider and CTs can present: readings above them are treated as garbage (Urms saturates at
    655.35 V and Irms at 65.535 A in the registers).
    """

    ugain: tuple[int, ...]
    igain: tuple[int, ...]
    line_frequency_hz: int = 50
    pga_gain: int = 2
    pl_constant: int = DEFAULT_PL_CONSTANT
    three_wire: bool = False
    max_voltage_v: float = 600.0
    max_current_a: float = 65.0

    def __post_init__(self) -> None:
        if self.line_frequency_hz not in (50, 60):
            raise ValueError(f"line_frequency_hz must be 50 or 60, not {self.line_frequency_hz}")
        if not 1 <= len(self.ugain) <= 3 or len(self.igain) != len(self.ugain):
            raise ValueError("ugain and igain need one entry per phase (1 to 3), the same number each")
        for gain in (*self.ugain, *self.igain):
            if not 1 <= gain <= 0xFFFF:
                raise ValueError(f"gain register value {gain} is outside 1..65535")
        if self.pga_gain not in PGA_CODES:
            raise ValueError(f"pga_gain must be one of {sorted(PGA_CODES)}, not {self.pga_gain}")
        if not 1 <= self.pl_constant <= 0xFFFF_FFFF:
            raise ValueError(f"pl_constant {self.pl_constant} does not fit PLconstH/L")
        if not 0 < self.max_voltage_v <= 0xFFFF * VOLTS_PER_LSB:
            raise ValueError("max_voltage_v must be positive and at most 655.35 V (Urms full scale)")
        if not 0 < self.max_current_a <= 0xFFFF * AMPS_PER_LSB:
            raise ValueError("max_current_a must be positive and at most 65.535 A (Irms full scale)")

    @property
    def mmode0(self) -> int:
        value = MMODE0_BASE
        if self.line_frequency_hz == 60:
            value |= MMODE0_60HZ
        if self.three_wire:
            value |= MMODE0_3P3W
        return value

    @property
    def mmode1(self) -> int:
        code = PGA_CODES[self.pga_gain]
        return code | code << 2 | code << 4  # same PGA on current channels A, B and C

    @property
    def wh_per_count(self) -> float:
        return wh_per_count(self.pl_constant)


class Atm90e32Meter:
    """AC meter on an ATM90E32AS. ``spi`` is an already opened SPI device (``hal.buses.open_spi`` with
    ``mode=SPI_MODE, max_speed_hz=MAX_SPEED_HZ``); ``phases`` is 1 to 3 (phase A first)."""

    def __init__(
        self,
        spi: SpiDevice,
        *,
        name: str,
        phases: int,
        calibration: Atm90e32Calibration,
        clock: Clock,
        initial_import_wh: float = 0.0,
        initial_export_wh: float = 0.0,
    ) -> None:
        if not 1 <= phases <= 3:
            raise ValueError(f"{name}: phases must be 1, 2 or 3, not {phases}")
        if len(calibration.ugain) < phases:
            raise ValueError(f"{name}: calibration has gains for {len(calibration.ugain)} phases, need {phases}")
        for label, value in (
            ("initial_import_wh", initial_import_wh),
            ("initial_export_wh", initial_export_wh),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: {label} must be a finite energy >= 0, not {value}")
        self._spi = spi
        self._name = name
        self._phases = phases
        self._cal = calibration
        self._clock = clock
        self._import_wh = float(initial_import_wh)
        self._export_wh = float(initial_export_wh)
        self._last_energy_read: float | None = None
        self._last_power_w: tuple[float, ...] = (0.0,) * phases

    # ----------------------------------------------------------------------------- properties
    @property
    def name(self) -> str:
        return self._name

    @property
    def phases(self) -> int:
        return self._phases

    @property
    def import_wh(self) -> float:
        """Energy delivered to the EV since the journal began (host-accumulated)."""
        return self._import_wh

    @property
    def export_wh(self) -> float:
        """Energy returned to the grid since the journal began (host-accumulated)."""
        return self._export_wh

    # ------------------------------------------------------------------------------ framing
    def _transfer(self, command: int, data: int) -> int:
        frame = [command >> 8 & 0xFF, command & 0xFF, data >> 8 & 0xFF, data & 0xFF]
        try:
            rx = self._spi.xfer2(frame)
        except OSError as exc:
            raise DeviceNotFound(self._name, f"SPI transfer failed: {exc}") from exc
        if len(rx) != 4:
            raise ProtocolError(self._name, f"SPI transfer returned {len(rx)} bytes instead of 4")
        return rx[2] << 8 | rx[3]

    def _read(self, address: int) -> int:
        return self._transfer(READ_BIT | address & ADDRESS_MASK, 0x0000)

    def _write(self, address: int, value: int) -> None:
        self._transfer(address & ADDRESS_MASK, value & 0xFFFF)

    def _fail(self, address: int, raw: int, why: str) -> ProtocolError:
        return ProtocolError(self._name, f"{register_name(address)} (0x{address:02X}) read 0x{raw:04X}: {why}")

    def _energy_lost(self, address: int, raw: int, why: str) -> ImplausibleReading:
        """An energy register whose content is lost or doubtful: the energy of the interval cannot be
        known, which is a plausibility fault, not a communication hiccup."""
        return ImplausibleReading(self._name, f"{register_name(address)} (0x{address:02X}) read 0x{raw:04X}: {why}")

    def _read_checked(self, address: int) -> int:
        """Read a register and confirm it against LastSPIData, which the chip sets to the word it
        actually clocked out: a mismatch means the word was corrupted on the wires."""
        raw = self._read(address)
        echo = self._read(REG_LAST_SPI_DATA)
        if echo != raw:
            raise self._fail(
                address,
                raw,
                f"LastSPIData says the chip sent 0x{echo:04X}; corrupted SPI transfer (wiring, noise)",
            )
        return raw

    def _expect_last_spi_data(self, written_to: int, value: int) -> None:
        echo = self._read(REG_LAST_SPI_DATA)
        if echo != value:
            if echo in (0x0000, 0xFFFF):
                hint = "MISO stuck or floating: chip missing, unpowered, wrong chip select or wrong SPI mode"
            else:
                hint = "corrupted SPI transfer or wrong SPI mode"
            raise ProtocolError(
                self._name,
                f"write of 0x{value:04X} to {register_name(written_to)} (0x{written_to:02X}) not confirmed: "
                f"LastSPIData reads 0x{echo:04X}; {hint}",
            )

    # -------------------------------------------------------------------------------- init
    async def init(self) -> None:
        """Soft-reset the chip, write the configuration, lock it and read it back.

        The chip's energy registers restart from zero; the host totals are kept."""
        cal = self._cal
        self._write(REG_SOFT_RESET, SOFT_RESET_KEY)
        await self._clock.sleep(RESET_WAIT_S)
        self._write(REG_CFG_REG_ACC_EN, CFG_UNLOCK_KEY)
        self._expect_last_spi_data(REG_CFG_REG_ACC_EN, CFG_UNLOCK_KEY)
        config: list[tuple[int, int]] = [
            (REG_METER_EN, METER_ENABLE),
            (REG_PL_CONST_H, cal.pl_constant >> 16),
            (REG_PL_CONST_L, cal.pl_constant & 0xFFFF),
            (REG_MMODE0, cal.mmode0),
            (REG_MMODE1, cal.mmode1),
        ]
        for phase in range(len(cal.ugain)):
            config.append((REG_UGAIN[phase], cal.ugain[phase]))
            config.append((REG_IGAIN[phase], cal.igain[phase]))
        for address, value in config:
            self._write(address, value)
        self._write(REG_CFG_REG_ACC_EN, CFG_LOCK)
        self._expect_last_spi_data(REG_CFG_REG_ACC_EN, CFG_LOCK)
        for address, value in config:
            raw = self._read(address)
            if raw != value:
                raise self._fail(address, raw, f"expected 0x{value:04X} after configuration; the write did not stick")
        self._last_energy_read = self._clock.monotonic()
        self._last_power_w = (0.0,) * self._phases

    # -------------------------------------------------------------------------------- read
    async def read(self) -> MeterReading:
        """Voltage, current and signed power per phase, line frequency, and the energy totals.

        Non-destructive registers are read and checked first, so a bad reading leaves the chip's
        energy registers untouched for the next call."""
        cal = self._cal
        meter_en = self._read_checked(REG_METER_EN)
        if meter_en != METER_ENABLE:
            if meter_en == 0xFFFF:
                why = "all ones: MISO floating, chip missing or unpowered"
            elif meter_en == 0x0000:
                why = "metering is off: chip reset or lost power (call init() again), or MISO stuck low"
            else:
                why = "expected 0x0001; garbage on the bus"
            raise self._fail(REG_METER_EN, meter_en, why)

        voltages: list[float] = []
        currents: list[float] = []
        powers: list[float] = []
        for phase in range(self._phases):
            raw_u = self._read_checked(REG_URMS[phase])
            volts = raw_u * VOLTS_PER_LSB
            if volts > cal.max_voltage_v:
                raise self._fail(REG_URMS[phase], raw_u, f"{volts:.2f} V is above this board's {cal.max_voltage_v} V")
            raw_i = self._read_checked(REG_IRMS[phase])
            amps = raw_i * AMPS_PER_LSB
            if amps > cal.max_current_a:
                raise self._fail(REG_IRMS[phase], raw_i, f"{amps:.3f} A is above this board's {cal.max_current_a} A")
            raw_p_high = self._read_checked(REG_PMEAN[phase])
            raw_p_low = self._read_checked(REG_PMEAN_LSB[phase])
            raw_p = raw_p_high << 16 | raw_p_low
            if raw_p & 0x8000_0000:
                raw_p -= 1 << 32
            watts = raw_p * WATTS_PER_LSB
            bound = volts * amps * (1 + POWER_TOLERANCE) + POWER_SLACK_W
            if abs(watts) > bound:
                raise self._fail(
                    REG_PMEAN[phase],
                    raw_p_high,
                    f"power {watts:.1f} W (with LSB word 0x{raw_p_low:04X}) exceeds Urms x Irms = "
                    f"{volts * amps:.1f} VA; garbage on the bus or Ugain/Igain far off",
                )
            voltages.append(volts)
            currents.append(amps)
            powers.append(watts)
            await asyncio.sleep(0)  # let other tasks run between phases; SPI at 200 kHz is slow

        raw_f = self._read_checked(REG_FREQ)
        hertz = raw_f * HERTZ_PER_LSB
        if max(voltages) >= VOLTAGE_PRESENT_V:
            if not FREQUENCY_MIN_HZ <= hertz <= FREQUENCY_MAX_HZ:
                raise self._fail(
                    REG_FREQ,
                    raw_f,
                    f"{hertz:.2f} Hz with {max(voltages):.1f} V present is outside "
                    f"{FREQUENCY_MIN_HZ:g}-{FREQUENCY_MAX_HZ:g} Hz",
                )
        else:
            hertz = 0.0  # no voltage, no frequency to report

        await self._read_energy(tuple(powers))
        return MeterReading(
            voltage_v=tuple(voltages),
            current_a=tuple(currents),
            power_w=tuple(powers),
            frequency_hz=hertz,
            import_wh=self._import_wh,
            export_wh=self._export_wh,
        )

    async def _read_energy(self, powers: tuple[float, ...]) -> None:
        """Read (and so clear) each phase's forward and reverse energy register and add what passes the
        checks to the totals; raise after adding if any register was doubtful."""
        now = self._clock.monotonic()
        elapsed = max(0.0, now - self._last_energy_read) if self._last_energy_read is not None else None
        self._last_energy_read = now
        previous_powers = self._last_power_w
        self._last_power_w = powers
        per_count = self._cal.wh_per_count
        # Highest energy one phase can deliver in `elapsed`: full-scale V x I of this board.
        full_scale_w = self._cal.max_voltage_v * self._cal.max_current_a
        problems: list[ImplausibleReading] = []
        for phase in range(self._phases):
            for table, is_import in ((REG_AP_ENERGY, True), (REG_AN_ENERGY, False)):
                address = table[phase]
                raw = self._read(address)
                echo = self._read(REG_LAST_SPI_DATA)
                if echo != raw:
                    problems.append(
                        self._energy_lost(
                            address, raw, f"LastSPIData says 0x{echo:04X}; energy of this interval is lost"
                        )
                    )
                    continue
                wh = raw * per_count
                if elapsed is not None:
                    possible_wh = full_scale_w * elapsed / 3600.0 * (1 + POWER_TOLERANCE) + per_count
                    if wh > possible_wh:
                        problems.append(
                            self._energy_lost(
                                address,
                                raw,
                                f"{wh:.3f} Wh in {elapsed:.1f} s is more than {full_scale_w:.0f} W gives",
                            )
                        )
                        continue
                if is_import:
                    self._import_wh += wh
                else:
                    self._export_wh += wh
                if elapsed is not None:
                    # Both ends of the interval at this power: the register very likely ran past 16 bits.
                    signed = 1.0 if is_import else -1.0
                    steady_w = min(signed * previous_powers[phase], signed * powers[phase])
                    if steady_w * elapsed / 3600.0 > ENERGY_REGISTER_MAX * per_count:
                        limit_s = max_read_interval_s(steady_w, self._cal.pl_constant)
                        problems.append(
                            self._energy_lost(
                                address,
                                raw,
                                f"{steady_w:.0f} W for {elapsed:.1f} s overflows the 16-bit register; "
                                f"energy was lost: read at least every {limit_s:.0f} s",
                            )
                        )
        if problems:
            raise problems[0]
