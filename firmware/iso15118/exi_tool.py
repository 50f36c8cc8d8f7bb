"""``evse exi``: decode and encode V2G EXI messages by hand, and read the V2G messages of a capture.

evse exi decode --proto PROTO [--xml] HEX...     one message as JSON (or XML); HEX may be a V2GTP frame
evse exi encode --proto PROTO [--v2gtp] FILE      a JSON tree (as ``decode`` prints it) to hex
evse exi decode-pcap [--proto PROTO] [--json] FILE  every V2GTP message of a pcap / pcapng capture

PROTO is one of :data:`PROTOCOLS`. The JSON is the codec's tree form (``firmware.iso15118.exi.codec``):
objects keyed by local names, attributes (``Id``, xmldsig ``Algorithm``/``URI``/``Type``) and child
elements alike, arrays for repeated elements, hexBinary as hex and base64Binary as base64 text. The XML
form puts each element in its schema namespace as a prefix-free default namespace; which keys are
attributes, and in which namespace, comes from the codec's grammar tables (read, never changed).

Every input problem (bad hex, a tree or stream that does not fit the grammar, an unreadable capture)
raises :class:`ExiToolError` naming it; the commands print it and exit with status 2.

The module imports only the standard library at load time: ``evse`` builds its parser on every start,
so the codec and ``dpkt`` are imported by the commands that use them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firmware.iso15118.capture import Message
    from firmware.iso15118.exi import Namespace
    from firmware.iso15118.exi.grammar import Grammar, GrammarSet, Production

#: ``--proto`` names and the ``Namespace`` member of each grammar.
_MEMBERS = {
    "sap": "SAP",
    "din": "DIN",
    "iso2": "ISO2",
    "iso20-common": "ISO20_COMMON",
    "iso20-ac": "ISO20_AC",
    "iso20-dc": "ISO20_DC",
    "iso20-acdp": "ISO20_ACDP",
    "iso20-wpt": "ISO20_WPT",
}
PROTOCOLS: tuple[str, ...] = tuple(_MEMBERS)

# V2GTP payload types (ISO 15118-2 Table 10, DIN 70121 Table 16, ISO 15118-20 Table 14): SAP, DIN and -2
# share 0x8001; each -20 grammar has its own. A -20 payload type therefore names the protocol.
_EXI_PAYLOAD = 0x8001
_ISO20_PAYLOADS = {0x8002: "iso20-common", 0x8003: "iso20-ac", 0x8004: "iso20-dc", 0x8005: "iso20-acdp",
                   0x8006: "iso20-wpt"}  # fmt: skip
_PAYLOAD_NAMES = {
    0x8001: "EXI",
    0x8002: "-20 common",
    0x8003: "-20 AC",
    0x8004: "-20 DC",
    0x8005: "-20 ACDP",
    0x8006: "-20 WPT",
    0x8101: "-20 schedule renegotiation",
    0x8102: "-20 metering confirmation",
    0x8103: "-20 ACDP system status",
    0x8104: "-20 parking status",
    0x9000: "SDP request",
    0x9001: "SDP response",
    0x9002: "SDP request (wireless)",
    0x9003: "SDP response (wireless)",
}
_MANUFACTURER_FIRST = 0xA000  # 0xA000-0xFFFF manufacturer specific (ISO 15118-2 Table 10, -20 Table 14)

# A hand-typed message is never near this; a -20 certificate installation response is the largest V2G
# message at a few kB (the codec bounds its own input at 64 kB).
MAX_INPUT_BYTES = 1 << 20

_TLS_RECORD_HANDSHAKE = 0x16  # TLS ContentType handshake, then major version 3 (RFC 8446 5.1, RFC 5246 6.2.1)
_TLS_MAJOR = 0x03
_V2GTP_START = b"\x01\xfe"  # version 0x01 and its inverse (ISO 15118-2 7.8.3, -20 Table 13)
_V2GTP_HEADER = 8  # ISO 15118-20 Table 12
_HEAD_BYTES = 16  # how much of a stream's start decode-pcap keeps to tell TLS, V2GTP and garbage apart


class ExiToolError(ValueError):
    """Bad input for ``evse exi``; the message names what is wrong."""


def payload_type_name(payload_type: int) -> str:
    """``0x8001 EXI``, ``0x9000 SDP request``, ``0xA123 manufacturer specific``."""
    name = _PAYLOAD_NAMES.get(payload_type)
    if name is None:
        name = "manufacturer specific" if payload_type >= _MANUFACTURER_FIRST else "reserved"
    return f"0x{payload_type:04X} {name}"


def namespace_of(proto: str) -> Namespace:
    """The grammar of a ``--proto`` name; an unknown name raises ExiToolError listing the known ones."""
    from firmware.iso15118.exi import Namespace

    member = _MEMBERS.get(proto)
    if member is None:
        raise ExiToolError(f"unknown protocol {proto!r} (known: {', '.join(PROTOCOLS)})")
    return Namespace[member]


def proto_of(namespace: str) -> str | None:
    """The ``--proto`` name of a namespace URI, or None when the codec has no grammar for it."""
    from firmware.iso15118.exi import Namespace

    for proto, member in _MEMBERS.items():
        if Namespace[member].value == namespace:
            return proto
    return None


# ---------------------------------------------------------------------------------------------- input


def parse_hex(text: str) -> bytes:
    """Bytes from hex as engineers paste it: ``8098...``, ``80 98 02``, ``0x80 0x98``, ``80:98``, ``80,98``."""
    digits: list[str] = []
    for match in re.finditer(r"[^\s:,]+", text):
        token, start = match.group(), match.start()
        if token[:2] in ("0x", "0X"):
            if len(token) == 2:
                raise ExiToolError(f"'0x' without digits at character {start + 1} of the input")
            token, start = token[2:], start + 2
        bad = re.search(r"[^0-9A-Fa-f]", token)
        if bad is not None:
            raise ExiToolError(f"not hex: {bad.group()!r} at character {start + bad.start() + 1} of the input")
        digits.append(token)
    joined = "".join(digits)
    if not joined:
        raise ExiToolError("no hex digits given")
    if len(joined) % 2:
        raise ExiToolError(f"odd number of hex digits ({len(joined)}): every byte takes two")
    if len(joined) // 2 > MAX_INPUT_BYTES:
        raise ExiToolError(f"{len(joined) // 2} bytes is more than any V2G message ({MAX_INPUT_BYTES} at most)")
    return bytes.fromhex(joined)


@dataclass(frozen=True)
class Unwrapped:
    """What the input was: a bare EXI stream (``payload_type`` None) or the payload of a V2GTP frame."""

    exi: bytes
    payload_type: int | None = None

    def describe(self) -> str:
        if self.payload_type is None:
            return f"bare EXI stream, {len(self.exi)} bytes"
        return f"V2GTP frame, payload type {payload_type_name(self.payload_type)}, {len(self.exi)}-byte payload"


def unwrap(data: bytes) -> Unwrapped:
    """Take the EXI stream out of a V2GTP frame (header 01 FE ...), or take ``data`` as the stream itself.

    An EXI stream of these grammars starts with the header byte 0x80 (no cookie, no options), so a first
    byte of 0x01 can only be a V2GTP header: a broken one is reported as such.
    """
    if data[:1] != b"\x01":
        return Unwrapped(data)
    from firmware.iso15118 import v2gtp

    try:
        message = v2gtp.decode(data, max_payload=MAX_INPUT_BYTES)
    except v2gtp.V2gtpError as exc:
        raise ExiToolError(f"input starts like a V2GTP frame but is not one: {exc}") from None
    if message.payload_type != _EXI_PAYLOAD and message.payload_type not in _ISO20_PAYLOADS:
        raise ExiToolError(f"V2GTP payload type {payload_type_name(message.payload_type)} does not carry EXI")
    return Unwrapped(message.payload, message.payload_type)


def choose_proto(proto: str | None, unwrapped: Unwrapped) -> tuple[str, str]:
    """The protocol to decode with and a note for the user ("" if none): ``--proto`` wins; without it a
    -20 payload type names the protocol, anything else is an error."""
    implied = _ISO20_PAYLOADS.get(unwrapped.payload_type or 0)
    if proto is None:
        if implied is None:
            where = "a bare EXI stream" if unwrapped.payload_type is None else "payload type 0x8001 (sap, din, iso2)"
            raise ExiToolError(f"{where} does not say its protocol: give --proto")
        return implied, ""
    namespace_of(proto)  # validates the name
    if unwrapped.payload_type is not None:
        expected = _ISO20_PAYLOADS.get(unwrapped.payload_type)
        sent_by = {"sap", "din", "iso2"} if expected is None else {expected}
        if proto not in sent_by:
            return proto, (
                f"note: payload type 0x{unwrapped.payload_type:04X} is for {' / '.join(sorted(sent_by))}, "
                f"decoding as {proto} as asked"
            )
    return proto, ""


# ------------------------------------------------------------------------------------------- decoding


def decode_exi(proto: str, exi: bytes) -> dict[str, Any]:
    """Decode one EXI stream with ``proto``'s grammar; on failure the error says which other protocols'
    grammars do decode it (the usual mistake is the wrong ``--proto``)."""
    from firmware.iso15118.exi import ExiError, codec

    try:
        return codec(namespace_of(proto)).decode(exi)
    except ExiError as exc:
        others = []
        for other in PROTOCOLS:
            if other == proto:
                continue
            try:
                others.append(f"{other} ({message_name(codec(namespace_of(other)).decode(exi))})")
            except ExiError:
                continue
        hint = f"; it does decode as {', '.join(others)}" if others else ""
        raise ExiToolError(f"not a valid {proto} message: {exc}{hint}") from None


def encode_tree(proto: str, tree: Any, *, v2gtp: bool = False) -> bytes:
    """Encode a tree with ``proto``'s grammar, optionally framed in a V2GTP header (payload type of the
    protocol: 0x8001 for sap, din and iso2, the -20 payload types for -20)."""
    from firmware.iso15118.exi import ExiError, codec

    namespace = namespace_of(proto)
    try:
        exi = codec(namespace).encode(tree)
    except ExiError as exc:
        raise ExiToolError(f"the tree does not fit the {proto} grammar: {exc}") from None
    if not v2gtp:
        return exi
    from firmware.iso15118 import v2gtp as framing

    payload_type = next((t for t, p in _ISO20_PAYLOADS.items() if p == proto), _EXI_PAYLOAD)
    return framing.encode(payload_type, exi)


def message_name(tree: Any) -> str:
    """The message a tree holds: the Body's child for DIN / -2 (``SessionSetupReq``), else the root."""
    if not isinstance(tree, dict) or len(tree) != 1:
        return "?"
    ((root, content),) = tree.items()
    if root == "V2G_Message" and isinstance(content, dict):
        body = content.get("Body")
        if isinstance(body, dict) and body:
            return str(next(iter(body)))
    return str(root)


