"""Frames and message payloads of the Pi <-> safety co-processor serial link (docs/mcu-protocol.md).

Pure functions and data only, no I/O: the driver (:mod:`hal.drivers.mcu_link`), the simulator
(:mod:`hal.sim.coprocessor`) and the MicroPython firmware (same design, board/mcu/) all build on it.

Frame, every multi-byte field little-endian::

    0xA5 | LEN | LEN ^ 0xFF | SEQ | TYPE | PAYLOAD (LEN bytes, LEN <= 64) | CRC16 (2 bytes)

CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, no final XOR) over LEN .. PAYLOAD.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass

# ---------------------------------------------------------------------------------- frame layer

#: Start-of-frame marker (mcu-protocol.md "Framing"): 0b10100101, a pattern idle lines and runs of
#: 0x00/0xFF never produce.
SOF = 0xA5
#: Largest payload in bytes; bounds the receive buffer on the RP2040 and makes a corrupted LEN
#: byte detectable (mcu-protocol.md "Framing").
MAX_PAYLOAD = 64
HEADER_LEN = 5  # SOF, LEN, ~LEN, SEQ, TYPE
CRC_LEN = 2
MAX_FRAME_LEN = HEADER_LEN + MAX_PAYLOAD + CRC_LEN

# CRC-16/CCITT-FALSE (also catalogued as CRC-16/IBM-3740): check value over b"123456789" is 0x29B1.
CRC16_POLY = 0x1021
CRC16_INIT = 0xFFFF


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC16_POLY) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_ccitt_false(data: bytes, crc: int = CRC16_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data``; pass the previous result as ``crc`` to continue a running CRC."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


class FrameError(ValueError):
    """A byte string that is not exactly one valid frame."""


@dataclass(frozen=True)
class Frame:
    seq: int
    msg_type: int
    payload: bytes = b""

    def encode(self) -> bytes:
        return encode_frame(self.seq, self.msg_type, self.payload)


def encode_frame(seq: int, msg_type: int, payload: bytes = b"") -> bytes:
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"sequence number {seq} outside 0..255")
    if not 0 <= msg_type <= 0xFF:
        raise ValueError(f"message type {msg_type} outside 0..255")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte maximum")
    body = bytes((len(payload), len(payload) ^ 0xFF, seq, msg_type)) + bytes(payload)
    return bytes((SOF,)) + body + struct.pack("<H", crc16_ccitt_false(body))


def decode_frame(data: bytes) -> Frame:
    """Decode exactly one complete frame; raise :class:`FrameError` on anything else."""
    if len(data) < HEADER_LEN + CRC_LEN:
        raise FrameError(f"{len(data)} bytes is shorter than the smallest frame")
    if data[0] != SOF:
        raise FrameError(f"starts with 0x{data[0]:02X}, not the start marker 0x{SOF:02X}")
    length = data[1]
    if data[2] != length ^ 0xFF or length > MAX_PAYLOAD:
        raise FrameError(f"bad length byte pair 0x{data[1]:02X} 0x{data[2]:02X}")
    if len(data) != HEADER_LEN + length + CRC_LEN:
        raise FrameError(f"{len(data)} bytes but the header announces {HEADER_LEN + length + CRC_LEN}")
    body = data[1 : HEADER_LEN + length]
    (received,) = struct.unpack_from("<H", data, HEADER_LEN + length)
    computed = crc16_ccitt_false(body)
    if received != computed:
        raise FrameError(f"CRC 0x{received:04X} does not match the computed 0x{computed:04X}")
    return Frame(seq=data[3], msg_type=data[4], payload=bytes(data[HEADER_LEN : HEADER_LEN + length]))


@dataclass
class DecoderStats:
    frames: int = 0
    bad_crc: int = 0
    bad_length: int = 0
    #: Every byte thrown away: noise before a start marker, false start markers, broken frames.
    garbage_bytes: int = 0
    #: Partial frames abandoned because the line went idle in the middle of them.
    truncated: int = 0


class FrameDecoder:
    """Incremental decoder: feed it byte chunks of any size, get back the complete valid frames.

    Resynchronisation (mcu-protocol.md "Resynchronisation"): bytes before a start marker are
    skipped; after a bad length pair or a bad CRC only the start marker is dropped and the search
    resumes at the next byte, so a real frame hidden behind a false start marker is still found.
    :meth:`flush` tells the decoder the line went idle: a partial frame is abandoned the same way.
    """

    def __init__(self, on_error: Callable[[str, str], None] | None = None) -> None:
        self._buf = bytearray()
        self._on_error = on_error
        self.stats = DecoderStats()

    @property
    def pending(self) -> int:
        """Bytes buffered while waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        return self._drain(idle=False)

    def flush(self) -> list[Frame]:
        """The line has been idle: frames inside an abandoned partial frame are still recovered."""
        return self._drain(idle=True)

    def _error(self, kind: str, detail: str) -> None:
        if self._on_error is not None:
            self._on_error(kind, detail)

    def _drop(self, count: int) -> None:
        del self._buf[:count]
        self.stats.garbage_bytes += count

    def _drain(self, *, idle: bool) -> list[Frame]:
        frames: list[Frame] = []
        buf = self._buf
        while buf:
            start = buf.find(SOF)
            if start < 0:
                self._drop(len(buf))
                break
            if start:
                self._drop(start)
            if len(buf) < 3:
                if idle:
                    self._abandon_partial()
                    continue
                break
            length = buf[1]
            if buf[2] != length ^ 0xFF or length > MAX_PAYLOAD:
                self.stats.bad_length += 1
                self._error("bad_length", f"length bytes 0x{buf[1]:02X} 0x{buf[2]:02X}")
                self._drop(1)
                continue
            total = HEADER_LEN + length + CRC_LEN
            if len(buf) < total:
                if idle:
                    self._abandon_partial()
                    continue
                break
            body = bytes(buf[1 : HEADER_LEN + length])
            (received,) = struct.unpack_from("<H", buf, HEADER_LEN + length)
            computed = crc16_ccitt_false(body)
            if received != computed:
                self.stats.bad_crc += 1
                self._error(
                    "bad_crc",
                    f"seq {buf[3]} type 0x{buf[4]:02X}: CRC 0x{received:04X}, computed 0x{computed:04X}",
                )
                self._drop(1)
                continue
            frames.append(Frame(seq=buf[3], msg_type=buf[4], payload=bytes(buf[HEADER_LEN : total - 2])))
            del buf[:total]
            self.stats.frames += 1
        return frames

    def _abandon_partial(self) -> None:
        self.stats.truncated += 1
        self._error("truncated", f"line idle with {len(self._buf)} bytes of an unfinished frame")
        self._drop(1)


