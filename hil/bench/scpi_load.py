"""A SCPI electronic load on a serial port: the bench's stand-in for the EV's onboard charger.

Commands are SCPI (IEEE 488.2 common commands plus the SCPI-1999 subsystems most loads share), one
per line, terminated by ``\\n``:

========================  =======================================================
``*CLS``                  clear the error queue (IEEE 488.2 10.3), so only our errors are reported
``*IDN?``                 identification: ``maker,model,serial,firmware`` (IEEE 488.2 10.14)
``*RST``                  reset to the power-on settings (input off)
``SYST:REM``              remote operation (front panel locked)
``CURR <A>``              constant-current setpoint in amperes
``INP ON`` / ``INP OFF``  load input on / off
``MEAS:CURR?`` etc.       measured current (A), voltage (V), power (W)
``SYST:ERR?``             next entry of the error queue: ``<code>,"<text>"``, ``0,"No error"`` when empty
========================  =======================================================

Every command, query or not, is followed by ``SYST:ERR?`` and the queue is read until it is empty,
so an instrument that refused a setting never goes unnoticed (:class:`ScpiInstrumentError`).

Bounded time: every answer must arrive within ``timeout_s`` (:class:`hal.errors.DeviceTimeout`
otherwise); an answer that is not ASCII, not the expected shape or not a plausible number raises
:class:`hal.errors.ProtocolError`. After a timeout the driver first waits for the line to be quiet
(an answer arriving late is read and dropped) before it sends anything else, so a late answer is
never taken for the answer to the next query.

Setpoints are checked against the rig file's limits (``load.max_current_a``, ``load.max_power_w`` at
``load.nominal_voltage_v``) before anything is sent (:class:`SetpointRefused`). :meth:`ScpiLoad.close`
always sends ``INP OFF``, whatever happened before.

Serial I/O is blocking; each exchange runs in a worker thread (``asyncio.to_thread``) under a lock,
so the event loop never waits on the line and two exchanges never interleave.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import serial

from hal.errors import DeviceNotFound, DeviceTimeout, ProtocolError, UnsupportedOperation
from hil.bench.rig import LoadConfig

log = logging.getLogger(__name__)

#: How long one ``port.read`` blocks at most: the granularity of the answer deadline.
READ_POLL_S = 0.01
#: Longest answer accepted; a line that runs on is garbage, not an answer.
MAX_ANSWER_BYTES = 256
#: Error-queue entries read after one command at most (SCPI-1999 queues hold at least 2; a queue that
#: never empties is a broken instrument).
MAX_ERROR_READS = 8
#: SCPI-1999 Vol. 1 7.2.1.5: 9.91E37 is "not a number" (no reading, overload).
SCPI_NAN = 9.91e37
#: A reading further than this factor beyond the rig's limit cannot come from the instrument.
PLAUSIBLE_FACTOR = 2.0

# SCPI numeric answers (IEEE 488.2 NR1/NR2/NR3), e.g. ``16``, ``-0.25``, ``1.60000E+01``. Python's
# ``float`` would also take ``nan``, ``inf`` and ``1_0``.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_ERROR_ENTRY = re.compile(r'([+-]?\d+)\s*,\s*"([^"]*)"')


class ScpiInstrumentError(ProtocolError):
    """The instrument put an entry in its error queue after a command."""

    def __init__(self, device: str, command: str, entries: list[tuple[int, str]]) -> None:
        listed = "; ".join(f'{code},"{text}"' for code, text in entries)
        super().__init__(device, f"the instrument reported an error after {command!r}: {listed}")
        self.command = command
        self.entries = entries


class SetpointRefused(UnsupportedOperation):
    """A setpoint outside the rig file's limits; nothing was sent."""


@dataclass(frozen=True)
class ScpiIdentity:
    manufacturer: str
    model: str
    serial: str
    firmware: str


