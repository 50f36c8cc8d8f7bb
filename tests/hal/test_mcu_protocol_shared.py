"""The one definition of the co-processor protocol (board/mcu/protocol.py) and the Pi side built on it:
every number has its named member on the Pi side and the other way round, the payload sizes match
the documented layouts, and the co-processor's fixed-buffer decoder finds exactly the frames the Pi's
decoder finds in any byte stream (the same section 3 rules on both ends)."""

from __future__ import annotations

import enum
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from board.mcu import protocol as P
from hal.drivers import mcu_frames as F

#: Prefix in protocol.py -> the Pi-side enum whose members carry those numbers.
GROUPS: dict[str, type[enum.Enum]] = {
    "MSG_": F.MsgType,
    "NACK_": F.NackCode,
    "PILOT_": F.PilotCode,
    "CP_": F.CpState,
    "FLAG_": F.ErrorFlag,
    "OUT_": F.Output,
    "SELFTEST_": F.SelftestState,
    "CAP_": F.Capability,
    "RESET_": F.ResetReason,
}


@pytest.mark.parametrize("prefix", list(GROUPS))
def test_every_number_has_its_named_member_and_back(prefix: str) -> None:
    shared = {
        name[len(prefix) :]: value
        for name, value in vars(P).items()
        if name.startswith(prefix) and isinstance(value, int) and not name.endswith("_FORMAT")
    }
    members = {m.name: int(m.value) for m in GROUPS[prefix]}
    assert shared == members


def test_flag_groups_and_layouts() -> None:
    latched = (
        P.FLAG_RCD_SELFTEST_FAILED
        | P.FLAG_RCD_TRIGGERED
        | P.FLAG_CONNECTOR_LOCK_FAILED
        | P.FLAG_HEARTBEAT_TIMEOUT
        | P.FLAG_COIL_FEEDBACK_DIVERGES
    )
    assert P.LATCHED_FLAGS == latched and P.INTERLOCK_FLAGS == latched | P.FLAG_DIODE_FAULT
    assert struct.calcsize(P.STATUS_FORMAT) == P.STATUS_SIZE == F.McuStatus.SIZE
    assert struct.calcsize(P.HELLO_INFO_FORMAT) == P.HELLO_INFO_SIZE
    assert P.MAX_FRAME_LEN == P.HEADER_LEN + P.MAX_PAYLOAD + P.CRC_LEN
    assert set(P.REQUEST_LENGTHS) == set(F.REQUEST_TYPES)


@pytest.mark.parametrize(
    ("seq", "msg_type", "payload", "wire"),
    [
        (1, P.MSG_HEARTBEAT, b"", "A5 00 FF 01 02 D0 58"),
        (1, P.MSG_HELLO, b"\x01", "A5 01 FE 01 01 01 6A 92"),
        (3, P.MSG_SET_CONTACTOR, b"\x01", "A5 01 FE 03 11 01 79 FF"),
        (42, P.MSG_SET_PILOT, b"\x01\x64\x00", "A5 03 FC 2A 10 01 64 00 70 16"),
        (5, P.MSG_NACK, b"\x11\x05", "A5 02 FD 05 FF 11 05 BD 88"),
    ],
)
def test_the_documented_vectors(seq: int, msg_type: int, payload: bytes, wire: str) -> None:
    """docs/mcu-protocol.md section 2 "Test vectors", and the CRC check value."""
    assert P.encode_frame(seq, msg_type, payload) == bytes.fromhex(wire)
    assert P.crc16(b"123456789") == 0x29B1
    assert P.Decoder().feed(bytes.fromhex(wire)) == [(seq, msg_type, payload)]


frames = st.builds(
    lambda seq, kind, payload: P.encode_frame(seq, kind, payload),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=P.MAX_PAYLOAD),
)
chunks = st.lists(st.one_of(frames, st.binary(max_size=20), st.just(bytes([P.SOF]))), max_size=12)


@settings(max_examples=300, deadline=None)
@given(stream=chunks, flips=st.lists(st.integers(0, 10_000), max_size=3), split=st.integers(1, 80))
def test_the_coprocessor_decoder_finds_what_the_pi_decoder_finds(
    stream: list[bytes], flips: list[int], split: int
) -> None:
    data = bytearray(b"".join(stream))
    for at in flips:  # a few corrupted bytes
        if data:
            data[at % len(data)] ^= 0x5A
    pi, mcu = F.FrameDecoder(), P.Decoder()
    found_pi, found_mcu = [], []
    for i in range(0, len(data), split):  # the same bytes in the same chunks
        found_pi += [(f.seq, f.msg_type, f.payload) for f in pi.feed(bytes(data[i : i + split]))]
        found_mcu += mcu.feed(data[i : i + split])
    found_pi += [(f.seq, f.msg_type, f.payload) for f in pi.flush()]
    found_mcu += mcu.idle()
    assert found_mcu == found_pi
    assert (mcu.bad_crc, mcu.bad_length) == (pi.stats.bad_crc, pi.stats.bad_length)
