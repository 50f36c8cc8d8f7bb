"""The site EMS / HEMS interface over Modbus TCP (pymodbus server): the same values as the MQTT interface.

Input registers (function 04) carry the snapshot (site power, limits in force and why, per-connector state,
power, energy, limit, setpoint, fallback); holding registers (functions 03, 06, 16) take the commands (site
import/export limit, demand response, the site meter reading, connector setpoints and user preferences, a
watchdog register). The
register map is :data:`INPUT_MAP` / :data:`HOLDING_GROUPS` below and is documented in docs/ems.md: 32-bit
values are two registers, high word first (big-endian word and byte order); "not set" is 0x80000000 in an
int32 (the SunSpec convention), 0 in a validity or a departure time, 0xFFFF in the SoC floor.

Modbus has no authentication, so this server does what it can, default deny:

* it binds to one address (default 127.0.0.1: nothing off the board reaches it until configured);
* a connection from an address outside ``allowed_clients`` is closed at once, before any request;
* writes are refused (exception 01, the server is "in the wrong state") until the client has written the
  configured 32-bit unlock key to holding registers 1000-1001 on the same TCP connection; a wrong key is
  refused (exception 03), logged, and locks the connection again;
* every write must cover exactly one command group (exception 02 otherwise), so no command is ever applied
  half-written, and is range-checked (exception 03 when a value is out of range).

A write that is accepted counts as an EMS heartbeat; the EMS keeps the link alive by writing the watchdog
register (1002) when it has nothing else to say.
"""

from __future__ import annotations

import contextvars
import hmac
import ipaddress
import logging
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from firmware.energy.ems_port import (
    MAX_CONNECTORS,
    MAX_ENERGY_WH,
    MAX_EPOCH_S,
    MAX_POWER_W,
    MAX_PRICE_PER_KWH,
    ConnectorSnapshot,
    EmsPort,
    EmsSnapshot,
    UserPreferences,
)
from hal.clock import Clock

log = logging.getLogger(__name__)

SOURCE = "ems:modbus"
MAP_VERSION = 1

INT32_NONE = -0x80000000  # "not set" / "no limit" in an int32 register pair (SunSpec's int32 not-implemented)
INT32_MAX = 0x7FFFFFFF
UINT16_NONE = 0xFFFF
PRICE_SCALE = 10_000  # max price per kWh in 1/10000 of the tariff currency
SOURCE_CHARS = 16  # limit sources as ASCII, 2 characters per register, first in the high byte, NUL padded

# Input registers (function 04).
SITE_INPUT_BASE = 0
SITE_INPUT_SIZE = 20
CONNECTOR_INPUT_BASE = 100
CONNECTOR_INPUT_STRIDE = 24
# Holding registers (functions 03, 06, 16).
UNLOCK_KEY = 1000  # uint32, write-only (reads 0)
HEARTBEAT = 1002  # uint16, any value; reads back the last one written
SITE_LIMIT = 1004  # import int32, export int32, valid_s uint16
DEMAND_RESPONSE = 1010  # reduce_by int32, valid_s uint16
SITE_MEASUREMENT = 1014  # site power at the connection point int32, + import, - export (seed R60/R64)
SITE_HOLDING_SIZE = 16  # 1000 .. 1015
CONNECTOR_HOLDING_BASE = 1100
CONNECTOR_HOLDING_STRIDE = 20
SETPOINT = 0  # offsets in a connector's holding block: power int32, valid_s uint16
PREFERENCES = 4  # departure uint32, min Wh int32, max Wh int32, price int32 (x10^4), SoC floor uint16

_END = CONNECTOR_HOLDING_BASE + MAX_CONNECTORS * CONNECTOR_HOLDING_STRIDE  # one block holds every address

# Modbus function codes (Modbus Application Protocol V1.1b3, section 6).
_READ_HOLDING, _READ_INPUT, _WRITE_SINGLE, _WRITE_MULTIPLE = 3, 4, 6, 16