class ScpiLoad:
    """The load on an already opened pyserial port (``hal.buses.open_serial``); ``config`` is the rig
    file's ``[load]`` table. The port's read timeout is lowered to :data:`READ_POLL_S`."""

    def __init__(self, port: Any, config: LoadConfig, *, name: str = "load") -> None:
        self.name = name
        self.config = config
        self._port = port
        self._timeout_s = config.timeout_s
        self._io_lock = threading.Lock()
        self._stale = False  # a query timed out: its answer may still arrive
        self._closed = False
        self.identity: ScpiIdentity | None = None
        timeout = getattr(port, "timeout", None)
        if timeout is None or timeout > READ_POLL_S:
            port.timeout = READ_POLL_S
        if getattr(port, "write_timeout", None) is None:
            port.write_timeout = config.timeout_s

    # ------------------------------------------------------------------ set-up
    async def start(self) -> ScpiIdentity:
        """Clear old errors, identify, reset, take remote control, input off."""
        await self.command("*CLS")
        identity = await self.identify()
        await self.reset()
        await self.remote()
        await self.set_input(False)
        return identity

    async def identify(self) -> ScpiIdentity:
        answer = await self.query("*IDN?")
        fields = [f.strip() for f in answer.split(",")]
        if len(fields) != 4 or not fields[0] or not fields[1]:
            raise ProtocolError(self.name, f"malformed answer to '*IDN?': {answer!r} (expected maker,model,serial,fw)")
        self.identity = ScpiIdentity(*fields)
        return self.identity

    async def reset(self) -> None:
        await self.command("*RST")

    async def remote(self) -> None:
        await self.command("SYST:REM")

    # ------------------------------------------------------------------ settings
    def check_current(self, amps: float) -> None:
        """Raise :class:`SetpointRefused` unless ``amps`` is within the rig's limits."""
        cfg = self.config
        if not math.isfinite(amps) or amps < 0:
            raise SetpointRefused(self.name, f"current setpoint must be a number >= 0 A, got {amps!r}")
        if amps > cfg.max_current_a:
            raise SetpointRefused(
                self.name, f"{amps:g} A refused: above the rig limit load.max_current_a = {cfg.max_current_a:g} A"
            )
        watts = amps * cfg.nominal_voltage_v
        if watts > cfg.max_power_w:
            raise SetpointRefused(
                self.name,
                f"{amps:g} A refused: {amps:g} A x {cfg.nominal_voltage_v:g} V = {watts:g} W is above the rig limit "
                f"load.max_power_w = {cfg.max_power_w:g} W",
            )

    async def set_current(self, amps: float) -> None:
        """Constant-current setpoint, checked against the rig limits before anything is sent."""
        self.check_current(amps)
        await self.command(f"CURR {amps:.3f}")

    async def set_input(self, on: bool) -> None:
        await self.command(f"INP {'ON' if on else 'OFF'}")

    async def input_off(self) -> None:
        await self.set_input(False)

    # ------------------------------------------------------------------ measurements
    async def measure_current(self) -> float:
        return await self._measure("MEAS:CURR?", "A", self.config.max_current_a)

    async def measure_voltage(self) -> float:
        return await self._measure("MEAS:VOLT?", "V", self.config.max_voltage_v)

    async def measure_power(self) -> float:
        return await self._measure("MEAS:POW?", "W", self.config.max_power_w)

    async def _measure(self, query: str, unit: str, limit: float) -> float:
        answer = await self.query(query)
        value = parse_number(self.name, query, answer)
        bound = limit * PLAUSIBLE_FACTOR
        if abs(value) > bound:
            raise ProtocolError(
                self.name, f"implausible answer to {query!r}: {value:g} {unit} (the rig's limit is {limit:g} {unit})"
            )
        return value

    # ------------------------------------------------------------------ closing
    async def close(self) -> None:
        """Send ``INP OFF`` (every time, whatever failed before), then refuse further use. An error of
        that last command is raised after the driver is marked closed."""
        self._closed = False  # INP OFF must go out even on a second close
        try:
            await self.set_input(False)
        finally:
            self._closed = True

    # ------------------------------------------------------------------ exchanges
    async def command(self, command: str) -> None:
        """Send a command that has no answer, then check the error queue."""
        await self._exchange(command, query=False)

    async def query(self, query: str) -> str:
        """Send a query, return its answer line (without the terminator), then check the error queue."""
        answer = await self._exchange(query, query=True)
        assert answer is not None
        return answer

    async def _exchange(self, command: str, *, query: bool) -> str | None:
        if self._closed:
            raise DeviceNotFound(self.name, "driver closed; open a new one")
        return await asyncio.to_thread(self._exchange_blocking, command, query)

    def _exchange_blocking(self, command: str, query: bool) -> str | None:
        with self._io_lock:
            if self._stale:
                self._drain()
            self._flush_input()
            self._write(command)
            answer = self._read_line(command) if query else None
            entries = self._read_errors(command)
            if entries:
                raise ScpiInstrumentError(self.name, command, entries)
            return answer

    def _read_errors(self, command: str) -> list[tuple[int, str]]:
        entries: list[tuple[int, str]] = []
        for _ in range(MAX_ERROR_READS):
            self._write("SYST:ERR?")
            answer = self._read_line("SYST:ERR?")
            match = _ERROR_ENTRY.fullmatch(answer)
            if match is None:
                raise ProtocolError(
                    self.name,
                    f"malformed answer to 'SYST:ERR?' after {command!r}: {answer!r} (expected <code>,\"text\")",
                )
            code = int(match.group(1))
            if code == 0:
                return entries
            entries.append((code, match.group(2)))
        entries.append((0, f"... the error queue did not empty after {MAX_ERROR_READS} reads"))
        return entries

    def _write(self, line: str) -> None:
        try:
            self._port.write(line.encode("ascii") + b"\n")
            self._port.flush()
        except serial.SerialTimeoutException as exc:
            raise DeviceTimeout(self.name, f"could not send {line!r} within {self._timeout_s:g} s: {exc}") from exc
        except (serial.SerialException, OSError) as exc:
            raise DeviceNotFound(self.name, f"serial port failed while sending {line!r}: {exc}") from exc

    def _read_line(self, query: str) -> str:
        deadline = time.monotonic() + self._timeout_s
        buffer = bytearray()
        while True:
            try:
                chunk = self._port.read(max(1, min(self._port.in_waiting, MAX_ANSWER_BYTES)))
            except (serial.SerialException, OSError) as exc:
                raise DeviceNotFound(self.name, f"serial port failed reading the answer to {query!r}: {exc}") from exc
            buffer += chunk
            end = buffer.find(b"\n")
            if end >= 0:
                if end + 1 < len(buffer):
                    raise ProtocolError(self.name, f"more than one line in the answer to {query!r}: {bytes(buffer)!r}")
                return self._decode(query, bytes(buffer[:end]))
            if len(buffer) > MAX_ANSWER_BYTES:
                raise ProtocolError(
                    self.name, f"answer to {query!r} longer than {MAX_ANSWER_BYTES} bytes: {bytes(buffer[:40])!r}..."
                )
            if time.monotonic() >= deadline:
                self._stale = True
                got = f"; got only {bytes(buffer)!r}" if buffer else ""
                raise DeviceTimeout(
                    self.name,
                    f"no answer to {query!r} within {self._timeout_s * 1000:.0f} ms{got}; check the cable, the baud "
                    f"rate ({self.config.baudrate}) and that the instrument is on and in SCPI mode",
                )

    def _decode(self, query: str, raw: bytes) -> str:
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError(self.name, f"answer to {query!r} is not ASCII text: {raw!r}") from None
        text = text.removesuffix("\r").strip()
        if not text.isprintable():
            raise ProtocolError(self.name, f"answer to {query!r} holds control characters: {raw!r}")
        return text

    def _flush_input(self) -> None:
        try:
            self._port.reset_input_buffer()  # unsolicited bytes are not an answer to what we send next
        except (serial.SerialException, OSError) as exc:
            raise DeviceNotFound(self.name, f"serial port failed: {exc}") from exc

    def _drain(self) -> None:
        """After a timeout: read until the line has been quiet for ``timeout_s``, so a late answer is
        dropped here. Bounded: an instrument that keeps talking for 4 x ``timeout_s`` is broken."""
        start = last_byte = time.monotonic()
        dropped = 0
        while True:
            try:
                chunk = self._port.read(max(1, min(self._port.in_waiting, MAX_ANSWER_BYTES)))
            except (serial.SerialException, OSError) as exc:
                raise DeviceNotFound(self.name, f"serial port failed: {exc}") from exc
            now = time.monotonic()
            if chunk:
                dropped += len(chunk)
                last_byte = now
            elif now - last_byte >= self._timeout_s:
                break
            if now - start >= 4 * self._timeout_s:
                raise ProtocolError(self.name, f"the instrument keeps sending ({dropped} unrequested bytes)")
        if dropped:
            log.warning("%s: dropped %d bytes of a late answer", self.name, dropped)
        self._stale = False


def parse_number(device: str, query: str, answer: str) -> float:
    """A SCPI numeric answer, or :class:`ProtocolError` (also for SCPI's not-a-number 9.91E37)."""
    if _NUMBER.fullmatch(answer) is None:
        raise ProtocolError(device, f"malformed answer to {query!r}: {answer!r} (expected a number)")
    value = float(answer)
    if value == SCPI_NAN:
        raise ProtocolError(device, f"the instrument has no reading for {query!r} (9.91E37: not a number / overload)")
    if not math.isfinite(value):
        raise ProtocolError(device, f"answer to {query!r} is out of range: {answer!r}")
    return value