def to_json(tree: Any) -> str:
    return json.dumps(tree, indent=2, ensure_ascii=False)


# ------------------------------------------------------------------------------------------------ XML

# Prefixes for the few attributes the schemas qualify (attributeFormDefault="qualified"): the -2 MsgBody
# and MsgDataTypes ones are those its XSDs use; the rest get ns1, ns2, ... Elements need no prefix.
# Local elements of V2G_CI_AppProtocol.xsd are unqualified: it sets no elementFormDefault, whose default
# is "unqualified" (XML Schema 1.0 Part 1, 3.3.2). The grammar table lists them with the target namespace,
# which changes no bit of an EXI stream (schema-informed SE events carry no qname, EXI 1.0 8.5.4.3) but
# would put them in the wrong namespace in XML; below the root they are written in no namespace.
_UNQUALIFIED_LOCALS = frozenset({"urn:iso:15118:2:2010:AppProtocol"})
_ATTRIBUTE_PREFIXES = {"urn:iso:15118:2:2013:MsgBody": "v2gci_b", "urn:iso:15118:2:2013:MsgDataTypes": "v2gci_t"}
# Characters XML 1.0 cannot carry at all, not even as references (XML 1.0 5th ed. 2.2 Char).
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_TEXT_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"}
_ATTRIBUTE_ESCAPES = {**_TEXT_ESCAPES, '"': "&quot;", "\t": "&#9;", "\n": "&#10;"}


