"""InfyPower BEG1K075G-style bidirectional DC converter module over CAN (python-can).

The protocol (standards-facts.md 6.1 and 6.2; frame-by-frame in docs/converter-infy-can.md):

* CAN 2.0B, 29-bit identifiers, 125 kbit/s, every frame 8 data bytes.
* Identifier: bits 28-26 error code, 25-22 device number (0x0A single module, 0x0B group),
  21-16 command (0x23 read, 0x24 write), 15-8 destination, 7-0 source (controller 0xF0).
* Payload: byte0/byte1 select the item, bytes 2-3 reserved (0), bytes 4-7 the value, big-endian.

Every transfer is a single 8-byte frame; nothing in this command set is segmented, so ISO-TP is not
used (see the doc for why).

The module switches its output off when it hears nothing for 10 s (standards-facts.md 6.1), so from
``start()`` until ``stop()`` a keep-alive task re-sends the commanded state every
``keepalive_period_s`` and polls voltage, current and status. If the module stays silent for
``comm_loss_s`` the driver declares it offline; when it answers again the cached mode and setpoints
are re-applied before the fault is cleared (anchors.md 1.8, EVerest power_supply_DC).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import struct
from dataclasses import dataclass

import can

from hal.clock import Clock
from hal.errors import DeviceNotFound, DeviceTimeout, HalError, ProtocolError, UnsupportedOperation
from hal.types import ConverterCapabilities, ConverterMode, ConverterStatus

_log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- identifier layout
# standards-facts.md 6.1: bits 28-26 error code, 25-22 device number, 21-16 command,
# 15-8 destination, 7-0 source.
_ERROR_SHIFT, _ERROR_MASK = 26, 0x07
_DEVICE_SHIFT, _DEVICE_MASK = 22, 0x0F
_COMMAND_SHIFT, _COMMAND_MASK = 16, 0x3F
_DEST_SHIFT, _DEST_MASK = 8, 0xFF
_SOURCE_MASK = 0xFF

# standards-facts.md 6.1: device number 0x0A = controller to a single module, 0x0B = to a group.
DEVICE_SINGLE_MODULE = 0x0A
DEVICE_GROUP = 0x0B

# standards-facts.md 6.2: command 0x23 reads an item, 0x24 writes it.
CMD_READ = 0x23
CMD_WRITE = 0x24

# standards-facts.md 6.2: modules/groups 0x00-0x3E, 0x3F broadcast, controllers 0xF0-0xF8.
MODULE_ADDRESS_MAX = 0x3E
ADDRESS_BROADCAST = 0x3F
CONTROLLER_ADDRESS_MIN = 0xF0
CONTROLLER_ADDRESS_MAX = 0xF8

# standards-facts.md 6.2: error codes carried in ID bits 28-26 of a reply.
ERROR_NORMAL = 0x00
ERROR_MEANINGS: dict[int, str] = {
    0x00: "normal",
    0x02: "command invalid",
    0x03: "data invalid",
    0x07: "in start processing",
}

# --------------------------------------------------------------------------- items (byte0, byte1)
# standards-facts.md 6.2; confirmed against EVerest InfyPower_BEG1K075G CanPackets.cpp, which writes
# the setpoints to the same items it reads the measurements from.
ITEM_DC_VOLTAGE = (0x10, 0x01)  # read: measured DC voltage; write: voltage setpoint. u32 mV
ITEM_DC_CURRENT = (0x10, 0x02)  # read: measured DC current; write: current limit. u32 mA (magnitude)
ITEM_MODULE_STATUS = (0x11, 0x10)  # read: status bits in bytes 5-7; write: on/off
ITEM_INVERTER_STATUS = (0x11, 0x11)  # read: bit0 of byte7 = running as inverter (discharging)
ITEM_WALK_IN = (0x11, 0x22)  # write: soft-start ramp
ITEM_WORKING_MODE = (0x21, 0x10)  # write: rectifier (charge) or inverter (discharge)

# Values written to the on/off, walk-in and working-mode items (standards-facts.md 6.2).
VALUE_ON = 0xA0
VALUE_OFF = 0xA1
VALUE_WALK_IN_ENABLE = 0xA1
VALUE_WALK_IN_DISABLE = 0xA0
VALUE_MODE_RECTIFIER = 0xA0
VALUE_MODE_INVERTER = 0xA1

# Module status (item 0x11 0x10): bit positions in the big-endian u32 value, so byte7 is bits 0-7,
# byte6 bits 8-15, byte5 bits 16-23 (standards-facts.md 6.1 status list; bit positions from EVerest
# InfyPower_BEG1K075G CanPackets.cpp PowerModuleStatus). The flag says whether the bit is a fault
# (reported in ConverterStatus.faults) or an operating state.
STATUS_BITS: dict[int, tuple[str, bool]] = {
    0: ("output_short_circuit", True),
    4: ("sleeping", False),
    5: ("discharge_abnormal", True),
    8: ("dc_side_off", False),
    9: ("module_fault", True),
    10: ("module_protection", True),
    11: ("fan_fault", True),
    12: ("over_temperature", True),
    13: ("output_over_voltage", True),
    14: ("walk_in_enabled", False),
    15: ("communication_interrupt", True),
    16: ("power_limited", False),
    17: ("id_repeat", True),
    18: ("load_sharing_fault", True),
    19: ("input_phase_lost", True),
    20: ("input_unbalanced", True),
    21: ("input_under_voltage", True),
    22: ("input_over_voltage", True),
    23: ("pfc_side_off", False),
}
_DC_SIDE_OFF_BIT = 8
_INVERTER_BIT = 0

FRAME_DLC = 8
_U32_MAX = 0xFFFF_FFFF
# Bounded send: a full socketcan TX queue must not stall the event loop for long.
_SEND_TIMEOUT_S = 0.05
# The Notifier's receive thread (virtual bus) wakes this often, which bounds how long stop() blocks.
_NOTIFIER_POLL_S = 0.05


@dataclass(frozen=True)
class InfyId:
    """The fields of a 29-bit identifier."""

    error_code: int
    device_number: int
    command: int
    destination: int
    source: int


def encode_id(fields: InfyId) -> int:
    """Pack the identifier fields; raises ValueError when a field does not fit its bits."""
    limits = (
        ("error_code", fields.error_code, _ERROR_MASK),
        ("device_number", fields.device_number, _DEVICE_MASK),
        ("command", fields.command, _COMMAND_MASK),
        ("destination", fields.destination, _DEST_MASK),
        ("source", fields.source, _SOURCE_MASK),
    )
    for label, value, mask in limits:
        if not 0 <= value <= mask:
            raise ValueError(f"InfyPower CAN ID field {label}={value:#x} does not fit (0..{mask:#x})")
    return (
        (fields.error_code << _ERROR_SHIFT)
        | (fields.device_number << _DEVICE_SHIFT)
        | (fields.command << _COMMAND_SHIFT)
        | (fields.destination << _DEST_SHIFT)
        | fields.source
    )


def decode_id(arbitration_id: int) -> InfyId:
    if not 0 <= arbitration_id < (1 << 29):
        raise ValueError(f"{arbitration_id:#x} is not a 29-bit CAN identifier")
    return InfyId(
        error_code=(arbitration_id >> _ERROR_SHIFT) & _ERROR_MASK,
        device_number=(arbitration_id >> _DEVICE_SHIFT) & _DEVICE_MASK,
        command=(arbitration_id >> _COMMAND_SHIFT) & _COMMAND_MASK,
        destination=(arbitration_id >> _DEST_SHIFT) & _DEST_MASK,
        source=arbitration_id & _SOURCE_MASK,
    )


def encode_payload(item: tuple[int, int], value: int) -> bytes:
    """byte0/byte1 item, two reserved zero bytes, u32 big-endian value (standards-facts.md 6.2)."""
    if not 0 <= value <= _U32_MAX:
        raise ValueError(f"value {value} does not fit the 4-byte field")
    return struct.pack(">BBHI", item[0], item[1], 0, value)


def decode_status_bits(value: int) -> tuple[frozenset[str], frozenset[str]]:
    """(every flag that is set, the subset that are faults) for a module-status value."""
    flags = {name for bit, (name, _) in STATUS_BITS.items() if value >> bit & 1}
    faults = {name for bit, (name, fault) in STATUS_BITS.items() if fault and value >> bit & 1}
    return frozenset(flags), frozenset(faults)


def _item_name(item: tuple[int, int]) -> str:
    names = {
        ITEM_DC_VOLTAGE: "DC voltage",
        ITEM_DC_CURRENT: "DC current",
        ITEM_MODULE_STATUS: "module status/on-off",
        ITEM_INVERTER_STATUS: "inverter status",
        ITEM_WALK_IN: "walk-in",
        ITEM_WORKING_MODE: "working mode",
    }
    return f"{names.get(item, 'item')} ({item[0]:#04x} {item[1]:#04x})"


@dataclass
class _Pending:
    command: int
    item: tuple[int, int]
    future: asyncio.Future[can.Message]


class InfyBidiConverter:
    """One InfyPower BEG1K075G-style module, driven as a ``hal.interfaces.PowerConverter``.

    ``bus`` is an open python-can bus (socketcan ``can0`` on a board, ``virtual`` in simulation).
    ``group=True`` addresses ``module_address`` as a dial-set group (device number 0x0B) instead of
    a single module (0x0A). ``walk_in`` enables the module's soft-start ramp.
    """

    def __init__(
        self,
        bus: can.BusABC,
        *,
        name: str,
        module_address: int,
        capabilities: ConverterCapabilities,
        clock: Clock,
        controller_address: int = 0xF0,
        reply_timeout_s: float = 0.5,
        keepalive_period_s: float = 1.0,
        comm_loss_s: float = 3.0,
        group: bool = False,
        walk_in: bool = False,
    ) -> None:
        if not 0 <= module_address <= MODULE_ADDRESS_MAX:
            raise ValueError(
                f"{name}: module address {module_address:#x} outside 0x00..{MODULE_ADDRESS_MAX:#x} "
                "(0x3F is broadcast, which cannot be used for request/reply)"
            )
        if not CONTROLLER_ADDRESS_MIN <= controller_address <= CONTROLLER_ADDRESS_MAX:
            raise ValueError(f"{name}: controller address {controller_address:#x} outside 0xF0..0xF8")
        if reply_timeout_s <= 0 or keepalive_period_s <= 0 or comm_loss_s <= 0:
            raise ValueError(f"{name}: timeouts and periods must be positive")
        # The module drops its output after 10 s of silence (standards-facts.md 6.1); a slower
        # keep-alive would let it do so during normal operation.
        if keepalive_period_s >= 10.0:
            raise ValueError(f"{name}: keepalive_period_s must be well below the module's 10 s watchdog")
        self._bus = bus
        self._name = name
        self._address = module_address
        self._controller = controller_address
        self._device_number = DEVICE_GROUP if group else DEVICE_SINGLE_MODULE
        self._caps = capabilities
        self._clock = clock
        self._reply_timeout_s = reply_timeout_s
        self._keepalive_period_s = keepalive_period_s
        self._comm_loss_s = comm_loss_s
        self._walk_in = walk_in
        # Commanded state, re-sent by the keep-alive and re-applied after a communication loss.
        self._output_on = False
        self._inverter = False
        self._setpoint: tuple[float, float] | None = None
        # Runtime state.
        self._notifier: can.Notifier | None = None
        self._notifier_loop: asyncio.AbstractEventLoop | None = None
        self._pending: _Pending | None = None
        self._bus_lock: asyncio.Lock | None = None
        self._command_lock: asyncio.Lock | None = None
        self._locks_loop: asyncio.AbstractEventLoop | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._last_answer: float = clock.monotonic()
        self._offline = False
        self._cycles = 0
        self._flags: frozenset[str] = frozenset()
        self._last_error: HalError | None = None

    # ------------------------------------------------------------------ properties (no I/O)
    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> ConverterCapabilities:
        return self._caps

    @property
    def online(self) -> bool:
        """False while the keep-alive has declared a communication loss."""
        return not self._offline

    @property
    def keepalive_cycles(self) -> int:
        """Completed keep-alive cycles (successful or not), for supervision and tests."""
        return self._cycles

    @property
    def module_flags(self) -> frozenset[str]:
        """Every status flag (faults and states) from the last status read."""
        return self._flags

    @property
    def last_error(self) -> HalError | None:
        """The last error the keep-alive met (it never raises; it logs and keeps going)."""
        return self._last_error

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._keepalive is not None and not self._keepalive.done():
            return
        self._ensure_reader()
        self._last_answer = self._clock.monotonic()
        self._offline = False
        self._keepalive = asyncio.get_running_loop().create_task(
            self._keepalive_loop(), name=f"{self._name} keep-alive"
        )

    async def stop(self) -> None:
        """End the keep-alive and detach from the bus. This does not switch the output off: call
        ``set_mode(OFF)`` first; otherwise the module's own 10 s watchdog does it."""
        task, self._keepalive = self._keepalive, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._pending is not None and not self._pending.future.done():
            self._pending.future.cancel()
        self._detach_reader()
        self._offline = False

    # ------------------------------------------------------------------ PowerConverter
    async def set_mode(self, mode: ConverterMode) -> None:
        if mode is ConverterMode.OFF:
            async with self._locks()[1]:
                self._output_on = False
                await self._write(ITEM_MODULE_STATUS, VALUE_OFF)
            return
        inverter = mode is ConverterMode.DISCHARGE
        if inverter and not self._caps.bidirectional:
            raise UnsupportedOperation(self._name, "discharge requested but this converter is charge-only")
        if self._setpoint is None:
            # Our choice (not from the protocol): never switch on with whatever setpoint the module
            # happens to hold from an earlier session.
            raise ValueError(f"{self._name}: call set_setpoint() before switching the output on")
        async with self._locks()[1]:
            if self._output_on and self._inverter != inverter:
                # Our choice: reverse the power flow only through an off state.
                self._output_on = False
                await self._write(ITEM_MODULE_STATUS, VALUE_OFF)
            self._inverter = inverter
            await self._write(ITEM_WORKING_MODE, VALUE_MODE_INVERTER if inverter else VALUE_MODE_RECTIFIER)
            self._output_on = True
            await self._write(ITEM_MODULE_STATUS, VALUE_ON)

    async def set_setpoint(self, voltage_v: float, current_a: float, power_w: float | None = None) -> None:
        if power_w is not None:
            # The module takes voltage and current only: a power limit becomes a current limit.
            if not (math.isfinite(power_w) and 0.0 <= power_w <= self._caps.max_power_w):
                raise ValueError(f"{self._name}: power {power_w} W outside 0..{self._caps.max_power_w:.0f} W")
            if voltage_v > 0:
                current_a = min(current_a, power_w / voltage_v)
        self._validate_setpoint(voltage_v, current_a)
        async with self._locks()[1]:
            previous, self._setpoint = self._setpoint, (voltage_v, current_a)
            try:
                await self._write_setpoint(voltage_v, current_a)
            except ProtocolError:
                # The module refused it: do not keep re-sending a rejected value. On a timeout the
                # new value stays commanded and is re-applied when the module answers again.
                self._setpoint = previous
                raise

    async def read_status(self) -> ConverterStatus:
        if self._offline:
            silent_for = self._clock.monotonic() - self._last_answer
            raise DeviceTimeout(
                self._name,
                f"module {self._address:#04x} has not answered for {silent_for:.1f} s "
                f"(communication lost; limit {self._comm_loss_s} s)",
            )
        return await self._poll()

    # ------------------------------------------------------------------ validation
    def _validate_setpoint(self, voltage_v: float, current_a: float) -> None:
        caps = self._caps
        if not (math.isfinite(voltage_v) and math.isfinite(current_a)):
            raise ValueError(f"{self._name}: setpoint must be finite, got {voltage_v} V / {current_a} A")
        if not caps.min_voltage_v <= voltage_v <= caps.max_voltage_v:
            raise ValueError(
                f"{self._name}: voltage {voltage_v} V outside {caps.min_voltage_v}..{caps.max_voltage_v} V"
            )
        if not 0.0 <= current_a <= caps.max_current_a:
            raise ValueError(
                f"{self._name}: current {current_a} A outside 0..{caps.max_current_a} A "
                "(a magnitude; the direction comes from the mode)"
            )
        if voltage_v * current_a > caps.max_power_w:
            raise ValueError(
                f"{self._name}: {voltage_v} V x {current_a} A = {voltage_v * current_a:.0f} W exceeds "
                f"the rated {caps.max_power_w:.0f} W"
            )

    # ------------------------------------------------------------------ keep-alive
    async def _keepalive_loop(self) -> None:
        while True:
            await self._clock.sleep(self._keepalive_period_s)
            await self._keepalive_cycle()
            self._cycles += 1

    async def _keepalive_cycle(self) -> None:
        try:
            async with self._locks()[1]:
                await self._apply_commanded()
            await self._poll()
        except DeviceTimeout as exc:
            self._last_error = exc
            silent_for = self._clock.monotonic() - self._last_answer
            if silent_for >= self._comm_loss_s and not self._offline:
                self._offline = True
                _log.error("%s: communication lost (no answer for %.1f s)", self._name, silent_for)
            return
        except HalError as exc:
            # The module answered, but refused or garbled something: it is alive, but the state is
            # not confirmed, so an offline flag stays up until a whole cycle succeeds.
            self._last_error = exc
            _log.warning("%s: keep-alive: %s", self._name, exc.message)
            return
        if self._offline:
            self._offline = False
            _log.info("%s: communication restored; mode and setpoints re-applied", self._name)

    async def _apply_commanded(self) -> None:
        """Re-send the commanded state: direction and setpoints first, on/off last, so that a module
        that rebooted or tripped its watchdog never switches on with stale values."""
        await self._write(ITEM_WORKING_MODE, VALUE_MODE_INVERTER if self._inverter else VALUE_MODE_RECTIFIER)
        if self._setpoint is not None:
            await self._write_setpoint(*self._setpoint)
        await self._write(ITEM_WALK_IN, VALUE_WALK_IN_ENABLE if self._walk_in else VALUE_WALK_IN_DISABLE)
        await self._write(ITEM_MODULE_STATUS, VALUE_ON if self._output_on else VALUE_OFF)

    async def _write_setpoint(self, voltage_v: float, current_a: float) -> None:
        await self._write(ITEM_DC_VOLTAGE, round(voltage_v * 1000))
        await self._write(ITEM_DC_CURRENT, round(current_a * 1000))

    async def _poll(self) -> ConverterStatus:
        voltage_mv = await self._read(ITEM_DC_VOLTAGE)
        current_ma = await self._read(ITEM_DC_CURRENT)
        status = await self._read(ITEM_MODULE_STATUS)
        inverter = bool(await self._read(ITEM_INVERTER_STATUS) >> _INVERTER_BIT & 1)
        flags, faults = decode_status_bits(status)
        self._flags = flags
        output_on = not status >> _DC_SIDE_OFF_BIT & 1
        if not output_on:
            mode = ConverterMode.OFF
        else:
            mode = ConverterMode.DISCHARGE if inverter else ConverterMode.CHARGE
        # The current item is a magnitude; the inverter-status bit gives the direction.
        current_a = current_ma / 1000.0
        return ConverterStatus(
            mode=mode,
            output_on=output_on,
            voltage_v=voltage_mv / 1000.0,
            current_a=-current_a if inverter else current_a,
            faults=faults,
        )

    # ------------------------------------------------------------------ request / reply
    async def _read(self, item: tuple[int, int]) -> int:
        return await self._transact(CMD_READ, item, 0)

    async def _write(self, item: tuple[int, int], value: int) -> None:
        await self._transact(CMD_WRITE, item, value)

    async def _transact(self, command: int, item: tuple[int, int], value: int) -> int:
        """Send one request and wait for its reply; returns the reply's 4-byte value."""
        what = f"{'read' if command == CMD_READ else 'write'} of {_item_name(item)}"
        bus_lock = self._locks()[0]
        async with bus_lock:
            self._ensure_reader()
            future: asyncio.Future[can.Message] = asyncio.get_running_loop().create_future()
            self._pending = _Pending(command, item, future)
            try:
                self._send(command, encode_payload(item, value), what)
                limit = self._reply_timeout_s
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                    # races with the reply, and stop() would then hang.
                    async with asyncio.timeout(limit):
                        reply = await future
                except TimeoutError:
                    raise DeviceTimeout(
                        self._name,
                        f"module {self._address:#04x} did not answer the {what} within {limit} s",
                    ) from None
            finally:
                self._pending = None
        self._last_answer = self._clock.monotonic()
        code = decode_id(reply.arbitration_id).error_code
        if code != ERROR_NORMAL:
            meaning = ERROR_MEANINGS.get(code, "undocumented error code")
            raise ProtocolError(
                self._name, f"module {self._address:#04x} rejected the {what}: error {code:#04x} ({meaning})"
            )
        return int.from_bytes(reply.data[4:8], "big")

    def _send(self, command: int, payload: bytes, what: str) -> None:
        fields = InfyId(ERROR_NORMAL, self._device_number, command, self._address, self._controller)
        arbitration_id = encode_id(fields)
        msg = can.Message(arbitration_id=arbitration_id, is_extended_id=True, data=payload)
        try:
            self._bus.send(msg, timeout=_SEND_TIMEOUT_S)
        except can.CanError as exc:
            raise self._bus_error(exc, what) from exc

    def _bus_error(self, exc: can.CanError, what: str) -> HalError:
        code = getattr(exc, "error_code", None)
        if isinstance(exc, can.CanInitializationError) or code in (errno.ENODEV, errno.ENETDOWN, errno.ENXIO):
            return DeviceNotFound(
                self._name, f"CAN interface unavailable while sending the {what}: {exc}; is the link up?"
            )
        return ProtocolError(
            self._name,
            f"CAN bus error while sending the {what}: {exc}; check wiring, termination, 125 kbit/s",
        )

    def _on_frame(self, msg: can.Message) -> None:
        """Runs in the event loop (the Notifier schedules it there). Matches replies to the one
        outstanding request; everything else on the bus is ignored."""
        pending = self._pending
        if pending is None or pending.future.done() or not msg.is_extended_id or msg.is_error_frame:
            return
        fields = decode_id(msg.arbitration_id)
        if (
            fields.source != self._address
            or fields.destination != self._controller
            or fields.command != pending.command
        ):
            return
        if msg.dlc != FRAME_DLC or len(msg.data) != FRAME_DLC:
            pending.future.set_exception(
                ProtocolError(
                    self._name,
                    f"module {self._address:#04x} answered the {_item_name(pending.item)} request with "
                    f"{len(msg.data)} data bytes, expected {FRAME_DLC}",
                )
            )
            return
        # A refusal need not echo the item (our assumption), so an error-coded reply to the pending
        # command is taken as the answer; a normal reply must name the requested item, which skips a
        # late reply to an earlier request that already timed out.
        if fields.error_code != ERROR_NORMAL or (msg.data[0], msg.data[1]) == pending.item:
            pending.future.set_result(msg)

    # ------------------------------------------------------------------ plumbing
    def _locks(self) -> tuple[asyncio.Lock, asyncio.Lock]:
        """(bus lock: one request on the wire at a time, command lock: one multi-frame state change
        at a time). Created lazily so the driver can be built outside an event loop."""
        loop = asyncio.get_running_loop()
        if self._bus_lock is None or self._command_lock is None or self._locks_loop is not loop:
            self._bus_lock = asyncio.Lock()
            self._command_lock = asyncio.Lock()
            self._locks_loop = loop
        return self._bus_lock, self._command_lock

    def _ensure_reader(self) -> None:
        loop = asyncio.get_running_loop()
        if self._notifier is not None and self._notifier_loop is loop:
            return
        self._detach_reader()
        try:
            self._notifier = can.Notifier(self._bus, [self._on_frame], timeout=_NOTIFIER_POLL_S, loop=loop)
        except ValueError as exc:  # python-can refuses a second Notifier on the same bus
            raise ProtocolError(self._name, f"cannot attach a reader to the CAN bus: {exc}") from exc
        except can.CanError as exc:
            raise self._bus_error(exc, "reader attach") from exc
        self._notifier_loop = loop

    def _detach_reader(self) -> None:
        notifier, self._notifier = self._notifier, None
        self._notifier_loop = None
        if notifier is not None:
            notifier.stop(timeout=4 * _NOTIFIER_POLL_S)

    def __repr__(self) -> str:
        return f"InfyBidiConverter({self._name!r}, address={self._address:#04x})"
