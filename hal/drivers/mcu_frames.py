"""Frames and message payloads of the Pi <-> safety co-processor serial link (docs/mcu-protocol.md).

Pure functions and data only, no I/O: the driver (:mod:`hal.drivers.mcu_link`) and the simulator
(:mod:`hal.sim.coprocessor`) build on it. Every number (framing, message types, codes, flags, payload
layouts) comes from ``board/mcu/protocol.py``, the module the MicroPython firmware itself imports, so
the two sides cannot drift; the enums here give those numbers names and types for the Pi side.

Frame, every multi-byte field little-endian::

    0xA5 | LEN | LEN ^ 0xFF | SEQ | TYPE | PAYLOAD (LEN bytes, LEN <= 64) | CRC16 (2 bytes)

CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, no final XOR) over LEN .. PAYLOAD.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass

from board.mcu import protocol as P

# ---------------------------------------------------------------------------------- frame layer
SOF = P.SOF
MAX_PAYLOAD = P.MAX_PAYLOAD
HEADER_LEN = P.HEADER_LEN
CRC_LEN = P.CRC_LEN
MAX_FRAME_LEN = P.MAX_FRAME_LEN
CRC16_POLY = P.CRC16_POLY
CRC16_INIT = P.CRC16_INIT


def crc16_ccitt_false(data: bytes, crc: int = CRC16_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data``; pass the previous result as ``crc`` to continue a running CRC."""
    return int(P.crc16(data, 0, len(data), crc))


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
    return bytes(P.encode_frame(seq, msg_type, bytes(payload)))


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
PROTOCOL_VERSION = P.PROTOCOL_VERSION

#: A reply to request type T has type T | REPLY_BIT. Requests use 0x01..0x3F so that replies
#: (0x81..0xBF) never collide with events (0xC0..0xFE) or NACK (0xFF).
REPLY_BIT = P.REPLY_BIT


class MsgType(enum.IntEnum):
    # Pi -> co-processor requests
    HELLO = P.MSG_HELLO
    HEARTBEAT = P.MSG_HEARTBEAT
    READ_STATUS = P.MSG_READ_STATUS
    SET_PILOT = P.MSG_SET_PILOT
    SET_CONTACTOR = P.MSG_SET_CONTACTOR
    SET_LOCK = P.MSG_SET_LOCK
    RCD_SELFTEST = P.MSG_RCD_SELFTEST
    CLEAR_ERRORS = P.MSG_CLEAR_ERRORS
    READ_PP = P.MSG_READ_PP
    # co-processor -> Pi
    EVENT_STATUS = P.MSG_EVENT_STATUS
    EVENT_BOOT = P.MSG_EVENT_BOOT
    NACK = P.MSG_NACK


REQUEST_TYPES = frozenset(t for t in MsgType if 0x01 <= t <= 0x3F)
EVENT_TYPES = frozenset((MsgType.EVENT_STATUS, MsgType.EVENT_BOOT))


def reply_type(request: int) -> int:
    return request | REPLY_BIT


def is_reply_type(msg_type: int) -> bool:
    return 0x81 <= msg_type <= 0xBF


class NackCode(enum.IntEnum):
    UNKNOWN_TYPE = P.NACK_UNKNOWN_TYPE
    BAD_LENGTH = P.NACK_BAD_LENGTH
    BAD_VALUE = P.NACK_BAD_VALUE
    NO_SESSION = P.NACK_NO_SESSION  # no HELLO with a matching version since the co-processor booted
    INTERLOCK = P.NACK_INTERLOCK  # refused for safety: a latched fault or the pilot forbids it
    UNSUPPORTED = P.NACK_UNSUPPORTED  # the board lacks the function (state E, connector lock)
    BUSY = P.NACK_BUSY  # an RCD self-test is running


class PilotCode(enum.IntEnum):
    """Pilot generator mode on the wire (SET_PILOT and STATUS). Member names match
    :class:`hal.types.PilotMode`, so ``PilotMode[code.name]`` converts between the two."""

    X1 = P.PILOT_X1
    PWM = P.PILOT_PWM
    F = P.PILOT_F
    E = P.PILOT_E