# ---------------------------------------------------------------------------------- messages

#: Bumped on any incompatible change of framing or payload layout; HELLO checks it.
PROTOCOL_VERSION = 1

#: A reply to request type T has type T | REPLY_BIT. Requests use 0x01..0x3F so that replies
#: (0x81..0xBF) never collide with events (0xC0..0xFE) or NACK (0xFF).
REPLY_BIT = 0x80


class MsgType(enum.IntEnum):
    # Pi -> co-processor requests
    HELLO = 0x01
    HEARTBEAT = 0x02
    READ_STATUS = 0x03
    SET_PILOT = 0x10
    SET_CONTACTOR = 0x11
    SET_LOCK = 0x12
    RCD_SELFTEST = 0x13
    CLEAR_ERRORS = 0x14
    # co-processor -> Pi
    EVENT_STATUS = 0xC0
    EVENT_BOOT = 0xC1
    NACK = 0xFF


REQUEST_TYPES = frozenset(t for t in MsgType if 0x01 <= t <= 0x3F)
EVENT_TYPES = frozenset((MsgType.EVENT_STATUS, MsgType.EVENT_BOOT))


def reply_type(request: int) -> int:
    return request | REPLY_BIT


def is_reply_type(msg_type: int) -> bool:
    return 0x81 <= msg_type <= 0xBF


class NackCode(enum.IntEnum):
    UNKNOWN_TYPE = 1
    BAD_LENGTH = 2
    BAD_VALUE = 3
    NO_SESSION = 4  # no HELLO with a matching version since the co-processor booted
    INTERLOCK = 5  # refused for safety: a latched fault or the pilot forbids it
    UNSUPPORTED = 6  # the board lacks the function (state E, connector lock)
    BUSY = 7  # an RCD self-test is running