class _Schema:
    """Read-only view of one namespace's grammars: per grammar, its child elements and attributes by
    local name (the productions carry their namespace URI and, for elements, their content grammar)."""

    def __init__(self, grammars: GrammarSet) -> None:
        from firmware.iso15118.exi.grammar import AT, SE

        self.grammars = grammars
        self._children: dict[int, dict[str, Production]] = {}
        self._attributes: dict[int, dict[str, Production]] = {}
        for grammar in grammars.grammars:
            children: dict[str, Production] = {}
            attributes: dict[str, Production] = {}
            for state in grammar.states:
                for prod in state.prods:
                    if prod.kind == SE:
                        children.setdefault(prod.local, prod)
                    elif prod.kind == AT:
                        attributes.setdefault(prod.local, prod)
            self._children[id(grammar)] = children
            self._attributes[id(grammar)] = attributes

    def child(self, grammar: Grammar, local: str, path: str) -> Production:
        prod = self._children[id(grammar)].get(local)
        if prod is None or prod.target is None:
            raise ExiToolError(f"{path}: {local!r} is not an element here")
        return prod

    def attribute(self, grammar: Grammar, local: str, path: str) -> Production:
        prod = self._attributes[id(grammar)].get(local)
        if prod is None:
            raise ExiToolError(f"{path}: {local!r} is not an attribute here")
        return prod


