# The Pi <-> safety co-processor serial protocol (docs/mcu-protocol.md): the ONE definition of its
# numbers, shared by both sides so they cannot drift. The co-processor firmware (this directory, on
# MicroPython) imports it as ``protocol``; the Pi's driver (hal/drivers/mcu_frames.py, CPython) builds
# its enums and struct layouts from it, and a test checks that every name here has its enum member.
#
# It must run on MicroPython as well as CPython: no typing, dataclasses, enum or f-strings with format
# specs; integers only (mV, permille, ms, bit fields); ``struct`` formats as the docs give them.

try:
    from micropython import const  # type: ignore[import-not-found]
except ImportError:  # CPython

    def const(value: int) -> int:  # type: ignore[no-redef]
        return value


# ---------------------------------------------------------------------------------- framing (section 2)
#: Bumped on any incompatible change of framing or payload layout; HELLO checks it.
PROTOCOL_VERSION = const(1)
#: Start-of-frame marker 0b10100101: idle lines, breaks and runs of 0x00/0xFF never produce it.
SOF = const(0xA5)
#: Largest payload; bounds the receive buffer and makes a corrupted LEN byte detectable.
MAX_PAYLOAD = const(64)
HEADER_LEN = const(5)  # SOF, LEN, ~LEN, SEQ, TYPE
CRC_LEN = const(2)
MAX_FRAME_LEN = const(71)  # HEADER_LEN + MAX_PAYLOAD + CRC_LEN
#: CRC-16/CCITT-FALSE (CRC-16/IBM-3740): poly 0x1021, init 0xFFFF, not reflected, no final XOR;
#: check value over b"123456789" is 0x29B1.
CRC16_POLY = const(0x1021)
CRC16_INIT = const(0xFFFF)
#: Section 3 idle rule: a partial frame buffered while the line is silent this long is abandoned.
IDLE_ABANDON_MS = const(50)

# ---------------------------------------------------------------------------------- timing (sections 4, 6, 7)
REPLY_WITHIN_MS = const(20)  # the co-processor answers a request within 20 ms of its last byte
HEARTBEAT_PERIOD_MS = const(250)  # the Pi's heartbeat period
HEARTBEAT_TIMEOUT_MS = const(1000)  # no HEARTBEAT/HELLO this long: fail-safe
F_HOLD_MS = const(300)  # fail-safe: F this long, then X1 (IEC 61851-1:2017 Table A.5; EVerest 300 ms)
STATUS_PERIOD_MS = const(50)  # EVENT_STATUS at least this often
FEEDBACK_SETTLE_MS = const(200)  # mirror / lock feedback must agree this long after a change
RCD_SELFTEST_RESULT_MS = const(500)  # RCD_SELFTEST result in a STATUS within 500 ms
REPLY_MEMORY = const(4)  # the last requests remembered for at-most-once replies

# ---------------------------------------------------------------------------------- message types (section 5)
#: A reply to request type T has type T | REPLY_BIT; requests are 0x01..0x3F, replies 0x81..0xBF,
#: events 0xC0..0xFE, NACK 0xFF, so none collide.
REPLY_BIT = const(0x80)
MSG_HELLO = const(0x01)
MSG_HEARTBEAT = const(0x02)
MSG_READ_STATUS = const(0x03)
MSG_SET_PILOT = const(0x10)
MSG_SET_CONTACTOR = const(0x11)
MSG_SET_LOCK = const(0x12)
MSG_RCD_SELFTEST = const(0x13)
MSG_CLEAR_ERRORS = const(0x14)
MSG_READ_PP = const(0x15)  # the proximity pilot's resistance (boards with CAP_PP)
MSG_EVENT_STATUS = const(0xC0)
MSG_EVENT_BOOT = const(0xC1)
MSG_NACK = const(0xFF)

# NACK codes (5.4)
NACK_UNKNOWN_TYPE = const(1)
NACK_BAD_LENGTH = const(2)
NACK_BAD_VALUE = const(3)
NACK_NO_SESSION = const(4)
NACK_INTERLOCK = const(5)
NACK_UNSUPPORTED = const(6)
NACK_BUSY = const(7)

