"""A simulated Eastron SDM630 energy meter answering Modbus RTU on the far end of a serial line.

:meth:`Sdm630Sim.open_pty` runs the meter on the master side of a pty and returns the slave path, which
:mod:`hal.drivers.sdm630` opens through pymodbus exactly as it opens ``/dev/ttyUSB0`` on a board. This
side is written independently of the driver and of pymodbus (its own CRC, framing and register map), so
a test of the two against each other checks both.

What it answers (Modbus over Serial Line V1.02 for the framing; the Eastron SDM630 Modbus protocol for
the registers, as reproduced in ``nmakel/sdm_modbus`` ``sdm.py`` and Tinkerforge ``evse-v2-bricklet``
``sdm.h``/``sdm.c``):

* RTU frames: unit id, function code, data, CRC-16/MODBUS (polynomial 0xA001 reflected, initial value
  0xFFFF, low byte sent first). A frame with a bad CRC, or for another unit, is ignored, as a slave
  must; a broadcast (unit 0) read gets no answer. Requests of function 03 and 04 are 8 bytes; a frame
  of another function is taken as complete after :data:`FRAME_GAP_S` of line silence (the 3.5
  character gap of RTU, stretched for a pty) and answered with exception 01.
* Function 04 (input registers, 0x0000-0x017F): every parameter is an IEEE-754 float32 in two
  registers, high word first. Parameters this model does not compute (reactive power, demand, THD...)
  read 0.0 (assumption: what a real meter returns in reserved gaps was not documented in the sources).
  Function 03 (holding registers): the serial number at 0xFC00-0xFC01 (uint32) and the meter code at
  0xFC02 (0x0070 = SDM630); either can be left out (``None``) to model a meter whose map lacks it. A
  read outside those ranges gets exception 02 (illegal data address); a count of 0 or above 125 gets
  exception 03 (illegal data value), as the Modbus application protocol V1.1b3 specifies for 03/04.
* Values: from the plant (``grid_voltage_v``, ``ev_current_a`` signed, ``grid_frequency_hz``) at every
  request, or set by a test on :attr:`voltage_v`, :attr:`current_a`, :attr:`power_w`,
  :attr:`frequency_hz` when no plant is given. Energy is integrated from the signed power over the
  injected clock into the import (power > 0) and export (power < 0) totals, which only grow; a test may
  set :attr:`import_wh`/:attr:`export_wh` directly. The power is taken to have held its present value
  since the previous request: scenario code that changes the plant should call :meth:`sync` first.

Fault knobs (thread-safe, take effect at the next request): :attr:`silent` (no answer at all),
:attr:`corrupt_crc` (answers with a wrong CRC), :attr:`exception_code` (answers every request with that
exception), :attr:`short_answer` (a well-formed answer one register short), :attr:`frozen` (the
registers stop updating: a hung measurement core), :meth:`jump_energy` (the import total leaps),
:meth:`rewind_energy` (the import total goes backwards) and :meth:`force` (any parameter reads a given
float: NaN, infinity, an absurd value).
"""

from __future__ import annotations

import math
import os
import struct
import threading
import time
from typing import Any, Protocol

from hal.sim.plant import Plant
from hal.sim.pty import PtyPeer, open_raw_pty

# Function and exception codes (Modbus Application Protocol Specification V1.1b3, sections 6.3, 6.4, 7).
READ_HOLDING_REGISTERS = 0x03
READ_INPUT_REGISTERS = 0x04
EXCEPTION_FLAG = 0x80
ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03
SERVER_DEVICE_FAILURE = 0x04
MAX_READ_COUNT = 125  # registers per function 03/04 request (spec: 1 to 125, 0x7D)

# SDM630 input registers (function 04), float32, high word first; "300xx" numbers from the Eastron map.
VOLTAGE = (0x0000, 0x0002, 0x0004)  # 30001/30003/30005 phase 1..3 line-to-neutral volts
CURRENT = (0x0006, 0x0008, 0x000A)  # 30007/30009/30011 phase 1..3 current, A
POWER = (0x000C, 0x000E, 0x0010)  # 30013/30015/30017 phase 1..3 active power, W
TOTAL_POWER = 0x0034  # 30053 total system power, W
FREQUENCY = 0x0046  # 30071 frequency of supply voltages, Hz
IMPORT_KWH = 0x0048  # 30073 total import active energy, kWh
EXPORT_KWH = 0x004A  # 30075 total export active energy, kWh
INPUT_REGISTERS = range(0x0000, 0x0180)  # the map ends with L3 total kvarh at 0x017C-0x017D
# SDM630 holding registers (function 03).
SERIAL_NUMBER = 0xFC00  # 464513-464514, uint32
METER_CODE = 0xFC02  # 464515, uint16; 0x0070 = SDM630 (Tinkerforge evse-v2-bricklet sdm.c)
SDM630_METER_CODE = 0x0070

