"""V2GTP framing: header layout, the checks in the order ISO 15118-20 7.8.3.2 gives, and a stream
reader that returns exactly one message or a clean error."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.iso15118.v2gtp import (
    EXI_PAYLOAD_TYPES,
    HEADER_LEN,
    DinPayloadType,
    Header,
    Iso2PayloadType,
    Iso20PayloadType,
    Message,
    V2gtpEofError,
    V2gtpError,
    V2gtpOversizeError,
    V2gtpPayloadTypeError,
    V2gtpTimeoutError,
    V2gtpTrailingDataError,
    V2gtpTruncatedError,
    V2gtpVersionError,
    decode,
    decode_header,
    encode,
    read_message,
)
from hal.clock import VirtualClock

ENCODED = [
    (0x8001, b"", "01fe800100000000"),
    (0x8001, b"\x80\x00", "01fe8001000000028000"),
    (0x9000, b"\x00\x00", "01fe9000000000020000"),
    (0x9001, bytes(20), "01fe900100000014" + "00" * 20),
    (0x8104, b"\xff", "01fe810400000001ff"),
    (0xFFFF, b"x" * 300, "01feffff0000012c" + "78" * 300),
]


@pytest.mark.parametrize(("payload_type", "payload", "wire"), ENCODED)
def test_encode_lays_out_version_type_and_big_endian_length(payload_type: int, payload: bytes, wire: str) -> None:
    assert encode(payload_type, payload).hex() == wire
    assert decode_header(bytes.fromhex(wire)) == Header(payload_type, len(payload))
    assert decode(bytes.fromhex(wire), max_payload=1000) == Message(payload_type, payload)


@pytest.mark.parametrize("payload_type", [-1, 0x10000])
def test_encode_refuses_a_payload_type_beyond_16_bits(payload_type: int) -> None:
    with pytest.raises(ValueError, match="16 bits"):
        encode(payload_type, b"")


PAYLOAD_TYPES = [
    (DinPayloadType.EXI, 0x8001),
    (DinPayloadType.SDP_REQUEST, 0x9000),
    (DinPayloadType.SDP_RESPONSE, 0x9001),
    (Iso2PayloadType.EXI, 0x8001),
    (Iso2PayloadType.SDP_REQUEST, 0x9000),
    (Iso2PayloadType.SDP_RESPONSE, 0x9001),
    (Iso20PayloadType.SAP, 0x8001),
    (Iso20PayloadType.MAINSTREAM, 0x8002),
    (Iso20PayloadType.AC_MAINSTREAM, 0x8003),
    (Iso20PayloadType.DC_MAINSTREAM, 0x8004),
    (Iso20PayloadType.ACDP_MAINSTREAM, 0x8005),
    (Iso20PayloadType.WPT_MAINSTREAM, 0x8006),
    (Iso20PayloadType.SCHEDULE_RENEGOTIATION, 0x8101),
    (Iso20PayloadType.METERING_CONFIRMATION, 0x8102),
    (Iso20PayloadType.ACDP_SYSTEM_STATUS, 0x8103),
    (Iso20PayloadType.PARKING_STATUS, 0x8104),
    (Iso20PayloadType.SDP_REQUEST, 0x9000),
    (Iso20PayloadType.SDP_RESPONSE, 0x9001),
    (Iso20PayloadType.SDP_REQUEST_WIRELESS, 0x9002),
    (Iso20PayloadType.SDP_RESPONSE_WIRELESS, 0x9003),
]


@pytest.mark.parametrize(("member", "value"), PAYLOAD_TYPES)
def test_payload_type_values_match_the_standards_tables(member: int, value: int) -> None:
    assert member == value


def test_a_secc_connection_takes_every_exi_payload_and_no_sdp_or_manufacturer_payload() -> None:
    assert {0x8001, 0x8002, 0x8003, 0x8004, 0x8005, 0x8006, 0x8101, 0x8102, 0x8103, 0x8104} == EXI_PAYLOAD_TYPES


HEADER_ERRORS = [
    ("", {}, V2gtpTruncatedError),
    ("01fe8001000000", {}, V2gtpTruncatedError),
    ("02fd800100000000", {}, V2gtpVersionError),
    ("01ff800100000000", {}, V2gtpVersionError),
    ("00ff800100000000", {}, V2gtpVersionError),
    ("01fe900000000002", {"accept": {0x8001}}, V2gtpPayloadTypeError),
    ("01fe8001000000ff", {"max_payload": 254}, V2gtpOversizeError),
    ("01fe8001ffffffff", {"max_payload": 65536}, V2gtpOversizeError),
    # The order of ISO 15118-20 7.8.3.2: version before type before length.
    ("02fe9000ffffffff", {"accept": {0x8001}, "max_payload": 1}, V2gtpVersionError),
    ("01fe9000ffffffff", {"accept": {0x8001}, "max_payload": 1}, V2gtpPayloadTypeError),
]


@pytest.mark.parametrize(("wire", "kwargs", "error"), HEADER_ERRORS)
def test_decode_header_names_the_first_wrong_field(wire: str, kwargs: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        decode_header(bytes.fromhex(wire), **kwargs)  # type: ignore[arg-type]


def test_errors_carry_the_offending_value() -> None:
    with pytest.raises(V2gtpPayloadTypeError) as wrong_type:
        decode_header(bytes.fromhex("01fea00000000000"), accept=EXI_PAYLOAD_TYPES)
    assert wrong_type.value.payload_type == 0xA000
    with pytest.raises(V2gtpOversizeError) as too_long:
        decode_header(bytes.fromhex("01fe800100010000"), max_payload=100)
    assert too_long.value.payload_length == 65536


def test_decode_of_a_datagram_needs_the_announced_length_exactly() -> None:
    with pytest.raises(V2gtpTruncatedError):
        decode(bytes.fromhex("01fe80010000000300"), max_payload=10)
    with pytest.raises(V2gtpTrailingDataError):
        decode(bytes.fromhex("01fe8001000000010000"), max_payload=10)


@given(payload_type=st.integers(0, 0xFFFF), payload=st.binary(max_size=2000))
def test_encode_then_decode_gives_back_type_and_payload(payload_type: int, payload: bytes) -> None:
    wire = encode(payload_type, payload)
    assert len(wire) == HEADER_LEN + len(payload)
    assert decode(wire, max_payload=len(payload)) == Message(payload_type, payload)
    assert asyncio.run(_read_all(wire, max_payload=len(payload))) == [Message(payload_type, payload)]


@given(st.binary(max_size=64))
def test_decode_header_of_garbage_gives_a_header_or_a_v2gtp_error(data: bytes) -> None:
    try:
        header = decode_header(data, accept=EXI_PAYLOAD_TYPES, max_payload=4096)
    except V2gtpError:
        return
    assert data[:2] == b"\x01\xfe"
    assert header.payload_type in EXI_PAYLOAD_TYPES
    assert header.payload_length <= 4096


async def _read_all(data: bytes, *, max_payload: int = 4096) -> list[Message]:
    """Read messages until the stream ends; the reader must end exactly at the end of the data."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    messages = []
    while True:
        try:
            messages.append(await read_message(reader, max_payload=max_payload, timeout_s=5))
        except V2gtpEofError:
            return messages


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=40), max_size=4), st.binary(max_size=40))
def test_read_message_on_a_garbage_stream_returns_whole_messages_then_a_clean_error(
    frames: list[bytes], tail: bytes
) -> None:
    good = b"".join(encode(0x8001, f) for f in frames)

    async def scenario() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(good + tail)
        reader.feed_eof()
        for frame in frames:
            assert await read_message(reader, max_payload=100, timeout_s=5) == Message(0x8001, frame)
        try:
            message = await read_message(reader, max_payload=100, timeout_s=5)
        except V2gtpError:
            return
        # The garbage happened to start with a valid message: it must be exactly that one.
        assert encode(message.payload_type, message.payload) == tail[: HEADER_LEN + len(message.payload)]

    asyncio.run(scenario())