class PilotCode(enum.IntEnum):
    """Pilot generator mode on the wire (SET_PILOT and STATUS). Member names match
    :class:`hal.types.PilotMode`, so ``PilotMode[code.name]`` converts between the two."""

    X1 = 0
    PWM = 1
    F = 2
    E = 3


class CpState(enum.IntEnum):
    """The co-processor's reading of the pilot (IEC 61851-1 states; standards-facts.md 1.2)."""

    UNKNOWN = 0  # high level outside every window: cp_signal_fault
    A = 1
    B = 2
    C = 3
    D = 4
    E = 5
    F = 6  # the generator itself drives F: the EV's state cannot be read


class ErrorFlag(enum.IntFlag):
    """STATUS error flags, the set of EVerest phyVERSO ``ErrorFlags`` (anchors.md 1.3)."""

    DIODE_FAULT = 1 << 0
    RCD_SELFTEST_FAILED = 1 << 1
    RCD_TRIGGERED = 1 << 2
    VENTILATION_NOT_AVAILABLE = 1 << 3
    CONNECTOR_LOCK_FAILED = 1 << 4
    CP_SIGNAL_FAULT = 1 << 5
    HEARTBEAT_TIMEOUT = 1 << 6
    COIL_FEEDBACK_DIVERGES = 1 << 7
    PP_SIGNAL_FAULT = 1 << 8


#: Flags that stay set until CLEAR_ERRORS finds their cause gone; the others follow the live
#: measurement. Any latched flag (and a live diode fault) refuses SET_CONTACTOR allow.
LATCHED_FLAGS = (
    ErrorFlag.RCD_SELFTEST_FAILED
    | ErrorFlag.RCD_TRIGGERED
    | ErrorFlag.CONNECTOR_LOCK_FAILED
    | ErrorFlag.HEARTBEAT_TIMEOUT
    | ErrorFlag.COIL_FEEDBACK_DIVERGES
)
INTERLOCK_FLAGS = LATCHED_FLAGS | ErrorFlag.DIODE_FAULT


class Output(enum.IntFlag):
    """STATUS ``outputs`` bits."""

    CONTACTOR_ALLOWED = 1 << 0  # what the Pi last commanded
    CONTACTOR_COIL = 1 << 1  # what the co-processor drives (allowed and pilot in C/D and no interlock)
    CONTACTOR_MIRROR = 1 << 2  # the auxiliary (mirror) contact reads closed
    LOCK_COMMANDED = 1 << 3
    LOCK_FEEDBACK = 1 << 4  # the lock's feedback switch reads locked
    CP_LOW_VALID = 1 << 5  # cp_low_mv holds a measured negative plateau
    SESSION_OPEN = 1 << 6


class SelftestState(enum.IntEnum):
    IDLE = 0
    RUNNING = 1
    PASSED = 2
    FAILED = 3


class Capability(enum.IntFlag):
    STATE_E = 1 << 0
    CONTACTOR_MIRROR = 1 << 1
    LOCK = 1 << 2
    LOCK_FEEDBACK = 1 << 3
    RCD = 1 << 4


class ResetReason(enum.IntEnum):
    POWER_ON = 0
    WATCHDOG = 1
    SOFT = 2


class PayloadError(ValueError):
    """A payload whose length or field values do not fit its message type."""


_STATUS = struct.Struct("<IBHhhHBBHB")
_HELLO_REQ = struct.Struct("<B")
_HELLO_REPLY = struct.Struct("<BBBBBBHH")
_SET_PILOT = struct.Struct("<BH")
_NACK = struct.Struct("<BB")
_FLAGS = struct.Struct("<H")


def _unpack(st: struct.Struct, payload: bytes, what: str) -> tuple[int, ...]:
    if len(payload) != st.size:
        raise PayloadError(f"{what} payload is {len(payload)} bytes, expected {st.size}")
    return st.unpack(payload)