#: Line silence that ends a frame whose length the function code does not tell.
FRAME_GAP_S = 0.02
_POLL_S = 0.005
_FIXED_REQUEST_LENGTH = {READ_HOLDING_REGISTERS: 8, READ_INPUT_REGISTERS: 8}


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS of ``data`` (Modbus over Serial Line V1.02, 6.2.2): shift right, XOR 0xA001 when
    the bit shifted out is 1, starting from 0xFFFF. The frame carries it low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(body: bytes) -> bytes:
    """``body`` followed by its CRC, low byte first."""
    return body + crc16_modbus(body).to_bytes(2, "little")


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and crc16_modbus(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def float_registers(value: float) -> tuple[int, int]:
    """The two registers of a float32 parameter, high word first (Eastron byte order ABCD)."""
    raw = struct.pack(">f", _f32(value))
    return int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big")


def _f32(value: float) -> float:
    """What a float32 register holds for ``value`` (overflow saturates to infinity, as a DSP would)."""
    try:
        return float(struct.unpack(">f", struct.pack(">f", value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


class _MonotonicClock(Protocol):
    def monotonic(self) -> float: ...


class Sdm630Sim(PtyPeer):
    """One SDM630 on the master side of a pty (``fd``); see the module docstring."""

    _thread_name = "sdm630-sim"

    def __init__(
        self,
        fd: int,
        keep_fd: int | None = None,
        *,
        clock: _MonotonicClock,
        plant: Plant | None = None,
        unit: int = 1,
        serial_number: int | None = 21_000_042,
        meter_code: int | None = SDM630_METER_CODE,
        import_wh: float = 0.0,
        export_wh: float = 0.0,
    ) -> None:
        super().__init__(fd, keep_fd)
        if not 1 <= unit <= 247:
            raise ValueError(f"unit must be 1..247 (Modbus slave address), not {unit}")
        if serial_number is not None and not 0 <= serial_number <= 0xFFFF_FFFF:
            raise ValueError("serial_number must fit 32 bits")
        if meter_code is not None and not 0 <= meter_code <= 0xFFFF:
            raise ValueError("meter_code must fit 16 bits")
        self._clock = clock
        self._plant = plant
        self.unit = unit
        self.serial_number = serial_number
        self.meter_code = meter_code
        self._lock = threading.RLock()
        # --- the meter's truth (manual values are used when there is no plant)
        self.voltage_v: list[float] = [0.0, 0.0, 0.0]
        self.current_a: list[float] = [0.0, 0.0, 0.0]
        self.power_w: list[float] = [0.0, 0.0, 0.0]
        self.frequency_hz = 0.0
        self.import_wh = float(import_wh)
        self.export_wh = float(export_wh)
        self._last_t = clock.monotonic()
        # --- fault knobs
        self.silent = False
        self.corrupt_crc = False
        self.exception_code: int | None = None
        self.short_answer = False
        self._frozen: dict[int, float] | None = None
        self._forced: dict[int, float] = {}
        # --- observations for tests
        self.requests = 0
        self.answers = 0
        self.ignored_frames = 0
        self._rx = bytearray()
        self._rx_at = 0.0

    @classmethod
    def open_pty(cls, **kwargs: Any) -> tuple[Sdm630Sim, str]:
        """A started simulator on a new pty, and the slave path for the driver to open."""
        master, slave, path = open_raw_pty()
        sim = cls(master, slave, **kwargs)  # the slave stays open so the pty stays up between driver opens
        sim.start()
        return sim, path

    # ------------------------------------------------------------------ test and scenario knobs
    @property
    def frozen(self) -> bool:
        return self._frozen is not None

    @frozen.setter
    def frozen(self, on: bool) -> None:
        """Freeze the registers at their present values (energy keeps being counted inside)."""
        with self._lock:
            self._frozen = self._image() if on else None

    def force(self, address: int, value: float | None) -> None:
        """Make the float parameter at input register ``address`` read ``value``; ``None`` undoes it."""
        if address not in INPUT_REGISTERS or address % 2:
            raise ValueError(f"0x{address:04X} is not a float parameter of the input register map")
        with self._lock:
            if value is None:
                self._forced.pop(address, None)
            else:
                self._forced[address] = value

    def jump_energy(self, wh: float) -> None:
        """The import total leaps by ``wh`` at once (a corrupted energy register)."""
        with self._lock:
            self.import_wh += wh

    def rewind_energy(self, wh: float) -> None:
        """The import total goes back by ``wh`` (a register that must never decrease)."""
        with self._lock:
            self.import_wh = max(0.0, self.import_wh - wh)

    def sync(self) -> None:
        """Count energy up to now with the power as it is, before scenario code changes the plant."""
        with self._lock:
            self._integrate()

    def input_register_floats(self) -> dict[int, float]:
        """The float parameters the meter would answer now (address -> value), without a request."""
        with self._lock:
            self._integrate()
            return self._frozen if self._frozen is not None else self._image()

    # ------------------------------------------------------------------ the meter's values
    def _truth(self) -> tuple[list[float], list[float], list[float], float]:
        plant = self._plant
        if plant is None:
            return list(self.voltage_v), list(self.current_a), list(self.power_w), self.frequency_hz
        n = plant.phases
        volts = [*plant.grid_voltage_v[:n], 0.0, 0.0, 0.0][:3]
        signed = [*plant.ev_current_a[:n], 0.0, 0.0, 0.0][:3]
        return (
            volts,
            [abs(a) for a in signed],
            [v * a for v, a in zip(volts, signed, strict=True)],
            plant.grid_frequency_hz,
        )

    def _integrate(self) -> None:
        now = self._clock.monotonic()
        dt, self._last_t = now - self._last_t, now
        if dt <= 0:
            return
        total_w = sum(self._truth()[2])
        if total_w > 0:
            self.import_wh += total_w * dt / 3600.0
        elif total_w < 0:
            self.export_wh += -total_w * dt / 3600.0

    def _image(self) -> dict[int, float]:
        volts, amps, watts, hertz = self._truth()
        image = {
            **dict(zip(VOLTAGE, volts, strict=True)),
            **dict(zip(CURRENT, amps, strict=True)),
            **dict(zip(POWER, watts, strict=True)),
            TOTAL_POWER: sum(watts),
            FREQUENCY: hertz,
            IMPORT_KWH: self.import_wh / 1000.0,
            EXPORT_KWH: self.export_wh / 1000.0,
        }
        return {address: _f32(value) for address, value in image.items()}

    def _input_registers(self, start: int, count: int) -> list[int]:
        self._integrate()
        image = dict(self._frozen) if self._frozen is not None else self._image()
        image.update(self._forced)
        words: list[int] = []
        for address in range(start - start % 2, start + count + 1, 2):
            words.extend(float_registers(image.get(address, 0.0)))
        offset = start % 2
        return words[offset : offset + count]

    def _holding_registers(self, start: int, count: int) -> list[int] | None:
        table: dict[int, int] = {}
        if self.serial_number is not None:  # None: a meter whose map has no such register
            table[SERIAL_NUMBER] = self.serial_number >> 16
            table[SERIAL_NUMBER + 1] = self.serial_number & 0xFFFF
        if self.meter_code is not None:
            table[METER_CODE] = self.meter_code
        if any(address not in table for address in range(start, start + count)):
            return None
        return [table[address] for address in range(start, start + count)]

    # ------------------------------------------------------------------ protocol
    def _answer(self, frame: bytes) -> bytes | None:
        """The reply to one complete request frame with a good CRC (None: stay quiet)."""
        unit, function = frame[0], frame[1]
        if unit != self.unit:
            return None  # another slave's request (unit 0 = broadcast: reads get no reply)
        self.requests += 1
        if self.silent:
            return None
        if self.exception_code is not None:
            return self._exception(function, self.exception_code)
        if function not in (READ_HOLDING_REGISTERS, READ_INPUT_REGISTERS) or len(frame) != 8:
            return self._exception(function, ILLEGAL_FUNCTION)
        start, count = struct.unpack(">HH", frame[2:6])
        if not 1 <= count <= MAX_READ_COUNT:
            return self._exception(function, ILLEGAL_DATA_VALUE)
        registers: list[int] | None
        if function == READ_INPUT_REGISTERS:
            inside = start in INPUT_REGISTERS and start + count - 1 in INPUT_REGISTERS
            registers = self._input_registers(start, count) if inside else None
        else:
            registers = self._holding_registers(start, count)
        if registers is None:
            return self._exception(function, ILLEGAL_DATA_ADDRESS)
        if self.short_answer:
            registers = registers[:-1]
        data = b"".join(r.to_bytes(2, "big") for r in registers)
        return bytes((unit, function, len(data))) + data

    def _exception(self, function: int, code: int) -> bytes:
        return bytes((self.unit, function | EXCEPTION_FLAG, code))

    def _reply(self, frame: bytes) -> None:
        with self._lock:
            body = self._answer(frame)
            if body is None:
                return
            reply = with_crc(body)
            if self.corrupt_crc:
                reply = reply[:-2] + bytes((reply[-2] ^ 0x5A, reply[-1]))
            self.answers += 1
        try:
            os.write(self._fd, reply)
        except OSError:
            pass  # nobody has the port open: the answer is lost, as on an RS-485 line

    def _take_frames(self, idle: bool) -> list[bytes]:
        """Cut complete request frames off the receive buffer; drop what cannot be a request."""
        frames: list[bytes] = []
        while len(self._rx) >= 2:
            length = _FIXED_REQUEST_LENGTH.get(self._rx[1])
            if length is None:
                if not idle:
                    break  # unknown length: wait for the line to go quiet
                length = len(self._rx)
            if len(self._rx) < length:
                break
            frame = bytes(self._rx[:length])
            if crc_ok(frame):
                del self._rx[:length]
                frames.append(frame)
            else:
                del self._rx[:1]  # noise or a frame cut short: hunt for the next good one
                self.ignored_frames += 1
        if idle and self._rx:
            self.ignored_frames += 1
            self._rx.clear()
        return frames

    def _run(self) -> None:
        while not self._stop.is_set():
            data = self._receive(_POLL_S)
            if data is None:
                return
            now = time.monotonic()
            if data:
                self._rx += data
                self._rx_at = now
            idle = bool(self._rx) and now - self._rx_at >= FRAME_GAP_S
            for frame in self._take_frames(idle):
                self._reply(frame)