class _Refused(Exception):
    """A request answered with a Modbus exception."""

    def __init__(self, code: ExcCodes, why: str) -> None:
        super().__init__(why)
        self.code = code


@dataclass
class _Session:
    """One TCP connection: where it comes from and whether it has unlocked writes."""

    peer: str
    allowed: bool
    unlocked: bool = False


_SESSION: contextvars.ContextVar[_Session | None] = contextvars.ContextVar("ems_modbus_session", default=None)


@dataclass(frozen=True)
class _Group:
    """A command: registers that are written together, in one request, and applied at once."""

    name: str
    address: int
    size: int
    connector: int | None = None


def _site_groups() -> list[_Group]:
    return [
        _Group("unlock", UNLOCK_KEY, 2),
        _Group("heartbeat", HEARTBEAT, 1),
        _Group("site_limit", SITE_LIMIT, 5),
        _Group("demand_response", DEMAND_RESPONSE, 3),
        _Group("site_measurement", SITE_MEASUREMENT, 2),
    ]


def _connector_groups(n: int) -> list[_Group]:
    base = CONNECTOR_HOLDING_BASE + (n - 1) * CONNECTOR_HOLDING_STRIDE
    return [_Group("setpoint", base + SETPOINT, 3, n), _Group("preferences", base + PREFERENCES, 9, n)]


#: The int32 fields of each group that read "not set" before the EMS writes them (offsets in the group).
_UNSET_INT32 = {"site_limit": (0, 2), "site_measurement": (0,), "setpoint": (0,), "preferences": (2, 4, 6)}

#: Every command group, by start address.
HOLDING_GROUPS: dict[int, _Group] = {
    g.address: g for g in _site_groups() + [g for n in range(1, MAX_CONNECTORS + 1) for g in _connector_groups(n)]
}


def _int32(value: float | None) -> list[int]:
    """A value as an int32 register pair, high word first; None as :data:`INT32_NONE`; saturated otherwise."""
    number = INT32_NONE if value is None else max(INT32_NONE + 1, min(INT32_MAX, round(value)))
    hi, lo = struct.unpack(">HH", struct.pack(">i", number))
    return [hi, lo]


def _uint32(value: int) -> list[int]:
    return [(value >> 16) & 0xFFFF, value & 0xFFFF]


def _text(value: str) -> list[int]:
    raw = value.encode("ascii", "replace")[:SOURCE_CHARS].ljust(SOURCE_CHARS, b"\0")
    return list(struct.unpack(f">{SOURCE_CHARS // 2}H", raw))


def _as_int32(regs: Sequence[int]) -> int:
    return int(struct.unpack(">i", struct.pack(">HH", regs[0], regs[1]))[0])


def _as_uint32(regs: Sequence[int]) -> int:
    return (regs[0] << 16) | regs[1]


def site_input_registers(snap: EmsSnapshot, *, unlocked: bool, heartbeat: int) -> list[int]:
    regs = [MAP_VERSION, len(snap.connectors)]
    regs += _int32(snap.site_power_w) + _int32(snap.import_limit_w) + _int32(snap.export_limit_w)
    regs += [int(snap.fallback), int(unlocked), heartbeat, 0]
    regs += _text(snap.limit_source)
    assert len(regs) == SITE_INPUT_SIZE
    return regs


def connector_input_registers(c: ConnectorSnapshot) -> list[int]:
    regs = [c.connector, int(c.state)]
    regs += _int32(c.power_w) + _int32(c.energy_wh) + _int32(c.limit_max_w) + _int32(c.limit_min_w)
    regs += _int32(c.setpoint_w)
    regs += [int(c.fallback), min(len(c.faults), 0xFFFF)]
    regs += [*_text(c.limit_source), 0, 0]
    assert len(regs) == CONNECTOR_INPUT_STRIDE
    return regs


def _check(name: str, value: float, lo: float, hi: float) -> float:
    if not lo <= value <= hi:
        raise _Refused(ExcCodes.ILLEGAL_VALUE, f"{name} {value:g} is outside {lo:g} .. {hi:g}")
    return value


