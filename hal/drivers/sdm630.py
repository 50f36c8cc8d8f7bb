"""Eastron SDM630 three-phase energy meter (SDM630-Modbus V2 / MID class) on Modbus RTU, as a
:class:`hal.interfaces.Meter`.

Bus: an RS-485 line (a USB adapter, ``/dev/ttyUSB0``, or a UART with a transceiver) driven by pymodbus's
asyncio serial client with the RTU framer. The asyncio client is used, not the synchronous one in a
worker thread: it reads the port through the event loop's selector (``add_reader`` on the tty), so a
request costs no thread, a cancelled ``read()`` (the connector stopping) leaves no thread blocked on the
port, and it works on a pty (the simulated boards and the tests run it against
:class:`hal.sim.sdm630.Sdm630Sim` on one). pymodbus's own retries and background reconnect are switched
off (``retries=0``, ``reconnect_delay=0``): a failed read is reported at once, the caller decides when to
try again (the connector reads every second and raises METER_COMM_LOST after 5 s), and a port that
vanished (USB adapter unplugged) is reopened by the next request.

Register map (Eastron "SDM630 Modbus protocol" as reproduced by ``nmakel/sdm_modbus`` ``sdm.py``
(SDM630 class, from Eastron's protocol documents v1.8/v2.0), reaper7 ``SDM_Energy_Meter`` ``SDM.h`` and
the racksync SDM630 Modbus appendix): every measurement is an IEEE-754 float32 in two input registers
(function 04), high word first; addresses are the "300xx" register numbers minus 30001. One read is two
requests of contiguous registers: 0x0000-0x0011 (18 registers: phase voltages, currents, active powers)
and 0x0046-0x004B (6 registers: frequency, total import kWh, total export kWh). One 76-register request
would also cover both, but it spans reserved gaps (0x0040, 0x0044) whose behaviour is not documented,
and some Eastron models refuse more than 30 parameters per request (SDM72D-M manual); two short
requests take about 60 ms of line time at 9600 Bd.

Identity (holding registers, function 03): serial number at 0xFC00-0xFC01 (uint32, ``nmakel/sdm_modbus``)
and meter code at 0xFC02 (0x0070 = SDM630, Tinkerforge ``evse-v2-bricklet`` ``sdm.c``). A meter whose
map lacks them (exception 02) is still usable: ``serial_number`` is then ``None``.

Energy: the totals are the meter's own (MID-certified) registers, converted from kWh to Wh; this driver
never accumulates or invents energy. Import is energy taken from the grid through the meter, which is
energy to the EV when the meter is wired as the charger's meter; ``reverse`` swaps import and export and
negates the powers for a meter mounted the other way round.

Garbage never becomes energy: NaN or infinite floats, negative energy, voltages or currents above this
board's maxima, a phase power beyond V x I and a frequency outside 45-65 Hz with voltage present each
raise :class:`ProtocolError` naming the register and the value. Totals that are well-formed but cannot
be true (going down, growing faster than the board's power, frozen while power flows) are judged where
every meter's are, in :mod:`firmware.metering.plausibility`. A silent line raises
:class:`DeviceNotFound` after ``timeout_s``; bytes that do not make a valid answer (bad CRC, wrong
unit id, noise), a Modbus exception response or an answer of the wrong length raise
:class:`ProtocolError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from hal.errors import DeviceNotFound, ProtocolError
from hal.types import MeterReading

log = logging.getLogger(__name__)
# pymodbus logs an error with a frame dump for every failed request; this driver turns each failure
# into a HalError naming the register and the bytes, which the firmware logs once per outage.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

# ------------------------------------------------------------------------------------ serial line
#: Eastron SDM630 defaults: 9600 Bd, no parity, one stop bit, unit (slave) address 1 (SDM630MCT-ML
#: manual, holding registers "baud rate ... 2 = 9600 baud, default", "parity/stop ... 0 = one stop bit
#: and no parity, default", "address 1 to 247, default 1"). Some distributors ship even parity: check
#: the meter's setup menu.
DEFAULT_BAUDRATE = 9600
BAUDRATES = (2400, 4800, 9600, 19200, 38400)  # the rates the meter's baud rate register offers
DEFAULT_PARITY = "N"
DEFAULT_UNIT = 1
#: Answer deadline per request. A 18-register answer takes 43 ms at 9600 Bd; the rest is the meter's
#: turnaround. The connector awaits ``read()`` in its supervision loop, so this also bounds its stall.
DEFAULT_TIMEOUT_S = 0.5
#: Extra time on top of pymodbus's own timeout before this driver gives up on a request itself.
_GUARD_S = 0.5

# ---------------------------------------------------------------- function and exception codes
READ_HOLDING_REGISTERS = 0x03  # Modbus Application Protocol V1.1b3, 6.3
READ_INPUT_REGISTERS = 0x04  # Modbus Application Protocol V1.1b3, 6.4
#: Exception codes (Modbus Application Protocol V1.1b3, section 7).
EXCEPTION_NAMES = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}

# ------------------------------------------------------------------- input registers (function 04)
REG_VOLTAGE = (0x0000, 0x0002, 0x0004)  # 30001/30003/30005: phase 1..3 line-to-neutral volts
REG_CURRENT = (0x0006, 0x0008, 0x000A)  # 30007/30009/30011: phase 1..3 current, A
REG_POWER = (0x000C, 0x000E, 0x0010)  # 30013/30015/30017: phase 1..3 active power, W (+ import)
REG_FREQUENCY = 0x0046  # 30071: frequency of supply voltages, Hz
REG_IMPORT_KWH = 0x0048  # 30073: total import active energy, kWh
REG_EXPORT_KWH = 0x004A  # 30075: total export active energy, kWh
PHASE_BLOCK = (0x0000, 18)  # (start, count): voltages, currents, powers
ENERGY_BLOCK = (0x0046, 6)  # (start, count): frequency, import, export

# ------------------------------------------------------------------ holding registers (function 03)
REG_SERIAL_NUMBER = 0xFC00  # 464513-464514: serial number, uint32
REG_METER_CODE = 0xFC02  # 464515: meter code, uint16
#: Meter codes seen in open drivers (Tinkerforge evse-v2-bricklet sdm.c); others are reported as a code.
METER_MODELS = {0x0070: "SDM630", 0x0084: "SDM72D-M", 0x0089: "SDM72D-M-2"}
DEFAULT_MODEL = "SDM630"

_NAMES = {
    **{a: f"phase {i + 1} voltage" for i, a in enumerate(REG_VOLTAGE)},
    **{a: f"phase {i + 1} current" for i, a in enumerate(REG_CURRENT)},
    **{a: f"phase {i + 1} active power" for i, a in enumerate(REG_POWER)},
    REG_FREQUENCY: "frequency",
    REG_IMPORT_KWH: "total import kWh",
    REG_EXPORT_KWH: "total export kWh",
}


def register_name(address: int, function: int = READ_INPUT_REGISTERS) -> str:
    """``phase 2 current (30009, 0x0008)``: the parameter and its Eastron register number, for errors."""
    if function == READ_HOLDING_REGISTERS:
        label = {REG_SERIAL_NUMBER: "serial number", REG_METER_CODE: "meter code"}.get(address, "holding register")
        return f"{label} ({400001 + address}, 0x{address:04X})"
    return f"{_NAMES.get(address, 'input register')} ({30001 + address}, 0x{address:04X})"


# ------------------------------------------------------------------------------------ plausibility
#: Above this phase voltage the line frequency must be a real grid frequency.
VOLTAGE_PRESENT_V = 40.0
FREQUENCY_MIN_HZ = 45.0
FREQUENCY_MAX_HZ = 65.0
#: |P| of a phase may exceed its V x I only by measurement error and rounding.
POWER_TOLERANCE = 0.10
POWER_SLACK_W = 5.0
#: No real total reaches this: 100 GWh is 83 kW (3 x 100 A x 276 V) for 137 years.
MAX_ENERGY_KWH = 1e8
#: Resolution of the energy totals, for the plausibility checks (firmware.metering.plausibility): the
#: meter shows 0.01 kWh, and a float32 total keeps 10 Wh steps up to 131 072 kWh (24-bit significand);
#: two steps leave room for both.
ENERGY_RESOLUTION_WH = 20.0


@dataclass(frozen=True)
class Sdm630Settings:
    """How the meter is reached, and the plausibility limits of this installation.

    ``max_voltage_v``/``max_current_a`` are the highest phase values the installation can see (a direct
    SDM630 is rated 100 A); readings above them are treated as garbage. ``reverse``: the meter is mounted
    the other way round (its import is energy from the EV).
    """

    baudrate: int = DEFAULT_BAUDRATE
    parity: str = DEFAULT_PARITY
    stopbits: int = 1
    unit: int = DEFAULT_UNIT
    timeout_s: float = DEFAULT_TIMEOUT_S
    reverse: bool = False
    max_voltage_v: float = 300.0
    max_current_a: float = 100.0

    def __post_init__(self) -> None:
        if self.baudrate not in BAUDRATES:
            raise ValueError(f"baudrate must be one of {BAUDRATES}, not {self.baudrate}")
        if self.parity not in ("N", "E", "O"):
            raise ValueError(f"parity must be 'N', 'E' or 'O', not {self.parity!r}")
        if self.stopbits not in (1, 2):
            raise ValueError(f"stopbits must be 1 or 2, not {self.stopbits}")
        if not 1 <= self.unit <= 247:
            raise ValueError(f"unit must be a Modbus slave address 1..247, not {self.unit}")
        if not 0 < self.timeout_s <= 5.0:
            raise ValueError(f"timeout_s must be within (0, 5] s, not {self.timeout_s}")
        if not (math.isfinite(self.max_voltage_v) and self.max_voltage_v > 0):
            raise ValueError(f"max_voltage_v must be a positive voltage, not {self.max_voltage_v}")
        if not (math.isfinite(self.max_current_a) and self.max_current_a > 0):
            raise ValueError(f"max_current_a must be a positive current, not {self.max_current_a}")


def float32(high: int, low: int) -> float:
    """The IEEE-754 float32 in two registers, high word first."""
    return float(struct.unpack(">f", struct.pack(">HH", high, low))[0])


#: (address, raw words, value, reason, error type) -> the error to raise; see :meth:`Sdm630Meter._fail`.
_FailFactory = Callable[[int, tuple[int, int], float, str, type[ProtocolError]], ProtocolError]


class Sdm630Meter:
    """AC meter on an Eastron SDM630 at Modbus unit ``settings.unit`` on serial ``port``.

    ``phases`` (1 to 3) is how many phases the reading reports, L1 first; the meter's totals cover all
    three. Call :meth:`init` before the first :meth:`read`, and :meth:`close` when done (also after a
    failed ``init``).
    """

    def __init__(self, port: str, *, name: str, phases: int, settings: Sdm630Settings | None = None) -> None:
        if not port:
            raise ValueError(f"{name}: port must name a serial device")
        if not 1 <= phases <= 3:
            raise ValueError(f"{name}: phases must be 1, 2 or 3, not {phases}")
        self._port = port
        self._name = name
        self._phases = phases
        self._settings = settings or Sdm630Settings()
        self._client: AsyncModbusSerialClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._rx = b""  # what arrived for the request in flight (pymodbus's receive buffer)
        self._serial_number: str | None = None
        self._meter_code: int | None = None

    # ----------------------------------------------------------------------------- properties
    @property
    def energy_resolution_wh(self) -> float:
        """Smallest trustworthy step of the totals (read by the connector's plausibility checks)."""
        return ENERGY_RESOLUTION_WH

    @property
    def name(self) -> str:
        return self._name

    @property
    def phases(self) -> int:
        return self._phases

    @property
    def port(self) -> str:
        return self._port

    @property
    def settings(self) -> Sdm630Settings:
        return self._settings

    @property
    def serial_number(self) -> str | None:
        """The meter's serial number (decimal), read at :meth:`init`; ``None`` if its map has none."""
        return self._serial_number

    @property
    def meter_code(self) -> int | None:
        return self._meter_code

    @property
    def vendor(self) -> str:
        return "Eastron"

    @property
    def model(self) -> str:
        """``SDM630``, or what the meter code says it is."""
        code = self._meter_code
        if code is None:
            return DEFAULT_MODEL
        return METER_MODELS.get(code, f"Eastron meter code 0x{code:04X}")

    # ------------------------------------------------------------------------------- lifecycle
    async def init(self) -> None:
        """Open the port and check that the meter answers; read its serial number and meter code.

        Raises :class:`DeviceNotFound` (naming the port) when the port cannot be opened or nothing
        answers, :class:`ProtocolError` when something answers wrongly."""
        async with self._session():
            serial = await self._optional_holding(REG_SERIAL_NUMBER, 2)
            code = await self._optional_holding(REG_METER_CODE, 1)
        self._serial_number = None if serial is None else str(serial[0] << 16 | serial[1])
        self._meter_code = None if code is None else code[0]
        s = self._settings
        log.info(
            "%s: %s serial %s on %s (unit %d, %d Bd %d%s%d)",
            self._name,
            self.model,
            self._serial_number or "unknown",
            self._port,
            s.unit,
            s.baudrate,
            8,
            s.parity,
            s.stopbits,
        )

    async def close(self) -> None:
        """Release the port. A later ``init``/``read`` opens it again."""
        self._drop_client()
        await asyncio.sleep(0)

    # ------------------------------------------------------------------------------------ read
    async def read(self) -> MeterReading:
        """Voltage, current and signed power per phase, line frequency, and the meter's totals in Wh."""
        async with self._session():
            phase_words = await self._registers(READ_INPUT_REGISTERS, *PHASE_BLOCK)
            energy_words = await self._registers(READ_INPUT_REGISTERS, *ENERGY_BLOCK)
        values = _Floats({PHASE_BLOCK[0]: phase_words, ENERGY_BLOCK[0]: energy_words}, self._fail)
        s = self._settings
        volts = [values.get(a, minimum=0.0, maximum=s.max_voltage_v, unit="V") for a in REG_VOLTAGE]
        amps = [abs(values.get(a, maximum=s.max_current_a, magnitude=True, unit="A")) for a in REG_CURRENT]
        watts: list[float] = []
        for phase, address in enumerate(REG_POWER):
            power = values.get(address)
            bound = volts[phase] * amps[phase] * (1 + POWER_TOLERANCE) + POWER_SLACK_W
            if abs(power) > bound:
                raise values.error(
                    address, f"{power:.1f} W is more than V x I = {volts[phase] * amps[phase]:.1f} VA allows"
                )
            watts.append(power)
        hertz = values.get(REG_FREQUENCY)
        if max(volts) >= VOLTAGE_PRESENT_V:
            if not FREQUENCY_MIN_HZ <= hertz <= FREQUENCY_MAX_HZ:
                raise values.error(
                    REG_FREQUENCY,
                    f"{hertz:.2f} Hz with {max(volts):.1f} V present is outside "
                    f"{FREQUENCY_MIN_HZ:g}-{FREQUENCY_MAX_HZ:g} Hz",
                )
        else:
            hertz = 0.0  # no voltage, no frequency to report
        import_kwh = values.get(REG_IMPORT_KWH, minimum=0.0, maximum=MAX_ENERGY_KWH, unit="kWh")
        export_kwh = values.get(REG_EXPORT_KWH, minimum=0.0, maximum=MAX_ENERGY_KWH, unit="kWh")

        n = self._phases
        sign = -1.0 if s.reverse else 1.0
        to_ev_wh, from_ev_wh = (export_kwh, import_kwh) if s.reverse else (import_kwh, export_kwh)
        return MeterReading(
            voltage_v=tuple(volts[:n]),
            current_a=tuple(amps[:n]),
            power_w=tuple(sign * w + 0.0 for w in watts[:n]),  # + 0.0: no -0.0 at zero power
            frequency_hz=hertz,
            import_wh=to_ev_wh * 1000.0,
            export_wh=from_ev_wh * 1000.0,
        )

    def _fail(
        self, address: int, words: tuple[int, int], value: float, why: str, kind: type[ProtocolError]
    ) -> ProtocolError:
        return kind(self._name, f"{register_name(address)} read {value!r} (0x{words[0]:04X}{words[1]:04X}): {why}")

    # ------------------------------------------------------------------------------ transport
    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[None]:
        """The client of the running event loop (opened on first use), held for one exchange."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._drop_client()  # a client left from another (finished) event loop cannot be awaited here
            s = self._settings
            self._client = AsyncModbusSerialClient(
                self._port,
                framer=FramerType.RTU,
                baudrate=s.baudrate,
                bytesize=8,
                parity=s.parity,
                stopbits=s.stopbits,
                timeout=s.timeout_s,
                retries=0,
                reconnect_delay=0,
                name=self._name,
                trace_packet=self._trace_packet,
            )
            self._loop = loop
            self._lock = asyncio.Lock()
        assert self._lock is not None
        async with self._lock:
            client = self._client
            if not client.connected and not await client.connect():
                raise DeviceNotFound(
                    self._name, f"cannot open serial port {self._port} (missing, in use or no permission)"
                )
            yield

    def _drop_client(self) -> None:
        client, self._client, self._loop, self._lock = self._client, None, None, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # its event loop may be closed already: the port is released anyway
                log.debug("%s: closing the Modbus client: %s", self._name, exc)

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        # pymodbus hands every outgoing frame and its whole receive buffer through here: what arrived
        # tells a silent line from an answer that never made a valid frame.
        self._rx = b"" if sending else bytes(data)
        return data

    async def _optional_holding(self, address: int, count: int) -> list[int] | None:
        """Holding registers the meter's map may lack: an "illegal data address" answer gives None."""
        try:
            return await self._registers(READ_HOLDING_REGISTERS, address, count)
        except _ExceptionResponse as exc:
            if exc.code != 0x02:
                raise
            log.info("%s: %s is not in this meter's map", self._name, register_name(address, READ_HOLDING_REGISTERS))
            return None

    async def _registers(self, function: int, address: int, count: int) -> list[int]:
        """One read request; the registers of a complete, well-formed answer, or a HalError."""
        client = self._client
        assert client is not None
        kind = "input" if function == READ_INPUT_REGISTERS else "holding"
        what = f"{kind} registers 0x{address:04X}-0x{address + count - 1:04X} (function {function:02d})"
        unit = self._settings.unit
        self._rx = b""
        call = client.read_input_registers if function == READ_INPUT_REGISTERS else client.read_holding_registers
        try:
            async with asyncio.timeout(self._settings.timeout_s + _GUARD_S):
                pdu: ModbusPDU = await call(address, count=count, device_id=unit)
        except TimeoutError:
            raise self._no_answer(what) from None
        except ConnectionException as exc:
            raise DeviceNotFound(self._name, f"serial port {self._port} is not open: {exc}") from exc
        except ModbusException:  # pymodbus: no valid response within the timeout
            raise self._no_answer(what) from None
        except OSError as exc:  # the port went away under the request (USB adapter unplugged)
            raise DeviceNotFound(self._name, f"serial port {self._port} failed: {exc}") from exc
        if pdu.isError():
            code = pdu.exception_code
            raise _ExceptionResponse(
                self._name,
                f"{what}: unit {unit} answered exception {code} ({EXCEPTION_NAMES.get(code, 'unknown code')})",
                code,
            )
        if pdu.function_code != function:
            raise ProtocolError(self._name, f"{what}: answer has function {pdu.function_code:02d}")
        registers = list(pdu.registers)
        if len(registers) != count:
            raise ProtocolError(self._name, f"{what}: answer has {len(registers)} registers, expected {count}")
        return registers

    def _no_answer(self, what: str) -> ProtocolError | DeviceNotFound:
        s = self._settings
        if self._rx:
            shown = self._rx[:24].hex(" ")
            return ProtocolError(
                self._name,
                f"{what}: {len(self._rx)} bytes arrived on {self._port} but no valid answer from unit {s.unit} "
                f"(bad CRC, wrong unit id or noise): {shown}{' ...' if len(self._rx) > 24 else ''}",
            )
        return DeviceNotFound(
            self._name,
            f"no answer from unit {s.unit} on {self._port} within {s.timeout_s:g} s to {what} (meter off, "
            f"A/B swapped, or another unit id, baud rate ({s.baudrate}) or parity ({s.parity}) set on the meter)",
        )


class _ExceptionResponse(ProtocolError):
    """The meter answered with a Modbus exception (``code``)."""

    def __init__(self, device: str, message: str, code: int) -> None:
        super().__init__(device, message)
        self.code = code


class _Floats:
    """The float32 parameters of the register blocks read, with range checks that name the register."""

    def __init__(self, blocks: dict[int, Sequence[int]], fail: _FailFactory) -> None:
        self._words: dict[int, tuple[int, int]] = {}
        for start, words in blocks.items():
            for offset in range(0, len(words) - 1, 2):
                self._words[start + offset] = (words[offset], words[offset + 1])
        self._fail = fail

    def raw(self, address: int) -> tuple[int, int]:
        return self._words[address]

    def value(self, address: int) -> float:
        return float32(*self._words[address])

    def error(self, address: int, why: str, kind: type[ProtocolError] = ProtocolError) -> ProtocolError:
        return self._fail(address, self._words[address], self.value(address), why, kind)

    def get(
        self,
        address: int,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        magnitude: bool = False,
        unit: str = "",
    ) -> float:
        value = self.value(address)
        if not math.isfinite(value):
            raise self.error(address, "not a number: garbage in the register")
        size = abs(value) if magnitude else value
        if minimum is not None and size < minimum:
            raise self.error(address, f"below {minimum:g} {unit}".rstrip())
        if maximum is not None and size > maximum:
            raise self.error(address, f"above this installation's {maximum:g} {unit}".rstrip())
        return value
