"""Frame layer of the co-processor link (docs/mcu-protocol.md): CRC, encode/decode, resync."""

from __future__ import annotations

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from hal.drivers.mcu_frames import (
    MAX_PAYLOAD,
    SOF,
    Capability,
    CpState,
    ErrorFlag,
    Frame,
    FrameDecoder,
    FrameError,
    HelloInfo,
    McuStatus,
    MsgType,
    Nack,
    NackCode,
    Output,
    PayloadError,
    PilotCode,
    ResetReason,
    SelftestState,
    crc16_ccitt_false,
    decode_frame,
    decode_set_pilot,
    encode_frame,
    encode_set_pilot,
    flag_names,
)


def reference_crc16(data: bytes) -> int:
    """Bit-by-bit CRC-16/CCITT-FALSE straight from its definition (poly 0x1021, init 0xFFFF, MSB first,
    no reflection, no final XOR), independent of the table-driven implementation."""
    crc = 0xFFFF
    for byte in data:
        for bit in range(7, -1, -1):
            feedback = ((crc >> 15) & 1) ^ ((byte >> bit) & 1)
            crc = (crc << 1) & 0xFFFF
            if feedback:
                crc ^= 0x1021
    return crc


frames_st = st.builds(
    Frame,
    seq=st.integers(0, 255),
    msg_type=st.integers(0, 255),
    payload=st.binary(max_size=MAX_PAYLOAD),
)


# ---------------------------------------------------------------------------------- CRC


def test_crc_catalogue_check_value() -> None:
    # CRC-16/CCITT-FALSE (CRC-16/IBM-3740) catalogue check value.
    assert crc16_ccitt_false(b"123456789") == 0x29B1
    assert reference_crc16(b"123456789") == 0x29B1
    assert crc16_ccitt_false(b"") == 0xFFFF


@given(st.binary(max_size=200))
def test_crc_table_matches_bitwise_definition(data: bytes) -> None:
    assert crc16_ccitt_false(data) == reference_crc16(data)


def test_frame_test_vectors_from_the_spec() -> None:
    # docs/mcu-protocol.md "Test vectors".
    assert encode_frame(0x01, MsgType.HEARTBEAT) == bytes.fromhex("a5 00 ff 01 02 d0 58")
    assert encode_frame(0x2A, MsgType.SET_PILOT, encode_set_pilot(PilotCode.PWM, 100)) == bytes.fromhex(
        "a5 03 fc 2a 10 01 64 00 70 16"
    )
    assert encode_frame(0x01, MsgType.HELLO, b"\x01") == bytes.fromhex("a5 01 fe 01 01 01 6a 92")
    assert encode_frame(0x03, MsgType.SET_CONTACTOR, b"\x01") == bytes.fromhex("a5 01 fe 03 11 01 79 ff")
    nack = Nack(MsgType.SET_CONTACTOR, NackCode.INTERLOCK).encode()
    assert encode_frame(0x05, MsgType.NACK, nack) == bytes.fromhex("a5 02 fd 05 ff 11 05 bd 88")
    # CRC over LEN..PAYLOAD, little-endian on the wire.
    assert reference_crc16(bytes.fromhex("00 ff 01 02")) == 0x58D0


# ---------------------------------------------------------------------------------- encode/decode


@given(frames_st)
def test_any_frame_round_trips(frame: Frame) -> None:
    wire = frame.encode()
    assert len(wire) == 7 + len(frame.payload)
    assert decode_frame(wire) == frame
    decoder = FrameDecoder()
    assert decoder.feed(wire) == [frame]
    assert decoder.pending == 0


def test_encode_rejects_what_cannot_be_framed() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        encode_frame(0, 1, bytes(MAX_PAYLOAD + 1))
    with pytest.raises(ValueError, match="sequence"):
        encode_frame(256, 1)
    with pytest.raises(ValueError, match="type"):
        encode_frame(0, -1)