@cache
def _schema(namespace: Namespace) -> _Schema:
    from firmware.iso15118.exi.grammar import compile_table, load_table

    # Own compiled copy of the checked-in table (a few ms): the codec's copy is private to it.
    return _Schema(compile_table(namespace, load_table(namespace)))


def to_xml(proto: str, tree: dict[str, Any]) -> str:
    """The XML document of a tree (as ``decode`` gives it), valid against the protocol's XSDs when the
    tree is: elements in their schema namespaces, attributes as the grammar declares them."""
    schema = _schema(namespace_of(proto))
    if not isinstance(tree, dict) or len(tree) != 1:
        raise ExiToolError("tree must be an object with exactly one key, the root element")
    ((root, content),) = tree.items()
    prod = schema.grammars.roots.get(root)
    if prod is None or prod.target is None:
        raise ExiToolError(f"{root!r} is not a global element of {proto}")
    lines = ['<?xml version="1.0" encoding="UTF-8"?>']
    _XmlWriter(schema, lines).element(prod, content, None, 0, root)
    return "\n".join(lines) + "\n"


class _XmlWriter:
    def __init__(self, schema: _Schema, lines: list[str]) -> None:
        self.schema = schema
        self.lines = lines
        self.prefixes: dict[str, str] = {}

    def element(self, prod: Production, value: Any, default_ns: str | None, depth: int, path: str) -> None:
        from firmware.iso15118.exi.encoder import ordered_props

        grammar = prod.target
        assert grammar is not None
        tag = prod.local
        uri = "" if depth > 0 and prod.uri in _UNQUALIFIED_LOCALS else prod.uri
        head = [tag] if uri == default_ns else [tag, f'xmlns="{_escape(uri, _ATTRIBUTE_ESCAPES, path)}"']
        pad = "  " * depth
        if grammar.kind != "complex":
            text = _lexical(value, path)
            self.lines.append(f"{pad}<{' '.join(head)}>{_escape(text, _TEXT_ESCAPES, path)}</{tag}>")
            return
        if not isinstance(value, dict):
            raise ExiToolError(f"{path}: expected an object, got {type(value).__name__}")
        for key in value:
            if key not in grammar.keys:
                raise ExiToolError(f"{path}: {key!r} is neither an element nor an attribute here")
        children: list[tuple[Production, Any, str]] = []
        text = ""
        declared: set[str] = set()
        for key, role, is_list in ordered_props(grammar, value):
            item = value[key]
            if role == "attr":
                attribute = self.schema.attribute(grammar, key, path)
                name = key
                if attribute.uri:
                    prefix = self._prefix(attribute.uri)
                    if prefix not in declared:
                        declared.add(prefix)
                        head.append(f'xmlns:{prefix}="{_escape(attribute.uri, _ATTRIBUTE_ESCAPES, path)}"')
                    name = f"{prefix}:{key}"
                lexical = _lexical(item, f"{path}/@{key}")
                head.append(f'{name}="{_escape(lexical, _ATTRIBUTE_ESCAPES, path)}"')
            elif role == "elem":
                child = self.schema.child(grammar, key, path)
                items = item if is_list and isinstance(item, list) else [item]
                for index, element in enumerate(items):
                    children.append((child, element, f"{path}/{key}[{index}]" if is_list else f"{path}/{key}"))
            else:
                text = _lexical(item, f"{path}/value")
        if children and text:
            raise ExiToolError(f"{path}: mixed content (text and elements) has no XML rendering here")
        if children:
            self.lines.append(f"{pad}<{' '.join(head)}>")
            for child, element, child_path in children:
                self.element(child, element, uri, depth + 1, child_path)
            self.lines.append(f"{pad}</{tag}>")
        elif text:
            self.lines.append(f"{pad}<{' '.join(head)}>{_escape(text, _TEXT_ESCAPES, path)}</{tag}>")
        else:
            self.lines.append(f"{pad}<{' '.join(head)}/>")

    def _prefix(self, uri: str) -> str:
        if uri not in self.prefixes:
            self.prefixes[uri] = _ATTRIBUTE_PREFIXES.get(uri, f"ns{len(self.prefixes) + 1}")
        return self.prefixes[uri]


