"""V2GTP messages out of a packet capture, for debugging real vehicles (`evse exi decode-pcap`).

A capture taken on the charger's PLC interface (tcpdump -w, Wireshark) holds SDP over UDP port 15118
and the V2G session over TCP (or TLS, which cannot be read without its keys). This module reads
pcap and pcapng files with ``dpkt``, follows each TCP connection (segments put in sequence order,
retransmissions dropped), cuts the byte streams into V2GTP messages (8-byte header: version 0x01,
inverse 0xFE, payload type, length; ISO 15118-2 Table 10) and tells which EXI grammar each one needs:

* the first EXI message of a connection is the EV's supportedAppProtocolReq (SAP grammar), the
  second the SECC's answer, whose SchemaID names the protocol the rest of the connection speaks
  (looked up in the EV's offer);
* ISO 15118-20 marks its messages with their own payload types (0x8002 common, 0x8003 AC, 0x8004 DC,
  ...; ISO 15118-20 Table 12), so those need no negotiation to be read.

Decoding itself is the caller's (the EXI codec); :func:`assign_grammars` only needs a function that
decodes one SAP message.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import dpkt

from firmware.iso15118.exi.namespaces import Namespace

V2GTP_HEADER = 8
V2GTP_VERSION = 0x01
SDP_PORT = 15118
#: A V2GTP payload larger than this is not believed (ISO 15118-20 allows large certificate messages;
#: nothing in the protocols comes near 1 MiB).
MAX_PAYLOAD = 1 << 20

#: V2GTP payload types (ISO 15118-2 Table 10, DIN 70121 Table 16, ISO 15118-20 Table 12).
EXI = 0x8001  # SAP, DIN, ISO-2 (and SAP under -20)
ISO20_GRAMMARS = {
    0x8002: Namespace.ISO20_COMMON,
    0x8003: Namespace.ISO20_AC,
    0x8004: Namespace.ISO20_DC,
    0x8005: Namespace.ISO20_ACDP,
    0x8006: Namespace.ISO20_WPT,
}
SAP_NAMESPACE = Namespace.SAP
SDP_TYPES = {0x9000: "SDP request", 0x9001: "SDP response", 0x9002: "SDP request (wireless)", 0x9003: "SDP response"}


class CaptureError(ValueError):
    """The file is not a readable pcap / pcapng capture."""


@dataclass(frozen=True)
class Message:
    """One V2GTP message seen on the wire."""

    t: float  # capture time of the segment that completed it
    src: str  # "[addr]:port"
    dst: str
    payload_type: int
    payload: bytes
    flow: int  # which TCP connection (or 0 for UDP)
    grammar: str | None = None  # the EXI namespace to decode it with; None: not EXI or unknown
    note: str = ""  # why it cannot be decoded, or what it is (SDP)


@dataclass
class _Stream:
    """One direction of one TCP connection."""

    next_seq: int | None = None
    pending: dict[int, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    tls: bool = False


def read(path: Path) -> Iterator[Message]:
    """Every V2GTP message in the capture, in capture order (grammars not yet assigned)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise CaptureError(f"{path}: {exc.strerror}") from exc
    with handle:
        yield from _messages(packets(handle, path))


def packets(handle: BinaryIO, path: Path) -> Iterator[tuple[float, bytes, int]]:
    """(time, frame, link type) of every packet of an open capture file."""
    magic = handle.read(4)
    handle.seek(0)
    try:
        if magic == b"\x0a\x0d\x0d\x0a":
            reader: Any = dpkt.pcapng.Reader(handle)
        else:
            reader = dpkt.pcap.Reader(handle)
        link = reader.datalink()
        for t, frame in reader:
            yield float(t), bytes(frame), link
    except (ValueError, dpkt.dpkt.NeedData, dpkt.dpkt.UnpackError) as exc:
        raise CaptureError(f"{path}: not a readable pcap or pcapng capture ({exc})") from exc


def ip_of(frame: bytes, link: int) -> Any:
    """The IP packet inside a captured frame (Ethernet, Linux cooked or raw IP); None for others."""
    if link == dpkt.pcap.DLT_EN10MB:
        eth = dpkt.ethernet.Ethernet(frame)
        return eth.data
    if link == dpkt.pcap.DLT_LINUX_SLL:
        return dpkt.sll.SLL(frame).data
    if link == dpkt.pcap.DLT_RAW or link == 101:  # LINKTYPE_RAW
        return dpkt.ip6.IP6(frame) if frame[:1] and frame[0] >> 4 == 6 else dpkt.ip.IP(frame)
    return None


def _addr(ip: Any, port: int) -> str:
    raw = ip.src if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) else b""
    return f"[{ipaddress.ip_address(raw)}]:{port}"


