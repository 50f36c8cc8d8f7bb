"""A simulated InfyPower BEG1K075G-style bidirectional DC module on a python-can ``virtual`` bus.

It answers the frames a real module answers (standards-facts.md 6.1/6.2, docs/converter-infy-can.md),
so :class:`hal.drivers.infy_can.InfyBidiConverter` runs unchanged against it. The identifier and
status-bit layout are written out here again on purpose rather than imported from the driver, so that
a layout mistake in the driver shows up as a failing test instead of being mirrored by the simulator.

Behaviour beyond the documented frames (our modelling choices, see the doc):

* every request, read or write, gets one reply: same command and device number, source and
  destination swapped, the item bytes echoed, the error code in identifier bits 28-26;
* the output switches off when no frame addressed to the module arrived for ``watchdog_s``
  (10 s, standards-facts.md 6.1), judged on the injected clock whenever the simulator is asked or
  a frame arrives;
* electrical model: a battery (open-circuit voltage behind an internal resistance); the module
  regulates its terminal voltage to the setpoint, limited by the current setpoint and the rated
  power. Status fault bits are reported only; they do not switch the output off.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

import can

from hal.clock import Clock

# standards-facts.md 6.1: bits 28-26 error code, 25-22 device number, 21-16 command,
# 15-8 destination, 7-0 source.
_READ = 0x23  # standards-facts.md 6.2
_WRITE = 0x24
_BROADCAST = 0x3F
_NORMAL, _COMMAND_INVALID, _DATA_INVALID = 0x00, 0x02, 0x03

# Items (byte0 << 8 | byte1), standards-facts.md 6.2.
_DC_VOLTAGE = 0x1001
_DC_CURRENT = 0x1002
_MODULE_COUNT = 0x1010
_STATUS_ONOFF = 0x1110
_INVERTER_STATUS = 0x1111
_WALK_IN = 0x1122
_WORKING_MODE = 0x2110
_ON, _OFF = 0xA0, 0xA1
_RECTIFIER, _INVERTER = 0xA0, 0xA1
_WALK_IN_OFF, _WALK_IN_ON = 0xA0, 0xA1

# Status value bits (u32 big-endian: byte7 = bits 0-7, byte6 = 8-15, byte5 = 16-23).
STATUS_BIT: dict[str, int] = {
    "output_short_circuit": 0,
    "sleeping": 4,
    "discharge_abnormal": 5,
    "dc_side_off": 8,
    "module_fault": 9,
    "module_protection": 10,
    "fan_fault": 11,
    "over_temperature": 12,
    "output_over_voltage": 13,
    "walk_in_enabled": 14,
    "communication_interrupt": 15,
    "power_limited": 16,
    "id_repeat": 17,
    "load_sharing_fault": 18,
    "input_phase_lost": 19,
    "input_unbalanced": 20,
    "input_under_voltage": 21,
    "input_over_voltage": 22,
    "pfc_side_off": 23,
}
# The simulator derives these from its own state; tests inject the others.
_DERIVED = frozenset({"dc_side_off", "walk_in_enabled", "power_limited"})

# The Notifier thread wakes this often, which bounds close().
_POLL_S = 0.05


@dataclass
class SimBattery:
    """The EV battery on the module's DC terminals."""

    open_circuit_v: float = 400.0
    internal_resistance_ohm: float = 0.1


@dataclass(frozen=True)
class ReceivedFrame:
    time: float  # injected-clock time of arrival
    message: can.Message