def test_decode_frame_names_what_is_wrong() -> None:
    good = encode_frame(7, MsgType.READ_STATUS)
    with pytest.raises(FrameError, match="CRC"):
        decode_frame(good[:-1] + bytes((good[-1] ^ 1,)))
    with pytest.raises(FrameError, match="start marker"):
        decode_frame(b"\x00" + good[1:])
    with pytest.raises(FrameError, match="length"):
        decode_frame(good[:2] + b"\x00" + good[3:])
    with pytest.raises(FrameError, match="shorter"):
        decode_frame(good[:4])
    with pytest.raises(FrameError, match="announces"):
        decode_frame(good + b"\x00")


@given(st.lists(frames_st, max_size=8), st.data())
def test_any_chunking_yields_the_same_frames(frames: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(f.encode() for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = FrameDecoder()
    out: list[Frame] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        out += decoder.feed(stream[previous:cut])
        previous = cut
    assert out == frames
    assert decoder.stats.frames == len(frames)
    assert decoder.stats.garbage_bytes == decoder.stats.bad_crc == decoder.stats.bad_length == 0


@settings(max_examples=300)
@given(st.lists(st.tuples(st.binary(max_size=40), frames_st), max_size=6), st.binary(max_size=40), st.data())
def test_random_garbage_between_frames_is_skipped(
    parts: list[tuple[bytes, Frame]], tail: bytes, data: st.DataObject
) -> None:
    stream = b"".join(noise + frame.encode() for noise, frame in parts) + tail
    chunk = data.draw(st.integers(1, 16))
    decoder = FrameDecoder()
    out: list[Frame] = []
    for i in range(0, len(stream), chunk):
        out += decoder.feed(stream[i : i + chunk])
    out += decoder.flush()  # the line goes idle: a false start marker in the tail is abandoned
    assert out == [frame for _, frame in parts]
    assert decoder.pending == 0
    noise_total = sum(len(noise) for noise, _ in parts) + len(tail)
    assert decoder.stats.garbage_bytes == noise_total


# ---------------------------------------------------------------------------------- errors counted


def test_bad_crc_frame_is_dropped_counted_and_the_next_frame_survives() -> None:
    errors: list[tuple[str, str]] = []
    decoder = FrameDecoder(on_error=lambda kind, detail: errors.append((kind, detail)))
    bad = bytearray(encode_frame(1, MsgType.EVENT_STATUS, b"\x01\x02\x03"))
    bad[-1] ^= 0x40
    good = encode_frame(2, MsgType.EVENT_STATUS, b"\x04")
    assert decoder.feed(bytes(bad) + good) == [Frame(2, MsgType.EVENT_STATUS, b"\x04")]
    assert decoder.stats.bad_crc == 1
    assert decoder.stats.frames == 1
    assert decoder.stats.garbage_bytes == len(bad)
    assert errors and errors[0][0] == "bad_crc" and "seq 1" in errors[0][1]


def test_corrupted_payload_byte_is_caught_by_the_crc() -> None:
    wire = bytearray(encode_frame(9, MsgType.SET_CONTACTOR, b"\x01"))
    wire[5] ^= 0x01  # allow -> deny must never be accepted
    decoder = FrameDecoder()
    assert decoder.feed(bytes(wire)) == []
    assert decoder.flush() == []
    assert decoder.stats.bad_crc == 1


def test_bad_length_pair_is_counted_and_skipped() -> None:
    decoder = FrameDecoder()
    good = encode_frame(3, MsgType.HEARTBEAT)
    # 0x41 = 65 > MAX_PAYLOAD with a matching complement; then a pair that does not match.
    noise = bytes((SOF, 0x41, 0x41 ^ 0xFF, SOF, 0x02, 0x02))
    assert decoder.feed(noise + good) == [Frame(3, MsgType.HEARTBEAT)]
    assert decoder.stats.bad_length == 2
    assert decoder.stats.garbage_bytes == len(noise)


def test_partial_frame_abandoned_when_the_line_goes_idle() -> None:
    decoder = FrameDecoder()
    good = encode_frame(4, MsgType.READ_STATUS)
    # A false header announcing 20 payload bytes swallows the real frame until the line is idle.
    assert decoder.feed(bytes((SOF, 20, 20 ^ 0xFF)) + good) == []
    assert decoder.flush() == [Frame(4, MsgType.READ_STATUS)]
    assert decoder.stats.truncated == 1
    assert decoder.pending == 0
    # A lone start marker and a header cut short are abandoned too.
    assert decoder.feed(bytes((SOF,))) == []
    assert decoder.flush() == []
    assert decoder.stats.truncated == 2


def test_decoder_through_a_pyserial_loop_port() -> None:
    port = serial.serial_for_url("loop://", timeout=0.05)
    try:
        frames = [Frame(i, MsgType.EVENT_STATUS, bytes(range(i))) for i in range(5)]
        port.write(b"\x00\xa5" + b"".join(f.encode() + b"\xff" for f in frames))
        decoder = FrameDecoder()
        out: list[Frame] = []
        while chunk := port.read(3):
            out += decoder.feed(chunk)
        assert out == frames
        assert decoder.stats.garbage_bytes == 2 + len(frames)
    finally:
        port.close()


# ---------------------------------------------------------------------------------- payloads


status_st = st.builds(
    McuStatus,
    uptime_ms=st.integers(0, 2**32 - 1),
    pilot_mode=st.sampled_from(PilotCode),
    duty_permille=st.integers(0, 1000),
    cp_high_mv=st.integers(-32768, 32767),
    cp_low_mv=st.integers(-32768, 32767),
    cp_periods=st.integers(0, 65535),
    cp_state=st.sampled_from(CpState),
    outputs=st.integers(0, 0x7F).map(Output),
    flags=st.integers(0, 0x1FF).map(ErrorFlag),
    selftest=st.sampled_from(SelftestState),
)


@given(status_st)
def test_status_payload_round_trips(status: McuStatus) -> None:
    payload = status.encode()
    assert len(payload) == McuStatus.SIZE == 18
    assert McuStatus.decode(payload) == status


def test_status_payload_errors() -> None:
    good = McuStatus(0, PilotCode.X1, 0, 12000, 0, 50, CpState.A, Output(0), ErrorFlag(0), SelftestState.IDLE)
    with pytest.raises(PayloadError, match="17 bytes"):
        McuStatus.decode(good.encode()[:-1])
    bad_mode = bytearray(good.encode())
    bad_mode[4] = 9
    with pytest.raises(PayloadError, match="out of range"):
        McuStatus.decode(bytes(bad_mode))


def test_hello_nack_and_pilot_payloads() -> None:
    hello = HelloInfo(1, (0, 1, 2), Capability.STATE_E | Capability.RCD, ResetReason.WATCHDOG, 1000, 50)
    assert HelloInfo.decode(hello.encode()) == hello
    assert len(hello.encode()) == HelloInfo.SIZE == 10
    nack = Nack(MsgType.SET_CONTACTOR, NackCode.INTERLOCK)
    assert Nack.decode(nack.encode()) == nack
    assert nack.describe() == "SET_CONTACTOR refused: INTERLOCK"
    assert decode_set_pilot(encode_set_pilot(PilotCode.PWM, 533)) == (PilotCode.PWM, 533)
    assert encode_set_pilot(PilotCode.PWM, 533) == b"\x01\x15\x02"  # little-endian duty


def test_flag_names_follow_everest_error_flags() -> None:
    assert flag_names(ErrorFlag.RCD_TRIGGERED | ErrorFlag.HEARTBEAT_TIMEOUT) == [
        "rcd_triggered",
        "heartbeat_timeout",
    ]
    assert [f.name.lower() for f in ErrorFlag if f.name] == [
        "diode_fault",
        "rcd_selftest_failed",
        "rcd_triggered",
        "ventilation_not_available",
        "connector_lock_failed",
        "cp_signal_fault",
        "heartbeat_timeout",
        "coil_feedback_diverges",
        "pp_signal_fault",
    ]