def test_read_message_leaves_the_next_message_in_the_stream() -> None:
    async def scenario() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(encode(0x8001, b"one") + encode(0x8002, b"two") + b"\x01")
        assert await read_message(reader, max_payload=10, timeout_s=1) == Message(0x8001, b"one")
        assert await read_message(reader, max_payload=10, timeout_s=1) == Message(0x8002, b"two")
        reader.feed_eof()
        with pytest.raises(V2gtpTruncatedError) as truncated:
            await read_message(reader, max_payload=10, timeout_s=1)
        assert not isinstance(truncated.value, V2gtpEofError)

    asyncio.run(scenario())


STREAM_ERRORS = [
    (b"", V2gtpEofError),
    (bytes.fromhex("01fe80"), V2gtpTruncatedError),
    (bytes.fromhex("01fe800100000005") + b"abc", V2gtpTruncatedError),
    (bytes.fromhex("fe01800100000005") + b"abcde", V2gtpVersionError),
    (bytes.fromhex("01fe900000000002") + b"\x00\x00", V2gtpPayloadTypeError),
]


@pytest.mark.parametrize(("data", "error"), STREAM_ERRORS)
def test_read_message_errors(data: bytes, error: type) -> None:
    async def scenario() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        with pytest.raises(error):
            await read_message(reader, max_payload=100, timeout_s=1, accept=EXI_PAYLOAD_TYPES)

    asyncio.run(scenario())


def test_an_oversize_header_is_refused_without_waiting_for_its_payload() -> None:
    async def scenario() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(bytes.fromhex("01fe800140000000"))  # announces 1 GiB, sends nothing more
        with pytest.raises(V2gtpOversizeError):
            await read_message(reader, max_payload=65536, timeout_s=3600, clock=VirtualClock())

    asyncio.run(scenario())


def test_timeout_between_messages_leaves_the_stream_usable() -> None:
    async def scenario() -> None:
        clock = VirtualClock()
        reader = asyncio.StreamReader()
        reading = asyncio.ensure_future(read_message(reader, max_payload=10, timeout_s=2.0, clock=clock))
        reader.feed_data(encode(0x8001, b"ab")[:5])  # part of a header: not yet consumed
        await clock.advance(1.9)
        assert not reading.done()
        await clock.advance(0.2)
        with pytest.raises(V2gtpTimeoutError) as timeout:
            await reading
        assert timeout.value.mid_message is False
        reader.feed_data(encode(0x8001, b"ab")[5:])
        assert await read_message(reader, max_payload=10, timeout_s=2.0, clock=clock) == Message(0x8001, b"ab")

    asyncio.run(scenario())


def test_timeout_inside_a_payload_says_the_stream_is_out_of_step() -> None:
    async def scenario() -> None:
        clock = VirtualClock()
        reader = asyncio.StreamReader()
        reader.feed_data(encode(0x8001, b"abcdef")[:10])
        reading = asyncio.ensure_future(read_message(reader, max_payload=10, timeout_s=0.5, clock=clock))
        await clock.advance(0.5)
        with pytest.raises(V2gtpTimeoutError) as timeout:
            await reading
        assert timeout.value.mid_message is True

    asyncio.run(scenario())