class InfyModuleSim:
    """One module at ``address`` (0x00-0x3E) on the virtual CAN channel ``channel``.

    Defaults for the ratings are simulator values, not datasheet figures.
    """

    def __init__(
        self,
        channel: str,
        *,
        clock: Clock,
        address: int = 0x00,
        battery: SimBattery | None = None,
        min_voltage_v: float = 150.0,
        max_voltage_v: float = 1000.0,
        max_current_a: float = 100.0,
        rated_power_w: float = 30_000.0,
        watchdog_s: float = 10.0,
    ) -> None:
        if not 0 <= address <= 0x3E:
            raise ValueError(f"module address {address:#x} outside 0x00..0x3E")
        self._clock = clock
        self.address = address
        self.battery = battery or SimBattery()
        self.battery_connected = True
        self.min_voltage_v = min_voltage_v
        self.max_voltage_v = max_voltage_v
        self.max_current_a = max_current_a
        self.rated_power_w = rated_power_w
        self.watchdog_s = watchdog_s
        self._lock = threading.Lock()
        # Module state.
        self._on = False
        self._inverter = False
        self._set_voltage_mv = 0
        self._set_current_ma = 0
        self._walk_in = False
        self._last_rx = clock.monotonic()
        self._watchdog_trips = 0
        # Fault injection.
        self.silent = False  # deaf and mute, like an unplugged CAN cable
        self.garbage = False  # replies carry 3 data bytes instead of 8
        self._error_code: int | None = None
        self._error_items: frozenset[tuple[int, int]] | None = None
        self._status_faults: frozenset[str] = frozenset()
        # Logs.
        self._received: list[ReceivedFrame] = []
        self._sent: list[can.Message] = []
        self._bus = can.Bus(interface="virtual", channel=channel)
        self._notifier: can.Notifier | None = can.Notifier(self._bus, [self._on_frame], timeout=_POLL_S)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        notifier, self._notifier = self._notifier, None
        if notifier is not None:
            notifier.stop(timeout=4 * _POLL_S)
            self._bus.shutdown()

    def __enter__(self) -> InfyModuleSim:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def power_cycle(self) -> None:
        """Lose all commanded state, as after a mains interruption."""
        with self._lock:
            self._on = False
            self._inverter = False
            self._set_voltage_mv = 0
            self._set_current_ma = 0
            self._walk_in = False
            self._last_rx = self._clock.monotonic()

    # ------------------------------------------------------------------ fault injection
    def inject_error(self, code: int, items: set[tuple[int, int]] | None = None) -> None:
        """Answer every request (or only those for ``items``) with error ``code`` in ID bits 28-26
        and do not apply it."""
        if not 0 <= code <= 7:
            raise ValueError("the error code field has 3 bits")
        with self._lock:
            self._error_code = code
            self._error_items = frozenset(items) if items is not None else None

    def set_status_faults(self, names: set[str]) -> None:
        unknown = set(names) - set(STATUS_BIT)
        if unknown or set(names) & _DERIVED:
            raise ValueError(f"cannot inject {sorted(unknown | (set(names) & _DERIVED))}")
        with self._lock:
            self._status_faults = frozenset(names)

    def clear_faults(self) -> None:
        with self._lock:
            self.silent = False
            self.garbage = False
            self._error_code = None
            self._error_items = None
            self._status_faults = frozenset()

    def send_stray_frame(self, data: bytes = b"\x10\x01\xff") -> None:
        """An unsolicited frame from the module to the controller (wrong DLC by default)."""
        self._transmit(_READ, 0x0A, 0xF0, _NORMAL, data)

    # ------------------------------------------------------------------ observation
    @property
    def output_on(self) -> bool:
        with self._lock:
            self._check_watchdog()
            return self._on

    @property
    def inverter_mode(self) -> bool:
        return self._inverter

    @property
    def voltage_setpoint_v(self) -> float:
        return self._set_voltage_mv / 1000.0

    @property
    def current_limit_a(self) -> float:
        return self._set_current_ma / 1000.0

    @property
    def walk_in(self) -> bool:
        return self._walk_in

    @property
    def watchdog_trips(self) -> int:
        with self._lock:
            self._check_watchdog()
            return self._watchdog_trips

    def measurement(self) -> tuple[float, float]:
        """(terminal voltage, signed current: + into the battery, - out of it)."""
        with self._lock:
            self._check_watchdog()
            voltage, current, _ = self._electrical()
            return voltage, -current if self._inverter else current

    def received(self) -> list[ReceivedFrame]:
        with self._lock:
            return list(self._received)

    def sent(self) -> list[can.Message]:
        with self._lock:
            return list(self._sent)

    def clear_logs(self) -> None:
        with self._lock:
            self._received.clear()
            self._sent.clear()

    # ------------------------------------------------------------------ model
    def _check_watchdog(self) -> None:
        # standards-facts.md 6.1: no message for 10 s -> output off.
        if self._on and self._clock.monotonic() - self._last_rx >= self.watchdog_s:
            self._on = False
            self._watchdog_trips += 1

    def _electrical(self) -> tuple[float, float, bool]:
        """(terminal voltage, current magnitude, power-limited) for the present state."""
        bat = self.battery
        if not self.battery_connected:
            if not self._on:
                return 0.0, 0.0, False
            return self._set_voltage_mv / 1000.0, 0.0, False
        if not self._on:
            return bat.open_circuit_v, 0.0, False
        set_v = self._set_voltage_mv / 1000.0
        limit = self._set_current_ma / 1000.0
        r = bat.internal_resistance_ohm
        if self._inverter:
            wanted = (bat.open_circuit_v - set_v) / r
        else:
            wanted = (set_v - bat.open_circuit_v) / r
        current = min(max(wanted, 0.0), limit)
        power_limited = False
        if set_v > 0 and current * set_v > self.rated_power_w:
            current = self.rated_power_w / set_v
            power_limited = True
        sign = -1.0 if self._inverter else 1.0
        return bat.open_circuit_v + sign * current * r, current, power_limited

    def _status_value(self) -> int:
        _, _, power_limited = self._electrical()
        names = set(self._status_faults)
        if not self._on:
            names.add("dc_side_off")
        if self._walk_in:
            names.add("walk_in_enabled")
        if power_limited:
            names.add("power_limited")
        value = 0
        for name in names:
            value |= 1 << STATUS_BIT[name]
        return value

    # ------------------------------------------------------------------ frames
    def _on_frame(self, msg: can.Message) -> None:
        """Runs in the Notifier's thread."""
        if not msg.is_extended_id or msg.is_error_frame:
            return
        ident = msg.arbitration_id
        command = (ident >> 16) & 0x3F
        device = (ident >> 22) & 0x0F
        destination = (ident >> 8) & 0xFF
        source = ident & 0xFF
        if destination not in (self.address, _BROADCAST) or command not in (_READ, _WRITE):
            return
        with self._lock:
            if self.silent:
                return
            now = self._clock.monotonic()
            self._check_watchdog()
            self._last_rx = now
            self._received.append(ReceivedFrame(now, msg))
            error, payload = self._handle(command, bytes(msg.data))
            if self.garbage:
                payload = payload[:3]
        self._transmit(command, device, source, error, payload)

    def _handle(self, command: int, data: bytes) -> tuple[int, bytes]:
        if len(data) != 8:
            return _DATA_INVALID, data.ljust(8, b"\x00")[:8]
        item = data[0] << 8 | data[1]
        value = int.from_bytes(data[4:8], "big")
        items = self._error_items
        if self._error_code is not None and (items is None or (data[0], data[1]) in items):
            return self._error_code, data
        if command == _READ:
            return self._read(item, data)
        return self._write(item, value, data)

    def _read(self, item: int, data: bytes) -> tuple[int, bytes]:
        voltage, current, _ = self._electrical()
        values = {
            _DC_VOLTAGE: round(voltage * 1000),
            _DC_CURRENT: round(current * 1000),
            _MODULE_COUNT: 1,
            _STATUS_ONOFF: self._status_value(),
            _INVERTER_STATUS: 1 if self._inverter else 0,
        }
        if item not in values:
            return _COMMAND_INVALID, data
        return _NORMAL, struct.pack(">BBHI", item >> 8, item & 0xFF, 0, values[item])

    def _write(self, item: int, value: int, data: bytes) -> tuple[int, bytes]:
        if item == _DC_VOLTAGE:
            if not self.min_voltage_v * 1000 <= value <= self.max_voltage_v * 1000:
                return _DATA_INVALID, data
            self._set_voltage_mv = value
        elif item == _DC_CURRENT:
            if value > self.max_current_a * 1000:
                return _DATA_INVALID, data
            self._set_current_ma = value
        elif item == _STATUS_ONOFF:
            if value not in (_ON, _OFF):
                return _DATA_INVALID, data
            self._on = value == _ON
        elif item == _WORKING_MODE:
            if value not in (_RECTIFIER, _INVERTER):
                return _DATA_INVALID, data
            self._inverter = value == _INVERTER
        elif item == _WALK_IN:
            if value not in (_WALK_IN_OFF, _WALK_IN_ON):
                return _DATA_INVALID, data
            self._walk_in = value == _WALK_IN_ON
        else:
            return _COMMAND_INVALID, data
        return _NORMAL, data

    def _transmit(self, command: int, device: int, destination: int, error: int, payload: bytes) -> None:
        ident = error << 26 | device << 22 | command << 16 | destination << 8 | self.address
        msg = can.Message(arbitration_id=ident, is_extended_id=True, data=payload)
        with self._lock:
            self._sent.append(msg)
        try:
            self._bus.send(msg)
        except can.CanError:
            pass  # the bus is being closed; a real module's frame would be lost the same way
