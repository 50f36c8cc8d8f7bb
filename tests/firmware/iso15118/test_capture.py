"""V2GTP messages out of pcap and pcapng captures: TCP streams put in order, retransmissions dropped,
messages split over segments joined, SDP over UDP, TLS recognised, and each message's grammar found
from the SupportedAppProtocol handshake."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import dpkt
import pytest

from firmware.iso15118.capture import SAP_NAMESPACE, CaptureError, Message, assign_grammars, read

EV = bytes.fromhex("fe800000000000000000000000000001")
SECC = bytes.fromhex("fe800000000000000000000000000002")
ISO2 = "urn:iso:15118:2:2013:MsgDef"
DIN = "urn:din:70121:2012:MsgDef"


def v2gtp(payload_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBHI", 1, 0xFE, payload_type, len(payload)) + payload


def frame(src: bytes, dst: bytes, segment: dpkt.Packet, proto: int) -> bytes:
    ip = dpkt.ip6.IP6(src=src, dst=dst, nxt=proto, hlim=64, data=segment, plen=len(bytes(segment)))
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=dpkt.ethernet.ETH_TYPE_IP6, data=ip))


def tcp(sport: int, dport: int, seq: int, data: bytes = b"", flags: int = dpkt.tcp.TH_ACK) -> dpkt.tcp.TCP:
    return dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, flags=flags, data=data)


def write_pcap(path: Path, frames: list[bytes], *, ng: bool = False) -> None:
    with path.open("wb") as handle:
        writer: Any = dpkt.pcapng.Writer(handle) if ng else dpkt.pcap.Writer(handle)
        for i, f in enumerate(frames):
            writer.writepkt(f, ts=1000.0 + i * 0.01)


#: Stand-ins for the SAP messages: the capture logic only needs their decoded form.
SAP_REQ = b"sap-request"
SAP_RES = b"sap-response"
SAP_TREES: dict[bytes, dict[str, Any]] = {
    SAP_REQ: {
        "supportedAppProtocolReq": {
            "AppProtocol": [
                {
                    "ProtocolNamespace": DIN,
                    "SchemaID": 2,
                    "Priority": 2,
                    "VersionNumberMajor": 2,
                    "VersionNumberMinor": 0,
                },
                {
                    "ProtocolNamespace": ISO2,
                    "SchemaID": 1,
                    "Priority": 1,
                    "VersionNumberMajor": 2,
                    "VersionNumberMinor": 0,
                },
            ]
        }
    },
    SAP_RES: {"supportedAppProtocolRes": {"ResponseCode": "OK_SuccessfulNegotiation", "SchemaID": 1}},
}


def decode_sap(payload: bytes) -> dict[str, Any]:
    if payload not in SAP_TREES:
        raise ValueError("not SAP")
    return SAP_TREES[payload]


def session_frames() -> list[bytes]:
    """SDP, a handshake, then a session whose messages are split, reordered and retransmitted."""
    ev_stream = v2gtp(0x8001, SAP_REQ) + v2gtp(0x8001, b"setup-req") + v2gtp(0x8001, b"discovery-req")
    secc_stream = v2gtp(0x8001, SAP_RES) + v2gtp(0x8001, b"setup-res")
    sdp = dpkt.udp.UDP(sport=50000, dport=15118, data=v2gtp(0x9000, b"\x10\x00"))
    sdp.ulen = len(bytes(sdp))
    a, b = 1000, 5000
    cut = len(v2gtp(0x8001, SAP_REQ)) + 5  # the second message split over two segments
    return [
        frame(EV, bytes.fromhex("ff020000000000000000000000000001"), sdp, dpkt.ip.IP_PROTO_UDP),
        frame(EV, SECC, tcp(50001, 61000, a - 1, flags=dpkt.tcp.TH_SYN), dpkt.ip.IP_PROTO_TCP),
        frame(SECC, EV, tcp(61000, 50001, b - 1, flags=dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK), dpkt.ip.IP_PROTO_TCP),
        frame(EV, SECC, tcp(50001, 61000, a, ev_stream[:cut]), dpkt.ip.IP_PROTO_TCP),
        frame(SECC, EV, tcp(61000, 50001, b, secc_stream), dpkt.ip.IP_PROTO_TCP),
        # out of order: the last part first, then the middle, then a retransmission of the first
        frame(EV, SECC, tcp(50001, 61000, a + cut + 20, ev_stream[cut + 20 :]), dpkt.ip.IP_PROTO_TCP),
        frame(EV, SECC, tcp(50001, 61000, a + cut, ev_stream[cut : cut + 20]), dpkt.ip.IP_PROTO_TCP),
        frame(EV, SECC, tcp(50001, 61000, a, ev_stream[:cut]), dpkt.ip.IP_PROTO_TCP),
    ]


@pytest.mark.parametrize("ng", [False, True], ids=["pcap", "pcapng"])
def test_messages_come_out_whole_in_stream_order_with_their_grammar(tmp_path: Path, ng: bool) -> None:
    path = tmp_path / "session.pcap"
    write_pcap(path, session_frames(), ng=ng)
    messages = list(assign_grammars(read(path), decode_sap))
    summary = [(m.note or m.payload.decode(errors="replace"), m.grammar) for m in messages]
    assert summary == [
        ("SDP request", None),
        ("sap-request", SAP_NAMESPACE),
        ("sap-response", SAP_NAMESPACE),
        ("setup-res", ISO2),
        ("setup-req", ISO2),  # joined from three segments that came out of order, one of them twice
        ("discovery-req", ISO2),
    ], summary


def test_the_negotiated_protocol_names_the_grammar(tmp_path: Path) -> None:
    ev = v2gtp(0x8001, SAP_REQ) + v2gtp(0x8001, b"setup-req")
    secc = v2gtp(0x8001, SAP_RES) + v2gtp(0x8001, b"setup-res")
    frames = [
        frame(EV, SECC, tcp(50001, 61000, 1, ev[: len(v2gtp(0x8001, SAP_REQ))]), dpkt.ip.IP_PROTO_TCP),
        frame(SECC, EV, tcp(61000, 50001, 1, secc), dpkt.ip.IP_PROTO_TCP),
        frame(EV, SECC, tcp(50001, 61000, 1 + len(v2gtp(0x8001, SAP_REQ)), ev[len(v2gtp(0x8001, SAP_REQ)) :]), 6),
    ]
    path = tmp_path / "c.pcap"
    write_pcap(path, frames)
    got = [(m.payload, m.grammar, m.flow) for m in assign_grammars(read(path), decode_sap)]
    assert got == [
        (SAP_REQ, SAP_NAMESPACE, 1),
        (SAP_RES, SAP_NAMESPACE, 1),
        (b"setup-res", ISO2, 1),
        (b"setup-req", ISO2, 1),
    ]


def test_iso20_payload_types_carry_their_own_grammar_and_tls_is_recognised(tmp_path: Path) -> None:
    frames = [
        frame(EV, SECC, tcp(50001, 61000, 1, v2gtp(0x8004, b"dc-loop")), dpkt.ip.IP_PROTO_TCP),
        frame(EV, SECC, tcp(50002, 61001, 1, b"\x16\x03\x03\x00\x10" + bytes(16)), dpkt.ip.IP_PROTO_TCP),
        frame(EV, SECC, tcp(50001, 61000, 1 + 15, v2gtp(0xA000, b"vendor")), dpkt.ip.IP_PROTO_TCP),
    ]
    path = tmp_path / "c.pcap"
    write_pcap(path, frames)
    got = [(m.payload, m.grammar, m.note) for m in assign_grammars(read(path), decode_sap)]
    assert got == [
        (b"dc-loop", "urn:iso:std:iso:15118:-20:DC", ""),
        (b"vendor", None, "payload type 0xA000 is not EXI"),
    ]


def test_garbage_in_a_stream_ends_its_reading_and_a_bad_file_is_a_capture_error(tmp_path: Path) -> None:
    frames = [frame(EV, SECC, tcp(50001, 61000, 1, b"\x02\xfd" + bytes(20)), dpkt.ip.IP_PROTO_TCP)]
    path = tmp_path / "c.pcap"
    write_pcap(path, frames)
    assert list(read(path)) == []
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"this is not a capture at all")
    with pytest.raises(CaptureError, match="not a readable pcap"):
        list(read(bad))
    with pytest.raises(CaptureError, match="No such file"):
        list(read(tmp_path / "missing.pcap"))


def test_a_message_is_a_plain_record() -> None:
    m = Message(1.0, "[fe80::1]:1", "[fe80::2]:2", 0x8001, b"x", 1)
    assert (m.grammar, m.note) == (None, "")
