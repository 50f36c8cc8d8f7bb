"""V2G Transfer Protocol (V2GTP) framing: the 8-byte header in front of every V2G message.

Layout (ISO 15118-2 7.8.3, ISO 15118-20 Table 12 [V2G20-082..085]; standards-facts.md 2.1):

    byte 0     protocol version          0x01
    byte 1     inverse protocol version  0xFE
    bytes 2-3  payload type              u16 big endian
    bytes 4-7  payload length            u32 big endian (the header itself not counted)

Header processing follows ISO 15118-20 7.8.3.2 (the -2 header handler has the same shape): the
version and inverse version are checked first [V2G20-090], then the payload type [V2G20-092], then
the payload length [V2G20-094], and only then the payload is read [V2G20-096]. A header with wrong
data "shall be ignored"; on a TCP stream the bytes after a bad header cannot be trusted to start the
next message (the length field is what delimits messages), so the receiver raises a
:class:`V2gtpError` and the transport closes the connection. On UDP (SDP) the datagram is dropped.

Every EXI message travels in its own V2GTP message, never split or batched [V2G20-1229], so one
``read_message`` returns exactly one V2G message.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Collection
from dataclasses import dataclass
from enum import IntEnum

from hal.clock import Clock, RealClock

PROTOCOL_VERSION = 0x01  # ISO 15118-2 7.8.3 / ISO 15118-20 Table 13
INVERSE_PROTOCOL_VERSION = 0xFE  # bitwise inverse of the version, same tables
HEADER_LEN = 8  # ISO 15118-20 Table 12
MAX_PAYLOAD_LENGTH = 0xFFFF_FFFF  # the length field is a u32 (ISO 15118-20 Table 13)

_HEADER = struct.Struct(">BBHI")


class DinPayloadType(IntEnum):
    """DIN SPEC 70121 Table 16."""

    EXI = 0x8001
    SDP_REQUEST = 0x9000
    SDP_RESPONSE = 0x9001


class Iso2PayloadType(IntEnum):
    """ISO 15118-2 Table 10 (SupportedAppProtocol and the -2 messages share 0x8001)."""

    EXI = 0x8001
    SDP_REQUEST = 0x9000
    SDP_RESPONSE = 0x9001


class Iso20PayloadType(IntEnum):
    """ISO 15118-20 Table 14 (standards-facts.md 2.1 calls it Table 12, the header table)."""

    SAP = 0x8001  # SupportedAppProtocol, same value as the -2 / DIN EXI payload
    MAINSTREAM = 0x8002  # CommonMessages schema
    AC_MAINSTREAM = 0x8003
    DC_MAINSTREAM = 0x8004
    ACDP_MAINSTREAM = 0x8005
    WPT_MAINSTREAM = 0x8006
    SCHEDULE_RENEGOTIATION = 0x8101  # side streams
    METERING_CONFIRMATION = 0x8102
    ACDP_SYSTEM_STATUS = 0x8103
    PARKING_STATUS = 0x8104
    SDP_REQUEST = 0x9000
    SDP_RESPONSE = 0x9001
    SDP_REQUEST_WIRELESS = 0x9002
    SDP_RESPONSE_WIRELESS = 0x9003


# 0xA000-0xFFFF: manufacturer specific, uniqueness not guaranteed (ISO 15118-2 Table 10, -20 Table 14).
MANUFACTURER_FIRST = 0xA000
MANUFACTURER_LAST = 0xFFFF

# What a SECC accepts on its TCP/TLS connection: the EXI payloads of every protocol family. SDP
# payloads belong on UDP and manufacturer payloads mean nothing to us, so both are refused there.
EXI_PAYLOAD_TYPES: frozenset[int] = frozenset(
    {int(DinPayloadType.EXI), int(Iso2PayloadType.EXI)}
    | {int(t) for t in Iso20PayloadType if t < Iso20PayloadType.SDP_REQUEST}
)


class V2gtpError(Exception):
    """A V2GTP message that cannot be accepted; the message says what is wrong with it."""


class V2gtpVersionError(V2gtpError):
    """Protocol version / inverse version is not 0x01 / 0xFE (checked first, [V2G20-090])."""


class V2gtpPayloadTypeError(V2gtpError):
    """The payload type is not one the receiver accepts ([V2G20-092])."""

    def __init__(self, message: str, payload_type: int) -> None:
        super().__init__(message)
        self.payload_type = payload_type


class V2gtpOversizeError(V2gtpError):
    """The payload length is above what the receiver accepts ([V2G20-094])."""

    def __init__(self, message: str, payload_length: int) -> None:
        super().__init__(message)
        self.payload_length = payload_length


class V2gtpTruncatedError(V2gtpError):
    """The input ended inside a header or a payload."""


class V2gtpEofError(V2gtpTruncatedError):
    """The stream ended cleanly between two messages: the peer closed the connection."""


class V2gtpTrailingDataError(V2gtpError):
    """A datagram carries more bytes than its header announces."""


class V2gtpTimeoutError(V2gtpError):
    """No complete message within the timeout.

    ``mid_message`` tells whether part of a message had already been consumed: then the stream is
    out of step and must be closed; otherwise nothing was lost and the caller may read again.
    """

    def __init__(self, message: str, *, mid_message: bool) -> None:
        super().__init__(message)
        self.mid_message = mid_message


@dataclass(frozen=True)
class Header:
    payload_type: int
    payload_length: int


@dataclass(frozen=True)
class Message:
    payload_type: int
    payload: bytes


def encode(payload_type: int, payload: bytes) -> bytes:
    """One V2GTP message: header followed by ``payload``."""
    if not 0 <= payload_type <= 0xFFFF:
        raise ValueError(f"V2GTP payload type {payload_type!r} does not fit in 16 bits")
    if len(payload) > MAX_PAYLOAD_LENGTH:
        raise ValueError(f"V2GTP payload of {len(payload)} bytes does not fit the 32-bit length field")
    return _HEADER.pack(PROTOCOL_VERSION, INVERSE_PROTOCOL_VERSION, payload_type, len(payload)) + bytes(payload)


def decode_header(
    b: bytes | bytearray | memoryview, *, accept: Collection[int] | None = None, max_payload: int | None = None
) -> Header:
    """Decode and check the first 8 bytes of ``b`` in the order ISO 15118-20 7.8.3.2 prescribes.

    ``accept`` (payload types the caller takes; None = any) and ``max_payload`` (largest payload
    the caller takes; None = any) add the payload type and length checks.
    """
    if len(b) < HEADER_LEN:
        raise V2gtpTruncatedError(f"V2GTP header needs {HEADER_LEN} bytes, got {len(b)}")
    version, inverse, payload_type, length = _HEADER.unpack_from(b, 0)
    if version != PROTOCOL_VERSION or inverse != INVERSE_PROTOCOL_VERSION:
        raise V2gtpVersionError(
            f"V2GTP version/inverse 0x{version:02X}/0x{inverse:02X}, "
            f"expected 0x{PROTOCOL_VERSION:02X}/0x{INVERSE_PROTOCOL_VERSION:02X}"
        )
    if accept is not None and payload_type not in accept:
        raise V2gtpPayloadTypeError(f"V2GTP payload type 0x{payload_type:04X} not accepted here", payload_type)
    if max_payload is not None and length > max_payload:
        raise V2gtpOversizeError(f"V2GTP payload length {length} above the accepted {max_payload} bytes", length)
    return Header(payload_type, length)


def decode(data: bytes | bytearray | memoryview, *, max_payload: int, accept: Collection[int] | None = None) -> Message:
    """Decode one whole V2GTP message, e.g. a UDP datagram: header, payload, nothing after it."""
    header = decode_header(data, accept=accept, max_payload=max_payload)
    end = HEADER_LEN + header.payload_length
    if len(data) < end:
        raise V2gtpTruncatedError(
            f"V2GTP payload announced {header.payload_length} bytes, got {len(data) - HEADER_LEN}"
        )
    if len(data) > end:
        raise V2gtpTrailingDataError(f"{len(data) - end} bytes after the V2GTP payload of {header.payload_length}")
    return Message(header.payload_type, bytes(data[HEADER_LEN:end]))


async def read_message(
    reader: asyncio.StreamReader,
    *,
    max_payload: int,
    timeout_s: float,
    accept: Collection[int] | None = None,
    clock: Clock | None = None,
) -> Message:
    """Read exactly one V2GTP message from ``reader``, never more than ``max_payload`` payload bytes.

    Raises a :class:`V2gtpError` subclass: :class:`V2gtpEofError` when the peer closed between
    messages, :class:`V2gtpTruncatedError` when it closed inside one, :class:`V2gtpVersionError`,
    :class:`V2gtpPayloadTypeError` (only with ``accept``), :class:`V2gtpOversizeError`, and
    :class:`V2gtpTimeoutError` after ``timeout_s`` of ``clock`` (real time by default).
    """
    if max_payload < 0:
        raise ValueError("max_payload must not be negative")
    consumed = False

    async def read() -> Message:
        nonlocal consumed
        # readexactly takes bytes out of the buffer only once all of them are there, so a read
        # cancelled by the timeout while it waits leaves the stream where it was.
        head = await _read_exactly(reader, HEADER_LEN, at_boundary=True)
        consumed = True
        header = decode_header(head, accept=accept, max_payload=max_payload)
        payload = await _read_exactly(reader, header.payload_length, at_boundary=False)
        return Message(header.payload_type, payload)

    reading = asyncio.ensure_future(read())
    timer = asyncio.ensure_future((clock or RealClock()).sleep(timeout_s))
    try:
        await asyncio.wait({reading, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not reading.done():
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
    if not reading.cancelled():
        return reading.result()
    raise V2gtpTimeoutError(f"no complete V2GTP message within {timeout_s} s", mid_message=consumed)


async def _read_exactly(reader: asyncio.StreamReader, n: int, *, at_boundary: bool) -> bytes:
    if n == 0:
        return b""
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as exc:
        if at_boundary and not exc.partial:
            raise V2gtpEofError("the peer closed the stream between V2GTP messages") from None
        part = "header" if at_boundary else "payload"
        raise V2gtpTruncatedError(f"stream ended after {len(exc.partial)} of {n} V2GTP {part} bytes") from None