# Pilot generator modes (SET_PILOT, STATUS)
PILOT_X1 = const(0)
PILOT_PWM = const(1)
PILOT_F = const(2)
PILOT_E = const(3)
DUTY_MIN_PERMILLE = const(1)
DUTY_MAX_PERMILLE = const(999)

# The co-processor's reading of the pilot (IEC 61851-1 states)
CP_UNKNOWN = const(0)
CP_A = const(1)
CP_B = const(2)
CP_C = const(3)
CP_D = const(4)
CP_E = const(5)
CP_F = const(6)

# Error flags (5.3), the set of EVerest phyVERSO ErrorFlags
FLAG_DIODE_FAULT = const(1 << 0)
FLAG_RCD_SELFTEST_FAILED = const(1 << 1)
FLAG_RCD_TRIGGERED = const(1 << 2)
FLAG_VENTILATION_NOT_AVAILABLE = const(1 << 3)
FLAG_CONNECTOR_LOCK_FAILED = const(1 << 4)
FLAG_CP_SIGNAL_FAULT = const(1 << 5)
FLAG_HEARTBEAT_TIMEOUT = const(1 << 6)
FLAG_COIL_FEEDBACK_DIVERGES = const(1 << 7)
FLAG_PP_SIGNAL_FAULT = const(1 << 8)
#: Flags that stay until CLEAR_ERRORS finds their cause gone; any of them (and a live diode fault)
#: refuses SET_CONTACTOR allow.
LATCHED_FLAGS = const(0x00D6)  # RCD_SELFTEST_FAILED | RCD_TRIGGERED | CONNECTOR_LOCK_FAILED | HEARTBEAT | COIL
INTERLOCK_FLAGS = const(0x00D7)  # LATCHED_FLAGS | DIODE_FAULT

# STATUS outputs bits
OUT_CONTACTOR_ALLOWED = const(1 << 0)
OUT_CONTACTOR_COIL = const(1 << 1)
OUT_CONTACTOR_MIRROR = const(1 << 2)
OUT_LOCK_COMMANDED = const(1 << 3)
OUT_LOCK_FEEDBACK = const(1 << 4)
OUT_CP_LOW_VALID = const(1 << 5)
OUT_SESSION_OPEN = const(1 << 6)

# RCD self-test states
SELFTEST_IDLE = const(0)
SELFTEST_RUNNING = const(1)
SELFTEST_PASSED = const(2)
SELFTEST_FAILED = const(3)

# HELLO capabilities
CAP_STATE_E = const(1 << 0)
CAP_CONTACTOR_MIRROR = const(1 << 1)
CAP_LOCK = const(1 << 2)
CAP_LOCK_FEEDBACK = const(1 << 3)
CAP_RCD = const(1 << 4)
CAP_PP = const(1 << 5)  # the co-processor reads the proximity pilot (READ_PP)

# Reset reasons
RESET_POWER_ON = const(0)
RESET_WATCHDOG = const(1)
RESET_SOFT = const(2)

# ---------------------------------------------------------------------------------- payload layouts (section 8)
STATUS_FORMAT = "<IBHhhHBBHB"  # uptime, mode, duty, cp_high, cp_low, periods, cp_state, outputs, flags, selftest
STATUS_SIZE = const(18)
HELLO_REQUEST_FORMAT = "<B"  # protocol_version
HELLO_INFO_FORMAT = "<BBBBBBHH"  # version, fw major/minor/patch, capabilities, reset reason, hb timeout, period
HELLO_INFO_SIZE = const(10)
SET_PILOT_FORMAT = "<BH"  # mode, duty_permille
NACK_PAYLOAD_FORMAT = "<BB"  # rejected type, code
FLAGS_FORMAT = "<H"  # CLEAR_ERRORS mask
BOOL_FORMAT = "<B"  # SET_CONTACTOR allow, SET_LOCK locked
PP_FORMAT = "<H"  # READ_PP ACK: the PP-PE resistance in ohms, PP_OPEN when open (no cable) or above it
PP_OPEN = const(0xFFFF)