def _lexical(value: Any, path: str) -> str:
    """The XML Schema lexical form of a tree scalar (booleans true/false, integers in decimal)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    raise ExiToolError(f"{path}: expected a simple value, got {type(value).__name__}")


def _escape(text: str, escapes: dict[str, str], path: str) -> str:
    bad = _NOT_XML_CHAR.search(text)
    if bad is not None:
        raise ExiToolError(f"{path}: U+{ord(bad.group()):04X} cannot be written in XML 1.0 (the JSON form shows it)")
    return "".join(escapes.get(ch, ch) for ch in text)


# -------------------------------------------------------------------------------------------- capture


@dataclass(frozen=True)
class CaptureEntry:
    """One line of ``decode-pcap``: a V2GTP message (``kind`` "v2gtp" or "sdp") with its decoded tree or
    the reason it has none, or a note about a TCP stream (``kind`` "stream": TLS, not V2GTP, bytes left)."""

    kind: str
    t: float
    src: str
    dst: str
    flow: int | None  # TCP connection number, in order of first appearance; None for UDP
    payload_type: int | None = None
    protocol: str | None = None  # a --proto name, "sdp", or the namespace URI the codec does not know
    message: str | None = None
    decoded: dict[str, Any] | None = None
    error: str | None = None
    payload: bytes = b""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "t": self.t,
            "src": self.src,
            "dst": self.dst,
            "flow": self.flow,
            "payload_type": self.payload_type,
            "protocol": self.protocol,
            "message": self.message,
            "decoded": self.decoded,
            "error": self.error,
            "payload": self.payload.hex() if self.kind != "stream" else None,
        }


def decode_capture(path: Path, assume: str | None = None) -> list[CaptureEntry]:
    """Every V2GTP message of a capture decoded (or why not), plus notes on TCP streams that hold no or
    not only V2GTP, in capture order. ``assume`` is the protocol of 0x8001 messages on connections whose
    SupportedAppProtocol handshake is not in the capture (or did not decode)."""
    from firmware.iso15118.capture import CaptureError, assign_grammars, read
    from firmware.iso15118.exi import Namespace, codec

    assumed = namespace_of(assume) if assume is not None else None
    sap = codec(Namespace.SAP)
    try:
        streams = _survey(path)
        entries = [_entry(m, assumed) for m in assign_grammars(read(path), sap.decode)]
    except CaptureError as exc:
        raise ExiToolError(str(exc)) from None
    consumed: dict[tuple[str, str], int] = {}
    for entry in entries:
        if entry.flow is not None:
            key = (entry.src, entry.dst)
            consumed[key] = consumed.get(key, 0) + _V2GTP_HEADER + len(entry.payload)
    for stream in streams:
        note = stream.note(consumed.get((stream.src, stream.dst), 0))
        if note is not None:
            entries.append(note)
    entries.sort(key=lambda e: e.t)  # stable: messages keep their order
    return entries


def _entry(m: Message, assumed: Namespace | None) -> CaptureEntry:
    from firmware.iso15118.exi import ExiError, codec

    flow = m.flow or None
    base = CaptureEntry("v2gtp", m.t, m.src, m.dst, flow, m.payload_type, payload=m.payload)
    if flow is None:
        return _sdp_entry(base, m)
    grammar = m.grammar
    if grammar is None and assumed is not None and m.payload_type == _EXI_PAYLOAD:
        grammar = assumed
    if grammar is None:
        hint = " (name it with --proto)" if m.payload_type == _EXI_PAYLOAD else ""
        return _with(base, error=(m.note or "unknown protocol") + hint)
    proto = proto_of(grammar)
    if proto is None:
        return _with(base, protocol=grammar, error=f"unknown protocol {grammar} (no EXI grammar for it)")
    try:
        tree = codec(namespace_of(proto)).decode(m.payload)
    except ExiError as exc:
        return _with(base, protocol=proto, error=f"decode error: {exc}")
    return _with(base, protocol=proto, message=message_name(tree), decoded=tree)


def _sdp_entry(base: CaptureEntry, m: Message) -> CaptureEntry:
    """SDP over UDP, decoded by ``sdp.py`` (ISO 15118-20 Table 21): the security and transport bytes, and
    in a response the SECC's address and port."""
    from firmware.iso15118 import sdp, v2gtp

    entry = _with(base, kind="sdp", protocol="sdp", message=m.note or "UDP")
    datagram = v2gtp.encode(m.payload_type, m.payload)
    tree: dict[str, Any]
    try:
        if m.payload_type == v2gtp.Iso2PayloadType.SDP_REQUEST:
            request = sdp.decode_request(datagram)
            tree = {"security": request.security.name, "transport": request.transport.name}
        elif m.payload_type == v2gtp.Iso2PayloadType.SDP_RESPONSE:
            response = sdp.decode_response(datagram)
            tree = {
                "address": str(response.address),
                "port": response.port,
                "security": response.security.name,
                "transport": response.transport.name,
            }
        else:
            return _with(entry, error=f"payload type {payload_type_name(m.payload_type)} is not decoded here")
    except sdp.SdpError as exc:
        return _with(entry, error=f"decode error: {exc}")
    return _with(entry, decoded=tree)