@dataclass(frozen=True)
class McuStatus:
    """The co-processor's state: every reply except HELLO's, and every EVENT_STATUS."""

    uptime_ms: int
    pilot_mode: PilotCode
    duty_permille: int
    cp_high_mv: int
    cp_low_mv: int
    cp_periods: int
    cp_state: CpState
    outputs: Output
    flags: ErrorFlag
    selftest: SelftestState

    SIZE = _STATUS.size

    def encode(self) -> bytes:
        return _STATUS.pack(
            self.uptime_ms & 0xFFFFFFFF,
            self.pilot_mode,
            self.duty_permille,
            self.cp_high_mv,
            self.cp_low_mv,
            self.cp_periods,
            self.cp_state,
            self.outputs,
            self.flags,
            self.selftest,
        )

    @classmethod
    def decode(cls, payload: bytes) -> McuStatus:
        up, mode, duty, high, low, periods, cp, outputs, flags, selftest = _unpack(_STATUS, payload, "STATUS")
        try:
            return cls(
                uptime_ms=up,
                pilot_mode=PilotCode(mode),
                duty_permille=duty,
                cp_high_mv=high,
                cp_low_mv=low,
                cp_periods=periods,
                cp_state=CpState(cp),
                outputs=Output(outputs),
                flags=ErrorFlag(flags),
                selftest=SelftestState(selftest),
            )
        except ValueError as exc:
            raise PayloadError(f"STATUS field out of range: {exc}") from exc

    @property
    def contactor_mirror_closed(self) -> bool:
        return bool(self.outputs & Output.CONTACTOR_MIRROR)

    @property
    def cp_low_valid(self) -> bool:
        return bool(self.outputs & Output.CP_LOW_VALID)


@dataclass(frozen=True)
class HelloInfo:
    """HELLO reply and EVENT_BOOT payload."""

    protocol_version: int
    firmware: tuple[int, int, int]
    capabilities: Capability
    reset_reason: ResetReason
    heartbeat_timeout_ms: int
    status_period_ms: int

    SIZE = _HELLO_REPLY.size

    def encode(self) -> bytes:
        major, minor, patch = self.firmware
        return _HELLO_REPLY.pack(
            self.protocol_version,
            major,
            minor,
            patch,
            self.capabilities,
            self.reset_reason,
            self.heartbeat_timeout_ms,
            self.status_period_ms,
        )

    @classmethod
    def decode(cls, payload: bytes) -> HelloInfo:
        version, major, minor, patch, caps, reason, hb_ms, period_ms = _unpack(_HELLO_REPLY, payload, "HELLO reply")
        try:
            reset = ResetReason(reason)
        except ValueError as exc:
            raise PayloadError(f"unknown reset reason {reason}") from exc
        return cls(version, (major, minor, patch), Capability(caps), reset, hb_ms, period_ms)


def encode_hello_request(version: int = PROTOCOL_VERSION) -> bytes:
    return _HELLO_REQ.pack(version)


def decode_hello_request(payload: bytes) -> int:
    return _unpack(_HELLO_REQ, payload, "HELLO")[0]


def encode_set_pilot(mode: PilotCode, duty_permille: int = 0) -> bytes:
    return _SET_PILOT.pack(mode, duty_permille)


def decode_set_pilot(payload: bytes) -> tuple[int, int]:
    mode, duty = _unpack(_SET_PILOT, payload, "SET_PILOT")
    return mode, duty


def encode_bool(value: bool) -> bytes:
    return bytes((1 if value else 0,))


def decode_bool(payload: bytes, what: str) -> bool:
    if len(payload) != 1 or payload[0] > 1:
        raise PayloadError(f"{what} payload must be one byte 0 or 1, got {payload.hex() or 'nothing'}")
    return payload[0] == 1


def encode_flags(flags: int) -> bytes:
    return _FLAGS.pack(flags & 0xFFFF)


def decode_flags(payload: bytes) -> int:
    return _unpack(_FLAGS, payload, "CLEAR_ERRORS")[0]


@dataclass(frozen=True)
class Nack:
    rejected_type: int
    code: int

    def encode(self) -> bytes:
        return _NACK.pack(self.rejected_type, self.code)

    @classmethod
    def decode(cls, payload: bytes) -> Nack:
        rejected, code = _unpack(_NACK, payload, "NACK")
        return cls(rejected, code)

    def describe(self) -> str:
        try:
            code = NackCode(self.code).name
        except ValueError:
            code = f"code {self.code}"
        try:
            rejected = MsgType(self.rejected_type).name
        except ValueError:
            rejected = f"type 0x{self.rejected_type:02X}"
        return f"{rejected} refused: {code}"


def flag_names(flags: int) -> list[str]:
    """EVerest-style lower-case names of the set flags, e.g. ``['rcd_triggered']``."""
    return [f.name.lower() for f in ErrorFlag if f.name and flags & f]