def _opt_int32(name: str, regs: Sequence[int], lo: float, hi: float, scale: float = 1.0) -> float | None:
    raw = _as_int32(regs)
    return None if raw == INT32_NONE else _check(name, raw / scale, lo, hi)


def _valid_s(regs: Sequence[int]) -> float | None:
    return None if regs[0] == 0 else float(regs[0])


def _allow_list(entries: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ValueError(f"allowed_clients: {entry!r} is not an IP address or network ({exc})") from None
    return networks


class EmsModbusServer:
    """Serves the energy manager (an :class:`EmsPort`) to a site EMS over Modbus TCP.

    ``await start()`` binds and serves in the background; ``await stop()`` closes it. ``port=0`` picks a free
    port (see :attr:`bound_port`). Any unit id is answered (use 1).
    """

    def __init__(
        self,
        ems: EmsPort,
        *,
        unlock_key: int,
        clock: Clock,
        host: str = "127.0.0.1",
        port: int = 502,
        allowed_clients: Iterable[str] = ("127.0.0.1",),
    ) -> None:
        if isinstance(unlock_key, bool) or not isinstance(unlock_key, int) or not 1 <= unlock_key <= 0xFFFFFFFF:
            raise ValueError("unlock_key: must be an integer 1 .. 4294967295 (0 is what an unset register reads)")
        if not 0 <= port < 65536:
            raise ValueError(f"port {port}: must be 0 .. 65535")
        self._ems = ems
        self._key = struct.pack(">I", unlock_key)
        self._clock = clock
        self._host = host
        self._port = port
        self._allowed = _allow_list(allowed_clients)
        self._server: _GuardedServer | None = None
        self._refused_peers: set[str] = set()
        # What the holding registers read back: the last accepted value of each (the unlock key reads 0).
        # Reserved registers inside a block read 0; writing them is refused (no group starts there).
        self._holding: dict[int, int] = dict.fromkeys(range(UNLOCK_KEY, UNLOCK_KEY + SITE_HOLDING_SIZE), 0)
        self._holding.update(dict.fromkeys(range(CONNECTOR_HOLDING_BASE, _END), 0))
        for group in HOLDING_GROUPS.values():
            for offset in _UNSET_INT32.get(group.name, ()):
                self._holding.update(enumerate(_int32(None), group.address + offset))
            if group.name == "preferences":
                self._holding[group.address + 8] = UINT16_NONE

    @property
    def bound_port(self) -> int:
        if self._server is None or self._server.transport is None:
            raise RuntimeError("the Modbus server is not running")
        sockets = getattr(self._server.transport, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    def allows(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._allowed)

    def _on_connect(self, peer: str) -> _Session:
        session = _Session(peer, self.allows(peer))
        if not session.allowed and peer not in self._refused_peers:
            self._refused_peers.add(peer)  # once per address: a scanner must not flood the log
            log.warning("EMS Modbus: connection from %s refused (not in allowed_clients)", peer)
        return session

    async def start(self) -> None:
        if self._server is not None:
            return
        device = SimDevice(
            id=0,  # answers every unit id
            simdata=[SimData(address=0, count=_END, values=0, datatype=DataType.REGISTERS)],
            action=self._action,
        )
        server = _GuardedServer(device, address=(self._host, self._port), on_connect=self._on_connect)
        await server.serve_forever(background=True)
        self._server = server
        log.info("EMS Modbus: serving on %s:%d", self._host, self.bound_port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this for every access; it answers reads from the snapshot and applies writes."""
        session = _SESSION.get()
        try:
            if session is None or not session.allowed:
                raise _Refused(ExcCodes.DEVICE_FAILURE, "no session for this request")  # default deny
            if set_values is None:
                if function_code in (_WRITE_SINGLE, _WRITE_MULTIPLE):
                    return None  # pymodbus reading back what it just wrote, to echo it
                values = self._read(function_code, address, count, session)
                start = address - start_address
                registers[start : start + count] = values
                return None
            if function_code not in (_WRITE_SINGLE, _WRITE_MULTIPLE):
                raise _Refused(ExcCodes.ILLEGAL_FUNCTION, f"function {function_code} is not supported")
            self._write(address, [int(v) for v in set_values], session)
            return None
        except _Refused as refused:
            log.info("EMS Modbus: %s refused (function %d at %d): %s", session, function_code, address, refused)
            return refused.code
        except ValueError as exc:  # the energy manager (or UserPreferences) refused the values
            log.info("EMS Modbus: write at %d refused: %s", address, exc)
            return ExcCodes.ILLEGAL_VALUE
        except Exception:
            log.exception("EMS Modbus: failed on function %d at %d", function_code, address)
            return ExcCodes.DEVICE_FAILURE

    def _read(self, function_code: int, address: int, count: int, session: _Session) -> list[int]:
        snap = self._ems.snapshot()
        if function_code == _READ_INPUT:
            lookup = self._input_image(snap, session)
        elif function_code == _READ_HOLDING:
            lookup = self._holding_image(snap)
        else:
            raise _Refused(ExcCodes.ILLEGAL_FUNCTION, f"function {function_code} is not supported")
        values = [lookup(a) for a in range(address, address + count)]
        if any(v is None for v in values):
            raise _Refused(ExcCodes.ILLEGAL_ADDRESS, f"{address} .. {address + count - 1} is not all mapped")
        return [v for v in values if v is not None]

    def _input_image(self, snap: EmsSnapshot, session: _Session) -> Callable[[int], int | None]:
        image = dict(
            enumerate(
                site_input_registers(snap, unlocked=session.unlocked, heartbeat=self._holding[HEARTBEAT]),
                SITE_INPUT_BASE,
            )
        )
        for c in snap.connectors:
            base = CONNECTOR_INPUT_BASE + (c.connector - 1) * CONNECTOR_INPUT_STRIDE
            image.update(enumerate(connector_input_registers(c), base))
        return image.get

    def _holding_image(self, snap: EmsSnapshot) -> Callable[[int], int | None]:
        present = {c.connector for c in snap.connectors}

        def lookup(address: int) -> int | None:
            if address >= CONNECTOR_HOLDING_BASE:
                n = (address - CONNECTOR_HOLDING_BASE) // CONNECTOR_HOLDING_STRIDE + 1
                if n not in present:
                    return None
            return self._holding.get(address)

        return lookup

    def _write(self, address: int, values: list[int], session: _Session) -> None:
        group = HOLDING_GROUPS.get(address)
        if group is None or len(values) != group.size:
            raise _Refused(
                ExcCodes.ILLEGAL_ADDRESS,
                f"a write must cover exactly one command group; {len(values)} registers at {address} do not",
            )
        if group.name == "unlock":
            if not hmac.compare_digest(struct.pack(">HH", *values), self._key):
                session.unlocked = False
                log.warning("EMS Modbus: wrong unlock key from %s", session.peer)
                raise _Refused(ExcCodes.ILLEGAL_VALUE, "wrong unlock key")
            session.unlocked = True
            self._ems.heartbeat(SOURCE, self._clock.monotonic())
            return
        if not session.unlocked:
            raise _Refused(ExcCodes.ILLEGAL_FUNCTION, "writes are locked: write the unlock key to 1000-1001 first")
        if group.connector is not None and self._ems.snapshot().connector(group.connector) is None:
            raise _Refused(ExcCodes.ILLEGAL_ADDRESS, f"this charger has no connector {group.connector}")
        apply = self._decode(group, values)  # validates everything before anything is applied
        now = self._clock.monotonic()
        self._ems.heartbeat(SOURCE, now)
        apply(now)
        self._holding.update(enumerate(values, group.address))

    def _decode(self, group: _Group, v: list[int]) -> Callable[[float], None]:
        """Check a group's values and return what applies them at a given time."""
        ems = self._ems

        def expiry(valid_s: float | None, now: float) -> float | None:
            return None if valid_s is None else now + valid_s

        if group.name == "heartbeat":
            return lambda now: None
        if group.name == "site_limit":
            import_w = _opt_int32("import_max_w", v[0:2], 0.0, MAX_POWER_W)
            export_w = _opt_int32("export_max_w", v[2:4], 0.0, MAX_POWER_W)
            valid_s = _valid_s(v[4:5])
            return lambda now: ems.set_site_limit(
                import_max_w=import_w, export_max_w=export_w, expires_at=expiry(valid_s, now), source=SOURCE
            )
        if group.name == "demand_response":
            reduce_w = _check("reduce_by_w", _as_int32(v[0:2]), 0.0, MAX_POWER_W)
            if v[2] == 0:
                raise _Refused(ExcCodes.ILLEGAL_VALUE, "a demand response needs a validity of 1 .. 65535 s")
            duration = float(v[2])
            return lambda now: ems.demand_response(reduce_by_w=reduce_w, until=now + duration, source=SOURCE)
        if group.name == "site_measurement":
            # A reading is a number: "not set" is refused rather than passed on, since a meter without a reading
            # is said by not writing, and the manager falls back after its meter timeout (seed R142).
            site_w = _opt_int32("power_w", v[0:2], -MAX_POWER_W, MAX_POWER_W)
            if site_w is None:
                raise _Refused(ExcCodes.ILLEGAL_VALUE, "a site measurement needs a power, not 'not set'")
            return lambda now: ems.site_measurement(power_w=site_w, source=SOURCE, now=now)
        connector = group.connector
        assert connector is not None
        if group.name == "setpoint":
            power = _opt_int32("power_w", v[0:2], -MAX_POWER_W, MAX_POWER_W)
            valid_s = _valid_s(v[2:3])
            return lambda now: ems.set_connector_setpoint(
                connector, power_w=power, expires_at=expiry(valid_s, now), source=SOURCE
            )
        departure = _as_uint32(v[0:2])
        floor = v[8]
        prefs = UserPreferences(
            departure_at=None if departure == 0 else _check("departure_at", departure, 0.0, MAX_EPOCH_S),
            min_energy_wh=_opt_int32("min_energy_wh", v[2:4], 0.0, MAX_ENERGY_WH),
            max_energy_wh=_opt_int32("max_energy_wh", v[4:6], 0.0, MAX_ENERGY_WH),
            max_price_per_kwh=_opt_int32("max_price", v[6:8], -MAX_PRICE_PER_KWH, MAX_PRICE_PER_KWH, PRICE_SCALE),
            discharge_floor_soc_pct=None if floor == UINT16_NONE else _check("discharge_floor", floor, 0.0, 100.0),
        )
        return lambda now: ems.set_preferences(connector, prefs)


class _GuardedHandler(ServerRequestHandler):
    """pymodbus's per-connection handler, with the allow-list check and the session made visible to the
    datastore action (through a context variable set around each request)."""

    def __init__(self, owner: _GuardedServer, on_connect: Callable[[str], _Session]) -> None:
        super().__init__(owner, owner.trace_packet, owner.trace_pdu, owner.trace_connect)
        self._on_connect = on_connect
        self._session: _Session | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._session = self._on_connect(str(peer[0]) if peer else "")
        if not self._session.allowed:
            self.close()

    async def handle_request(self) -> None:
        token = _SESSION.set(self._session)
        try:
            await super().handle_request()
        finally:
            _SESSION.reset(token)


class _GuardedServer(ModbusTcpServer):
    def __init__(self, device: SimDevice, *, address: tuple[str, int], on_connect: Callable[[str], _Session]):
        self._on_connect = on_connect
        super().__init__(device, address=address)

    def callback_new_connection(self) -> _GuardedHandler:
        return _GuardedHandler(self, self._on_connect)