class CpState(enum.IntEnum):
    """The co-processor's reading of the pilot (IEC 61851-1 states; standards-facts.md 1.2)."""

    UNKNOWN = P.CP_UNKNOWN  # high level outside every window: cp_signal_fault
    A = P.CP_A
    B = P.CP_B
    C = P.CP_C
    D = P.CP_D
    E = P.CP_E
    F = P.CP_F  # the generator itself drives F: the EV's state cannot be read


class ErrorFlag(enum.IntFlag):
    """STATUS error flags, the set of EVerest phyVERSO ``ErrorFlags`` (anchors.md 1.3)."""

    DIODE_FAULT = P.FLAG_DIODE_FAULT
    RCD_SELFTEST_FAILED = P.FLAG_RCD_SELFTEST_FAILED
    RCD_TRIGGERED = P.FLAG_RCD_TRIGGERED
    VENTILATION_NOT_AVAILABLE = P.FLAG_VENTILATION_NOT_AVAILABLE
    CONNECTOR_LOCK_FAILED = P.FLAG_CONNECTOR_LOCK_FAILED
    CP_SIGNAL_FAULT = P.FLAG_CP_SIGNAL_FAULT
    HEARTBEAT_TIMEOUT = P.FLAG_HEARTBEAT_TIMEOUT
    COIL_FEEDBACK_DIVERGES = P.FLAG_COIL_FEEDBACK_DIVERGES
    PP_SIGNAL_FAULT = P.FLAG_PP_SIGNAL_FAULT


#: Flags that stay set until CLEAR_ERRORS finds their cause gone; the others follow the live
#: measurement. Any latched flag (and a live diode fault) refuses SET_CONTACTOR allow.
LATCHED_FLAGS = ErrorFlag(P.LATCHED_FLAGS)
INTERLOCK_FLAGS = ErrorFlag(P.INTERLOCK_FLAGS)


class Output(enum.IntFlag):
    """STATUS ``outputs`` bits."""

    CONTACTOR_ALLOWED = P.OUT_CONTACTOR_ALLOWED  # what the Pi last commanded
    CONTACTOR_COIL = P.OUT_CONTACTOR_COIL  # what the co-processor drives (allowed, pilot C/D, no interlock)
    CONTACTOR_MIRROR = P.OUT_CONTACTOR_MIRROR  # the auxiliary (mirror) contact reads closed
    LOCK_COMMANDED = P.OUT_LOCK_COMMANDED
    LOCK_FEEDBACK = P.OUT_LOCK_FEEDBACK  # the lock's feedback switch reads locked
    CP_LOW_VALID = P.OUT_CP_LOW_VALID  # cp_low_mv holds a measured negative plateau
    SESSION_OPEN = P.OUT_SESSION_OPEN


class SelftestState(enum.IntEnum):
    IDLE = P.SELFTEST_IDLE
    RUNNING = P.SELFTEST_RUNNING
    PASSED = P.SELFTEST_PASSED
    FAILED = P.SELFTEST_FAILED


class Capability(enum.IntFlag):
    STATE_E = P.CAP_STATE_E
    CONTACTOR_MIRROR = P.CAP_CONTACTOR_MIRROR
    LOCK = P.CAP_LOCK
    LOCK_FEEDBACK = P.CAP_LOCK_FEEDBACK
    RCD = P.CAP_RCD
    PP = P.CAP_PP


class ResetReason(enum.IntEnum):
    POWER_ON = P.RESET_POWER_ON
    WATCHDOG = P.RESET_WATCHDOG
    SOFT = P.RESET_SOFT


class PayloadError(ValueError):
    """A payload whose length or field values do not fit its message type."""


_STATUS = struct.Struct(P.STATUS_FORMAT)
_HELLO_REQ = struct.Struct(P.HELLO_REQUEST_FORMAT)
_HELLO_REPLY = struct.Struct(P.HELLO_INFO_FORMAT)
_SET_PILOT = struct.Struct(P.SET_PILOT_FORMAT)
_NACK = struct.Struct(P.NACK_PAYLOAD_FORMAT)
_FLAGS = struct.Struct(P.FLAGS_FORMAT)


_PP = struct.Struct(P.PP_FORMAT)


def decode_pp(payload: bytes) -> int | None:
    """READ_PP ACK: the PP-PE resistance in ohms, None when open (no cable)."""
    (ohm,) = _unpack(_PP, payload, "READ_PP")
    return None if ohm == P.PP_OPEN else int(ohm)


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