def _with(entry: CaptureEntry, **changes: Any) -> CaptureEntry:
    return replace(entry, **changes)


@dataclass
class _Direction:
    """What ``_survey`` learns about one direction of a TCP connection."""

    flow: int
    src: str
    dst: str
    first_t: float = 0.0
    last_t: float = 0.0
    base: int | None = None  # sequence number of the stream's first byte
    head: bytes = b""  # the first bytes of the stream
    extent: int = 0  # bytes from ``base`` up to the furthest byte seen

    def note(self, consumed: int) -> CaptureEntry | None:
        """A stream entry when the direction carried something other than whole V2GTP messages."""
        if self.extent == 0:
            return None
        if self.head[:1] == bytes([_TLS_RECORD_HANDSHAKE]) and self.head[1:2] == bytes([_TLS_MAJOR]):
            error = "TLS: encrypted, cannot be decoded without the session keys"
        elif consumed == 0 and not self.head:
            error = f"{self.extent} bytes, but the start of the stream is missing from the capture"
        elif consumed == 0 and not self.head.startswith(_V2GTP_START):
            error = f"not V2GTP: the stream starts with {self.head[:8].hex(' ')}"
        elif self.extent > consumed:
            error = (
                f"{self.extent - consumed} of {self.extent} bytes not read as V2GTP messages: garbage after "
                f"the last whole message, a segment missing from the capture, or the capture ends mid-message"
            )
        else:
            return None
        t = self.first_t if consumed == 0 else self.last_t
        return CaptureEntry("stream", t, self.src, self.dst, self.flow, error=error)