def _messages(packets: Iterable[tuple[float, bytes, int]]) -> Iterator[Message]:
    streams: dict[tuple[bytes, int, bytes, int], _Stream] = {}
    flows: dict[frozenset[tuple[bytes, int]], int] = {}
    for t, frame, link in packets:
        try:
            ip = ip_of(frame, link)
        except (dpkt.dpkt.UnpackError, dpkt.dpkt.NeedData):
            continue
        if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
            continue
        segment = ip.data
        if isinstance(segment, dpkt.udp.UDP) and SDP_PORT in (segment.sport, segment.dport):
            for payload_type, payload in _frames(bytearray(bytes(segment.data))):
                yield Message(
                    t,
                    _addr(ip, segment.sport),
                    f"[{ipaddress.ip_address(ip.dst)}]:{segment.dport}",
                    payload_type,
                    payload,
                    0,
                    note=SDP_TYPES.get(payload_type, "UDP"),
                )
            continue
        if not isinstance(segment, dpkt.tcp.TCP):
            continue
        key = (bytes(ip.src), segment.sport, bytes(ip.dst), segment.dport)
        flow = flows.setdefault(frozenset({key[:2], key[2:]}), len(flows) + 1)
        stream = streams.setdefault(key, _Stream())
        if segment.flags & dpkt.tcp.TH_SYN:
            stream.next_seq = (segment.seq + 1) & 0xFFFFFFFF
            continue
        data = bytes(segment.data)
        if not data:
            continue
        if stream.next_seq is None:  # the capture started mid-connection
            stream.next_seq = segment.seq
        stream.pending.setdefault(segment.seq, data)
        while stream.next_seq in stream.pending:
            chunk = stream.pending.pop(stream.next_seq)
            stream.data += chunk
            stream.next_seq = (stream.next_seq + len(chunk)) & 0xFFFFFFFF
        if stream.pending:  # drop retransmissions of what was already taken
            stream.pending = {s: d for s, d in stream.pending.items() if _after(s, stream.next_seq)}
        if not stream.tls and stream.data[:1] == b"\x16" and stream.data[1:2] == b"\x03":
            stream.tls = True
        if stream.tls:
            stream.data.clear()
            continue
        src, dst = _addr(ip, segment.sport), f"[{ipaddress.ip_address(ip.dst)}]:{segment.dport}"
        for payload_type, payload in _frames(stream.data):
            yield Message(t, src, dst, payload_type, payload, flow)


def _after(seq: int, ref: int) -> bool:
    return ((seq - ref) & 0xFFFFFFFF) < 0x80000000


def _frames(buffer: bytearray) -> Iterator[tuple[int, bytes]]:
    """Cut complete V2GTP messages off the front of ``buffer``; garbage ends the stream's reading."""
    while len(buffer) >= V2GTP_HEADER:
        version, inverse = buffer[0], buffer[1]
        length = int.from_bytes(buffer[4:8], "big")
        if version != V2GTP_VERSION or inverse != (version ^ 0xFF) or length > MAX_PAYLOAD:
            buffer.clear()  # not V2GTP (or out of step): nothing after it can be trusted
            return
        if len(buffer) < V2GTP_HEADER + length:
            return
        payload_type = int.from_bytes(buffer[2:4], "big")
        payload = bytes(buffer[V2GTP_HEADER : V2GTP_HEADER + length])
        del buffer[: V2GTP_HEADER + length]
        yield payload_type, payload


def assign_grammars(messages: Iterable[Message], decode_sap: Callable[[bytes], dict[str, Any]]) -> Iterator[Message]:
    """Give each message the grammar to decode it with (see the module doc); a SAP message that does
    not decode leaves the rest of its connection unknown."""
    offers: dict[int, dict[int, str]] = {}  # flow -> SchemaID -> namespace offered by the EV
    chosen: dict[int, str | None] = {}
    for m in messages:
        if m.flow == 0 or m.note:
            yield m
            continue
        if m.payload_type in ISO20_GRAMMARS:
            yield _with(m, ISO20_GRAMMARS[m.payload_type])
            continue
        if m.payload_type != EXI:
            yield _with(m, None, f"payload type 0x{m.payload_type:04X} is not EXI")
            continue
        if m.flow not in chosen:  # still negotiating: SAP request, then its answer
            yield from _sap_step(m, decode_sap, offers, chosen)
            continue
        grammar = chosen[m.flow]
        yield _with(m, grammar, "" if grammar else "the protocol of this connection is unknown")


def _sap_step(
    m: Message,
    decode_sap: Callable[[bytes], dict[str, Any]],
    offers: dict[int, dict[int, str]],
    chosen: dict[int, str | None],
) -> Iterator[Message]:
    try:
        tree = decode_sap(m.payload)
    except ValueError as exc:
        chosen[m.flow] = None
        yield _with(m, None, f"not a SupportedAppProtocol message: {exc}")
        return
    request = tree.get("supportedAppProtocolReq")
    response = tree.get("supportedAppProtocolRes")
    if isinstance(request, dict):
        entries = request.get("AppProtocol", [])
        entries = entries if isinstance(entries, list) else [entries]
        offers[m.flow] = {
            int(e["SchemaID"]): str(e["ProtocolNamespace"])
            for e in entries
            if isinstance(e, dict) and "SchemaID" in e and "ProtocolNamespace" in e
        }
    elif isinstance(response, dict):
        schema = response.get("SchemaID")
        chosen[m.flow] = offers.get(m.flow, {}).get(int(schema)) if schema is not None else None
    yield _with(m, SAP_NAMESPACE)


def _with(m: Message, grammar: str | None, note: str = "") -> Message:
    return Message(m.t, m.src, m.dst, m.payload_type, m.payload, m.flow, grammar, note)