#: Every request type with its payload length (a wrong length is NACK BAD_LENGTH).
REQUEST_LENGTHS = {
    MSG_HELLO: 1,
    MSG_HEARTBEAT: 0,
    MSG_READ_STATUS: 0,
    MSG_SET_PILOT: 3,
    MSG_SET_CONTACTOR: 1,
    MSG_SET_LOCK: 1,
    MSG_RCD_SELFTEST: 0,
    MSG_CLEAR_ERRORS: 2,
    MSG_READ_PP: 0,
}


# ---------------------------------------------------------------------------------- CRC and frames
def _crc_table() -> list:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC16_POLY) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data, start: int = 0, end: int = -1, crc: int = CRC16_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data[start:end]`` (``end`` -1: to the end) without copying it."""
    if end < 0:
        end = len(data)
    table = _CRC_TABLE
    for i in range(start, end):
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ data[i]) & 0xFF]
    return crc


def encode_frame(seq: int, msg_type: int, payload: bytes = b"") -> bytes:
    """One frame on the wire: SOF | LEN | ~LEN | SEQ | TYPE | PAYLOAD | CRC16 (little-endian)."""
    length = len(payload)
    if length > MAX_PAYLOAD or not 0 <= seq <= 0xFF or not 0 <= msg_type <= 0xFF:
        raise ValueError("frame field out of range")
    out = bytearray(HEADER_LEN + length + CRC_LEN)
    out[0] = SOF
    out[1] = length
    out[2] = length ^ 0xFF
    out[3] = seq
    out[4] = msg_type
    out[HEADER_LEN : HEADER_LEN + length] = payload
    crc = crc16(out, 1, HEADER_LEN + length)
    out[HEADER_LEN + length] = crc & 0xFF
    out[HEADER_LEN + length + 1] = crc >> 8
    return bytes(out)


class Decoder:
    """The receive path of section 3, with a fixed-size buffer (no growth on a small MCU).

    ``feed(data)`` appends bytes and returns the complete valid frames as ``(seq, type, payload)``
    tuples. Bytes before a start marker are dropped; after a bad length pair or a bad CRC only the
    start marker is dropped, so a real frame behind a false one is still found; ``idle()`` (the line
    silent for IDLE_ABANDON_MS) abandons a partial frame the same way. Counters for diagnostics.
    """

    SIZE = 2 * MAX_FRAME_LEN

    def __init__(self) -> None:
        self.buf = bytearray(self.SIZE)
        self.n = 0  # bytes buffered
        self.frames = 0
        self.bad_crc = 0
        self.bad_length = 0
        self.garbage = 0
        self.truncated = 0

    def feed(self, data) -> list:
        out: list = []
        for byte in data:
            if self.n == self.SIZE:  # cannot happen with whole frames; drop the oldest byte if it does
                self._drop(1)
            self.buf[self.n] = byte
            self.n += 1
            self._scan(out, False)
        return out

    def idle(self) -> list:
        out: list = []
        self._scan(out, True)
        return out

    def _drop(self, count: int) -> None:
        buf = self.buf
        n = self.n
        for i in range(count, n):
            buf[i - count] = buf[i]
        self.n = n - count

    def _scan(self, out: list, idle: bool) -> None:
        buf = self.buf
        while self.n:
            start = 0
            while start < self.n and buf[start] != SOF:
                start += 1
            if start:
                self.garbage += start
                self._drop(start)
                continue
            if self.n < 3:
                if idle:
                    self.truncated += 1
                    self.garbage += 1
                    self._drop(1)
                    continue
                return
            length = buf[1]
            if buf[2] != length ^ 0xFF or length > MAX_PAYLOAD:
                self.bad_length += 1
                self.garbage += 1
                self._drop(1)
                continue
            total = HEADER_LEN + length + CRC_LEN
            if self.n < total:
                if idle:
                    self.truncated += 1
                    self.garbage += 1
                    self._drop(1)
                    continue
                return
            received = buf[HEADER_LEN + length] | (buf[HEADER_LEN + length + 1] << 8)
            if crc16(buf, 1, HEADER_LEN + length) != received:
                self.bad_crc += 1
                self.garbage += 1
                self._drop(1)
                continue
            out.append((buf[3], buf[4], bytes(buf[HEADER_LEN : HEADER_LEN + length])))
            self.frames += 1
            self._drop(total)