def _survey(path: Path) -> list[_Direction]:
    """One pass over the TCP segments: how each direction's stream starts and how far it reaches.

    The capture module yields only whole V2GTP messages; TLS streams and streams that are not V2GTP
    leave no trace there, so they are found here. Connections are numbered and stream starts chosen
    as ``capture.read`` does (first byte after the SYN, else the first segment seen).
    """
    import ipaddress

    import dpkt

    # Packet iteration and link layers exactly as the capture module reads them (same package).
    from firmware.iso15118.capture import ip_of, packets

    flows: dict[frozenset[tuple[bytes, int]], int] = {}
    directions: dict[tuple[bytes, int, bytes, int], _Direction] = {}
    syn: dict[tuple[bytes, int, bytes, int], int] = {}
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ExiToolError(f"{path}: {exc.strerror}") from None
    with handle:
        for t, frame, link in packets(handle, path):
            try:
                ip = ip_of(frame, link)
            except (dpkt.dpkt.UnpackError, dpkt.dpkt.NeedData):
                continue
            if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) or not isinstance(ip.data, dpkt.tcp.TCP):
                continue
            segment = ip.data
            key = (bytes(ip.src), segment.sport, bytes(ip.dst), segment.dport)
            flow = flows.setdefault(frozenset({key[:2], key[2:]}), len(flows) + 1)
            if segment.flags & dpkt.tcp.TH_SYN:
                syn.setdefault(key, (segment.seq + 1) & 0xFFFFFFFF)
                continue
            data = bytes(segment.data)
            if not data:
                continue
            direction = directions.get(key)
            if direction is None:
                src = f"[{ipaddress.ip_address(key[0])}]:{key[1]}"
                dst = f"[{ipaddress.ip_address(key[2])}]:{key[3]}"
                direction = directions[key] = _Direction(flow, src, dst, first_t=t)
                direction.base = syn.get(key, segment.seq)
            assert direction.base is not None
            offset = (segment.seq - direction.base) & 0xFFFFFFFF
            if offset >= 0x80000000:  # before the stream start: a retransmission of nothing we count
                continue
            if offset == 0 and len(data) > len(direction.head):
                direction.head = data[:_HEAD_BYTES]
            direction.extent = max(direction.extent, offset + len(data))
            direction.last_t = t
    return list(directions.values())


def format_entry(entry: CaptureEntry, t0: float) -> str:
    """The human block of one entry: a header line, then the JSON tree or the reason there is none."""
    parts = [f"+{entry.t - t0:.6f} s", f"{entry.src} -> {entry.dst}"]
    if entry.flow is not None:
        parts.append(f"flow {entry.flow}")
    if entry.payload_type is not None:
        parts.append(payload_type_name(entry.payload_type))
    if entry.kind == "v2gtp" and entry.protocol is not None:
        parts.append(entry.protocol)
    if entry.message is not None and entry.kind != "sdp":
        parts.append(entry.message)
    head = "  ".join(parts)
    if entry.decoded is None:
        return f"{head}\n  not decoded: {entry.error}"
    return f"{head}\n{to_json(entry.decoded)}"


# ----------------------------------------------------------------------------------------------- CLI


def _fail(command: str, message: str) -> int:
    print(f"evse exi {command}: {message}", file=sys.stderr)
    return 2


def _read_text(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExiToolError(f"cannot read {name}: {exc}") from None


def _cmd_decode(args: argparse.Namespace) -> int:
    try:
        text = _read_text("-") if args.hex == ["-"] else " ".join(args.hex)
        unwrapped = unwrap(parse_hex(text))
        proto, note = choose_proto(args.proto, unwrapped)
        tree = decode_exi(proto, unwrapped.exi)
        output = to_xml(proto, tree) if args.xml else to_json(tree) + "\n"
    except ExiToolError as exc:
        return _fail("decode", str(exc))
    # Which input it was goes to stderr, so stdout stays a clean JSON / XML document for pipes.
    print(f"{unwrapped.describe()}, {proto} {message_name(tree)}", file=sys.stderr)
    if note:
        print(note, file=sys.stderr)
    sys.stdout.write(output)
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    try:
        text = _read_text(args.file)
        try:
            tree = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ExiToolError(f"{args.file} is not JSON: {exc}") from None
        data = encode_tree(args.proto, tree, v2gtp=args.v2gtp)
    except ExiToolError as exc:
        return _fail("encode", str(exc))
    print(data.hex())
    return 0


def _cmd_decode_pcap(args: argparse.Namespace) -> int:
    try:
        entries = decode_capture(Path(args.file), args.proto)
    except ExiToolError as exc:
        return _fail("decode-pcap", str(exc))
    if args.json:
        for entry in entries:
            print(json.dumps(entry.to_json(), ensure_ascii=False))
        return 0
    if not entries:
        print(f"{args.file}: no V2GTP messages (SDP on UDP 15118, V2G on TCP)")
        return 0
    t0 = entries[0].t
    start = datetime.fromtimestamp(t0, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    print(f"{args.file}: times relative to {start} UTC\n")
    for number, entry in enumerate(entries, 1):
        print(f"#{number}  {format_entry(entry, t0)}\n")
    messages = [e for e in entries if e.kind != "stream"]
    decoded = sum(1 for e in messages if e.decoded is not None)
    streams = len(entries) - len(messages)
    print(f"{len(messages)} messages, {decoded} decoded, {len(messages) - decoded} not; {streams} stream notes")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``exi`` and its commands to the ``evse`` parser."""
    exi = sub.add_parser("exi", help="decode / encode V2G EXI messages, read captures (ISO 15118, DIN 70121)")
    commands = exi.add_subparsers(dest="exi_command", required=True)
    protos = ", ".join(PROTOCOLS)

    p = commands.add_parser("decode", help="one EXI message (or V2GTP frame) in hex to JSON or XML")
    p.add_argument("hex", nargs="+", metavar="HEX", help="hex digits, spaces / 0x / colons allowed; - reads stdin")
    p.add_argument("--proto", choices=PROTOCOLS, help=f"the grammar ({protos}); optional for a -20 V2GTP frame")
    p.add_argument("--xml", action="store_true", help="print XML instead of JSON")
    p.set_defaults(func=_cmd_decode)

    p = commands.add_parser("encode", help="a JSON tree (as decode prints it) to EXI hex")
    p.add_argument("file", metavar="FILE", help="the JSON file; - reads stdin")
    p.add_argument("--proto", choices=PROTOCOLS, required=True, help=f"the grammar ({protos})")
    p.add_argument("--v2gtp", action="store_true", help="prefix the V2GTP header (01 FE, payload type, length)")
    p.set_defaults(func=_cmd_encode)

    p = commands.add_parser("decode-pcap", help="decode the V2GTP messages of a pcap / pcapng capture")
    p.add_argument("file", metavar="FILE", help="the capture (tcpdump -w, Wireshark)")
    p.add_argument(
        "--proto",
        choices=PROTOCOLS,
        help="protocol of connections whose SupportedAppProtocol handshake is not in the capture",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_cmd_decode_pcap)
