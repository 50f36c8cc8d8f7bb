"""``evse exi decode | encode | decode-pcap`` (firmware/iso15118/exi_tool.py): the golden vectors through the
CLI to JSON and XML (the XML checked against the XSDs with xmlschema), encode round trips, V2GTP-framed
input, errors with exit status 2, and a capture built here with dpkt holding a real SAP handshake, real
ISO-2 messages, SDP, TLS and garbage; once each through the real entry point in a subprocess."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path
from typing import Any

import dpkt
import pytest
import xmlschema
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.cli import main
from firmware.iso15118.exi import Namespace, codec
from firmware.iso15118.exi.namespaces import ROOT_SCHEMAS
from firmware.iso15118.exi_tool import (
    PROTOCOLS,
    ExiToolError,
    decode_capture,
    decode_exi,
    parse_hex,
    proto_of,
    to_xml,
    unwrap,
)

ROOT = Path(__file__).resolve().parents[3]
SCHEMAS = ROOT / "firmware" / "iso15118" / "schemas"
GOLDEN: list[dict[str, Any]] = json.loads((Path(__file__).parent / "golden_exi.json").read_text(encoding="utf-8"))[
    "vectors"
]
MESSAGES = [v for v in GOLDEN if v["source"] != "json-fragment"]  # fragments are signature input, not messages


def _id(vector: dict[str, Any]) -> str:
    root = next(iter(vector["json"]))
    if root == "V2G_Message":
        root = next(iter(vector["json"]["V2G_Message"]["Body"]))
    return f"{proto_of(vector['namespace'])}-{root}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``evse`` in-process: exit status (argparse's SystemExit included), stdout, stderr."""
    try:
        status = main(list(argv))
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def v2gtp(payload_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBHI", 0x01, 0xFE, payload_type, len(payload)) + payload


# ------------------------------------------------------------------------------------------ hex input


@pytest.mark.parametrize(
    "text",
    ["8098020a", "80 98 02 0A", "0x80 0x98 0x02 0x0a", "80:98:02:0a", "80,98, 02,0a", " 8098\n020a\t", "0x8098020A"],
)
def test_hex_as_engineers_paste_it(text: str) -> None:
    assert parse_hex(text) == bytes.fromhex("8098020a")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("80 9g", "not hex: 'g' at character 5"),
        ("0x80 0xzz", "not hex: 'z' at character 8"),
        ("809", "odd number of hex digits (3)"),
        ("", "no hex digits"),
        ("0x", "'0x' without digits at character 1"),
        ("80 98 0x", "'0x' without digits at character 7"),
        ("80-98", "not hex: '-' at character 3"),
    ],
)
def test_bad_hex_is_named(text: str, message: str) -> None:
    with pytest.raises(ExiToolError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_hex(text)


@given(st.binary(min_size=1, max_size=64), st.sampled_from(["", " ", ":", ", ", "\n"]), st.booleans())
def test_any_bytes_survive_any_separator(data: bytes, sep: str, prefixed: bool) -> None:
    if prefixed and not sep:
        sep = " "  # 0x prefixes need something between the bytes
    text = sep.join(("0x" if prefixed else "") + f"{b:02X}" for b in data)
    assert parse_hex(text) == data


# ---------------------------------------------------------------------------------- golden to JSON/XML


@pytest.mark.parametrize("vector", MESSAGES, ids=[_id(v) for v in MESSAGES])
def test_golden_hex_decodes_to_the_golden_json(capsys: pytest.CaptureFixture[str], vector: dict[str, Any]) -> None:
    proto = proto_of(vector["namespace"])
    assert proto is not None
    status, out, err = run(capsys, "exi", "decode", "--proto", proto, vector["hex"])
    assert status == 0, err
    assert json.loads(out) == vector["json"]
    assert err.startswith(f"bare EXI stream, {len(vector['hex']) // 2} bytes, {proto} ")


@cache
def _schema(namespace: str) -> Any:
    return xmlschema.XMLSchema10(str(SCHEMAS / ROOT_SCHEMAS[namespace]))


@pytest.mark.parametrize("vector", MESSAGES, ids=[_id(v) for v in MESSAGES])
def test_golden_xml_parses_and_is_valid_against_the_schema(
    capsys: pytest.CaptureFixture[str], vector: dict[str, Any]
) -> None:
    proto = proto_of(vector["namespace"])
    assert proto is not None
    status, out, err = run(capsys, "exi", "decode", "--proto", proto, "--xml", vector["hex"])
    assert status == 0, err
    root = ET.fromstring(out.encode())
    assert root.tag == f"{{{vector['namespace']}}}{next(iter(vector['json']))}"
    # DIN 70121 types its Id attributes xs:IDREF (V2G_CI_MsgBody.xsd) and the random golden Ids point at
    # nothing: that identity constraint is about the test data, everything else must be valid.
    errors = [e for e in _schema(vector["namespace"]).iter_errors(out) if "IDREF" not in str(e.reason)]
    assert not errors, str(errors[0])


def test_xml_puts_elements_and_attributes_where_the_schemas_declare_them() -> None:
    cert_install = next(
        v for v in MESSAGES if _id(v) == "iso2-CertificateInstallationRes" and '"value"' in json.dumps(v)
    )
    root = ET.fromstring(to_xml("iso2", cert_install["json"]))
    body = root.find("{urn:iso:15118:2:2013:MsgDef}Body")
    assert body is not None
    res = body.find("{urn:iso:15118:2:2013:MsgBody}CertificateInstallationRes")
    assert res is not None
    emaid = res.find("{urn:iso:15118:2:2013:MsgBody}eMAID")
    assert emaid is not None
    tree_emaid = cert_install["json"]["V2G_Message"]["Body"]["CertificateInstallationRes"]["eMAID"]
    # -2 qualifies its attributes (attributeFormDefault="qualified" in V2G_CI_MsgDataTypes.xsd)
    assert emaid.attrib == {"{urn:iso:15118:2:2013:MsgDataTypes}Id": tree_emaid["Id"]}
    assert emaid.text == tree_emaid["value"]
    assert root.find("{urn:iso:15118:2:2013:MsgDef}Header/{urn:iso:15118:2:2013:MsgHeader}SessionID") is not None

    signed = next(v for v in MESSAGES if _id(v) == "iso2-AuthorizationReq" and "Signature" in json.dumps(v))
    root = ET.fromstring(to_xml("iso2", signed["json"]))
    ds = "{http://www.w3.org/2000/09/xmldsig#}"
    method = root.find(f".//{ds}Signature/{ds}SignedInfo/{ds}SignatureMethod")
    assert method is not None and set(method.attrib) == {"Algorithm"}  # xmldsig attributes are unqualified

    # SupportedAppProtocol: its local elements are unqualified (no elementFormDefault in its XSD)
    sap = ET.fromstring(to_xml("sap", GOLDEN[0]["json"]))
    assert sap.tag == "{urn:iso:15118:2:2010:AppProtocol}supportedAppProtocolReq"
    assert [child.tag for child in sap] == ["AppProtocol"]
    assert sap.findtext("AppProtocol/ProtocolNamespace") == "urn:iso:15118:2:2013:MsgDef"


def test_xml_escapes_markup_and_refuses_what_xml_cannot_carry() -> None:
    tree = {
        "supportedAppProtocolReq": {
            "AppProtocol": [
                {
                    "ProtocolNamespace": 'a&b<c>"d\r',
                    "VersionNumberMajor": 2,
                    "VersionNumberMinor": 0,
                    "SchemaID": 1,
                    "Priority": 1,
                }
            ]
        }
    }
    exi = codec(Namespace.SAP).encode(tree)
    text = to_xml("sap", decode_exi("sap", exi))
    assert ET.fromstring(text).findtext("AppProtocol/ProtocolNamespace") == 'a&b<c>"d\r'
    tree["supportedAppProtocolReq"]["AppProtocol"][0]["ProtocolNamespace"] = "bell\x07"
    with pytest.raises(ExiToolError, match=r"U\+0007 cannot be written in XML 1.0"):
        to_xml("sap", tree)
    with pytest.raises(ExiToolError, match="'Nonsense' is neither an element nor an attribute"):
        to_xml("sap", {"supportedAppProtocolRes": {"Nonsense": 1}})
    with pytest.raises(ExiToolError, match="not a global element of sap"):
        to_xml("sap", {"V2G_Message": {}})


# ------------------------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("vector", GOLDEN, ids=[_id(v) for v in GOLDEN])
def test_encode_of_a_json_file_gives_the_golden_hex(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, vector: dict[str, Any]
) -> None:
    proto = proto_of(vector["namespace"])
    assert proto is not None
    path = tmp_path / "message.json"
    path.write_text(json.dumps(vector["json"]), encoding="utf-8")
    status, out, err = run(capsys, "exi", "encode", "--proto", proto, str(path))
    assert (status, err, out) == (0, "", vector["hex"] + "\n")


@pytest.mark.parametrize("vector", MESSAGES[::9], ids=[_id(v) for v in MESSAGES[::9]])
def test_decode_output_encodes_back_to_the_same_bytes_in_a_v2gtp_frame(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, vector: dict[str, Any]
) -> None:
    proto = proto_of(vector["namespace"])
    assert proto is not None
    _, decoded, _ = run(capsys, "exi", "decode", "--proto", proto, vector["hex"])
    path = tmp_path / "decoded.json"
    path.write_text(decoded, encoding="utf-8")
    status, out, err = run(capsys, "exi", "encode", "--proto", proto, "--v2gtp", str(path))
    assert status == 0, err
    framed = bytes.fromhex(out)
    payload_type = {
        "iso20-common": 0x8002,
        "iso20-ac": 0x8003,
        "iso20-dc": 0x8004,
        "iso20-acdp": 0x8005,
        "iso20-wpt": 0x8006,
    }.get(proto, 0x8001)
    assert framed == v2gtp(payload_type, bytes.fromhex(vector["hex"]))


# ------------------------------------------------------------------------------------------ V2GTP input

SESSION_SETUP_REQ = {
    "V2G_Message": {"Header": {"SessionID": "00"}, "Body": {"SessionSetupReq": {"EVCCID": "0A0B0C0D0E0F"}}}
}


def test_a_v2gtp_frame_is_unwrapped_and_said_to_be_one(capsys: pytest.CaptureFixture[str]) -> None:
    exi = codec(Namespace.ISO2).encode(SESSION_SETUP_REQ)
    framed = v2gtp(0x8001, exi).hex(" ")
    status, out, err = run(capsys, "exi", "decode", "--proto", "iso2", framed)
    assert status == 0
    assert json.loads(out) == SESSION_SETUP_REQ
    assert err == f"V2GTP frame, payload type 0x8001 EXI, {len(exi)}-byte payload, iso2 SessionSetupReq\n"
    assert unwrap(exi).payload_type is None


def test_a_v2g20_payload_type_names_the_protocol_and_a_contradiction_is_noted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    vector = next(v for v in MESSAGES if v["namespace"] == Namespace.ISO20_DC)
    framed = v2gtp(0x8004, bytes.fromhex(vector["hex"])).hex()
    status, out, err = run(capsys, "exi", "decode", framed)
    assert status == 0, err
    assert json.loads(out) == vector["json"]
    assert "payload type 0x8004 -20 DC" in err
    status, _, err = run(
        capsys, "exi", "decode", "--proto", "iso20-dc", v2gtp(0x8003, bytes.fromhex(vector["hex"])).hex()
    )
    assert status == 0
    assert "note: payload type 0x8003 is for iso20-ac, decoding as iso20-dc as asked" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--proto", "iso2", "80 98 0xg"], "not hex: 'g' at character 9"),
        (["--proto", "iso2", "809"], "odd number of hex digits"),
        (["--proto", "iso2", "80ffffff"], "not a valid iso2 message"),
        (["--proto", "din", GOLDEN[1]["hex"]], "it does decode as iso2 (SessionSetupReq)"),
        (["--proto", "iso2", "0000"], "EXI header byte 0x00 is not 0x80"),
        (["--proto", "iso2", "01fe800100000030" + GOLDEN[1]["hex"]], "payload announced 48 bytes, got 21"),
        (["--proto", "iso2", "01fe800100000010" + GOLDEN[1]["hex"]], "5 bytes after the V2GTP payload of 16"),
        (["--proto", "iso2", "01ff80010000000180"], "not one: V2GTP version/inverse 0x01/0xFF"),
        (["--proto", "iso2", v2gtp(0x9000, b"\x10\x00").hex()], "0x9000 SDP request does not carry EXI"),
        ([GOLDEN[1]["hex"]], "a bare EXI stream does not say its protocol: give --proto"),
        ([v2gtp(0x8001, bytes.fromhex(GOLDEN[1]["hex"])).hex()], "payload type 0x8001 (sap, din, iso2)"),
    ],
)
def test_decode_errors_are_clear_and_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    status, out, err = run(capsys, "exi", "decode", *argv)
    assert (status, out) == (2, "")
    assert err.startswith("evse exi decode: ") and message in err, err


def test_an_unknown_protocol_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "exi", "decode", "--proto", "iso3", "8000")
    assert (status, out) == (2, "")
    assert "invalid choice: 'iso3'" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"V2G_Message": {"Header": {"SessionID": "00"}, "Body": {"SessionSetupReq": {"EVCCID": "0A", "X": 1}}}}',
            "V2G_Message/Body/SessionSetupReq: unknown element or attribute 'X'",
        ),
        ('{"V2G_Message": {"Header": {"SessionID": "00"}}}', "V2G_Message: incomplete, expected Body"),
        ('{"V2G_Message": {"Header": {"SessionID": "0"}, "Body": {}}}', "SessionID"),
        ('{"NoSuchMessage": {}}', "'NoSuchMessage' is not a global element"),
        ("[1, 2]", "tree must be an object"),
        ("{not json", "is not JSON: Expecting property name"),
    ],
)
def test_a_tree_that_does_not_fit_is_named_and_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "tree.json"
    path.write_text(content, encoding="utf-8")
    status, out, err = run(capsys, "exi", "encode", "--proto", "iso2", str(path))
    assert (status, out) == (2, "")
    assert err.startswith("evse exi encode: ") and message in err, err


def test_a_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = run(capsys, "exi", "encode", "--proto", "iso2", str(tmp_path / "absent.json"))
    assert status == 2 and "cannot read" in err and "No such file" in err
    status, _, err = run(capsys, "exi", "decode-pcap", str(tmp_path / "absent.pcap"))
    assert status == 2 and err.startswith("evse exi decode-pcap: ") and "No such file" in err


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(PROTOCOLS),
    st.one_of(
        st.binary(max_size=80),
        st.binary(max_size=80).map(lambda b: b"\x80" + b),
        st.tuples(st.sampled_from([0x8001, 0x8002, 0x8004, 0x9000]), st.binary(max_size=60)).map(lambda a: v2gtp(*a)),
    ),
)
def test_any_input_decodes_or_fails_cleanly(proto: str, data: bytes) -> None:
    try:
        tree = decode_exi(proto, unwrap(data).exi)
        ET.fromstring(to_xml(proto, tree).encode())
    except ExiToolError as exc:
        assert str(exc)
        return
    assert isinstance(tree, dict) and len(tree) == 1


# -------------------------------------------------------------------------------------------- capture

EV = bytes.fromhex("fe800000000000000000000000000001")
SECC = bytes.fromhex("fe800000000000000000000000000002")
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")

SAP_REQ = {
    "supportedAppProtocolReq": {
        "AppProtocol": [
            {
                "ProtocolNamespace": "urn:din:70121:2012:MsgDef",
                "VersionNumberMajor": 2,
                "VersionNumberMinor": 0,
                "SchemaID": 1,
                "Priority": 2,
            },
            {
                "ProtocolNamespace": "urn:iso:15118:2:2013:MsgDef",
                "VersionNumberMajor": 2,
                "VersionNumberMinor": 0,
                "SchemaID": 2,
                "Priority": 1,
            },
        ]
    }
}
SAP_RES = {"supportedAppProtocolRes": {"ResponseCode": "OK_SuccessfulNegotiation", "SchemaID": 2}}
SESSION_SETUP_RES = {
    "V2G_Message": {
        "Header": {"SessionID": "4A1F0C2B9D3E5F60"},
        "Body": {
            "SessionSetupRes": {
                "ResponseCode": "OK_NewSessionEstablished",
                "EVSEID": "DE*PNX*E12345*1",
                "EVSETimeStamp": 1750000000,
            }
        },
    }
}
DISCOVERY_REQ = {"V2G_Message": {"Header": {"SessionID": "4A1F0C2B9D3E5F60"}, "Body": {"ServiceDiscoveryReq": {}}}}
DISCOVERY_RES = {
    "V2G_Message": {
        "Header": {"SessionID": "4A1F0C2B9D3E5F60"},
        "Body": {
            "ServiceDiscoveryRes": {
                "ResponseCode": "OK",
                "PaymentOptionList": {"PaymentOption": ["ExternalPayment"]},
                "ChargeService": {
                    "ServiceID": 1,
                    "ServiceCategory": "EVCharging",
                    "FreeService": False,
                    "SupportedEnergyTransferMode": {"EnergyTransferMode": ["AC_three_phase_core"]},
                },
            }
        },
    }
}


def _frame(src: bytes, dst: bytes, segment: dpkt.Packet, proto: int) -> bytes:
    ip = dpkt.ip6.IP6(src=src, dst=dst, nxt=proto, hlim=64, data=segment, plen=len(bytes(segment)))
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=dpkt.ethernet.ETH_TYPE_IP6, data=ip))


def _tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, data: bytes = b"", flags: int = 0) -> bytes:
    segment = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, flags=flags or dpkt.tcp.TH_ACK, data=data)
    return _frame(src, dst, segment, dpkt.ip.IP_PROTO_TCP)


def _udp(src: bytes, dst: bytes, sport: int, dport: int, data: bytes) -> bytes:
    segment = dpkt.udp.UDP(sport=sport, dport=dport, data=data)
    segment.ulen = len(bytes(segment))
    return _frame(src, dst, segment, dpkt.ip.IP_PROTO_UDP)


class Session:
    """A TCP connection whose two directions are written message by message, in sequence."""

    def __init__(self, sport: int, dport: int) -> None:
        self.sport, self.dport = sport, dport
        self.seq = {EV: 1000, SECC: 9000}

    def syn(self) -> list[bytes]:
        return [
            _tcp(EV, SECC, self.sport, self.dport, self.seq[EV] - 1, flags=dpkt.tcp.TH_SYN),
            _tcp(SECC, EV, self.dport, self.sport, self.seq[SECC] - 1, flags=dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK),
        ]

    def send(self, src: bytes, data: bytes) -> bytes:
        dst = SECC if src == EV else EV
        ports = (self.sport, self.dport) if src == EV else (self.dport, self.sport)
        frame = _tcp(src, dst, *ports, self.seq[src], data)
        self.seq[src] += len(data)
        return frame


def capture_frames() -> list[bytes]:
    sap, iso2 = codec(Namespace.SAP), codec(Namespace.ISO2)
    dc = next(v for v in MESSAGES if v["namespace"] == Namespace.ISO20_DC)
    main_session = Session(50001, 61000)
    no_handshake = Session(50002, 61000)  # the capture started after its SupportedAppProtocol handshake
    sdp_res = SECC + struct.pack(">HBB", 61000, 0x10, 0x00)  # address, port, no TLS, TCP (-20 Table 21)
    return [
        _udp(EV, ALL_NODES, 50000, 15118, v2gtp(0x9000, b"\x10\x00")),
        _udp(SECC, EV, 15118, 50000, v2gtp(0x9001, sdp_res)),
        *main_session.syn(),
        main_session.send(EV, v2gtp(0x8001, sap.encode(SAP_REQ))),
        main_session.send(SECC, v2gtp(0x8001, sap.encode(SAP_RES))),
        main_session.send(EV, v2gtp(0x8001, iso2.encode(SESSION_SETUP_REQ))),
        main_session.send(SECC, v2gtp(0x8001, iso2.encode(SESSION_SETUP_RES))),
        main_session.send(EV, v2gtp(0x8001, iso2.encode(DISCOVERY_REQ))),
        main_session.send(SECC, v2gtp(0x8001, iso2.encode(DISCOVERY_RES))),
        main_session.send(EV, v2gtp(0x8001, b"\x80\xff\xff\xff")),  # a broken message from the "EV"
        no_handshake.send(EV, v2gtp(0x8001, iso2.encode(DISCOVERY_REQ))),
        no_handshake.send(EV, v2gtp(0x8004, bytes.fromhex(dc["hex"]))),
        _tcp(EV, SECC, 50003, 61001, 1, b"\x16\x03\x03\x00\x2a\x01" + bytes(42)),  # a TLS ClientHello
        _tcp(EV, SECC, 50004, 61000, 1, b"GET / HTTP/1.1\r\n\r\n"),
        main_session.send(SECC, v2gtp(0x8001, iso2.encode(DISCOVERY_RES))[:11]),  # capture ends mid-message
    ]


def write_pcap(path: Path, frames: list[bytes], *, ng: bool = False) -> None:
    with path.open("wb") as handle:
        writer: Any = dpkt.pcapng.Writer(handle) if ng else dpkt.pcap.Writer(handle)
        for i, frame in enumerate(frames):
            writer.writepkt(frame, ts=1_750_000_000.0 + i * 0.01)


def write_capture(path: Path, *, ng: bool = False) -> None:
    write_pcap(path, capture_frames(), ng=ng)


@pytest.mark.parametrize("ng", [False, True], ids=["pcap", "pcapng"])
def test_a_capture_is_decoded_message_by_message(tmp_path: Path, ng: bool) -> None:
    path = tmp_path / "session.pcap"
    write_capture(path, ng=ng)
    entries = decode_capture(path)
    summary = [(e.kind, e.flow, e.payload_type, e.protocol, e.message) for e in entries]
    assert summary == [
        ("sdp", None, 0x9000, "sdp", "SDP request"),
        ("sdp", None, 0x9001, "sdp", "SDP response"),
        ("v2gtp", 1, 0x8001, "sap", "supportedAppProtocolReq"),
        ("v2gtp", 1, 0x8001, "sap", "supportedAppProtocolRes"),
        ("v2gtp", 1, 0x8001, "iso2", "SessionSetupReq"),
        ("v2gtp", 1, 0x8001, "iso2", "SessionSetupRes"),
        ("v2gtp", 1, 0x8001, "iso2", "ServiceDiscoveryReq"),
        ("v2gtp", 1, 0x8001, "iso2", "ServiceDiscoveryRes"),
        ("v2gtp", 1, 0x8001, "iso2", None),
        ("v2gtp", 2, 0x8001, None, None),
        ("v2gtp", 2, 0x8004, "iso20-dc", "DC_CableCheckReq"),
        ("stream", 3, None, None, None),
        ("stream", 4, None, None, None),
        ("stream", 1, None, None, None),
    ], summary
    trees = [e.decoded for e in entries]
    assert trees[:8] == [
        {"security": "NONE", "transport": "TCP"},
        {"address": "fe80::2", "port": 61000, "security": "NONE", "transport": "TCP"},
        SAP_REQ,
        SAP_RES,
        SESSION_SETUP_REQ,
        SESSION_SETUP_RES,
        DISCOVERY_REQ,
        DISCOVERY_RES,
    ]
    errors = [e.error for e in entries[8:]]
    assert errors[0] is not None and errors[0].startswith("decode error: document starts with an element")
    assert errors[1] is not None and errors[1].startswith("not a SupportedAppProtocol message")
    assert errors[1].endswith("(name it with --proto)")
    assert errors[2] is None
    assert errors[3] == "TLS: encrypted, cannot be decoded without the session keys"
    assert errors[4] == "not V2GTP: the stream starts with 47 45 54 20 2f 20 48 54"
    assert errors[5] is not None and errors[5].startswith("11 of ") and "capture ends mid-message" in errors[5]
    assert [e.src for e in entries[2:4]] == ["[fe80::1]:50001", "[fe80::2]:61000"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0x8001, 0x8003, 0x9000, 0xA000]), st.binary(max_size=40)), max_size=6))
def test_any_payloads_after_a_handshake_are_reported_not_raised(messages: list[tuple[int, bytes]]) -> None:
    session = Session(50001, 61000)
    sap = codec(Namespace.SAP)
    frames = [
        session.send(EV, v2gtp(0x8001, sap.encode(SAP_REQ))),
        session.send(SECC, v2gtp(0x8001, sap.encode(SAP_RES))),
        *(session.send(EV, v2gtp(payload_type, payload)) for payload_type, payload in messages),
    ]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.pcap"
        write_pcap(path, frames)
        entries = decode_capture(path)
    assert len(entries) == 2 + len(messages)
    for entry in entries[2:]:
        assert (entry.decoded is None) != (entry.error is None)
        assert entry.protocol == {0x8001: "iso2", 0x8003: "iso20-ac"}.get(entry.payload_type or 0)


def test_proto_names_connections_whose_handshake_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "session.pcap"
    write_capture(path)
    entries = decode_capture(path, assume="iso2")
    flow2 = [(e.protocol, e.message) for e in entries if e.flow == 2]
    assert flow2 == [("iso2", "ServiceDiscoveryReq"), ("iso20-dc", "DC_CableCheckReq")]
    with pytest.raises(ExiToolError, match="unknown protocol 'iso9'"):
        decode_capture(path, assume="iso9")


def test_decode_pcap_prints_blocks_and_json_lines(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "session.pcap"
    write_capture(path)
    status, out, err = run(capsys, "exi", "decode-pcap", str(path))
    assert (status, err) == (0, "")
    assert out.startswith(f"{path}: times relative to 2025-06-15 15:06:40.000000 UTC\n")
    assert "#5  +0.060000 s  [fe80::1]:50001 -> [fe80::2]:61000  flow 1  0x8001 EXI  iso2  SessionSetupReq\n{\n" in out
    assert "#12  +0.130000 s  [fe80::1]:50003 -> [fe80::2]:61001  flow 3\n  not decoded: TLS: encrypted" in out
    assert out.rstrip().endswith("11 messages, 9 decoded, 2 not; 3 stream notes")

    status, out, err = run(capsys, "exi", "decode-pcap", "--json", str(path))
    assert (status, err) == (0, "")
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 14
    assert lines[4] == {
        "kind": "v2gtp",
        "t": 1_750_000_000.06,
        "src": "[fe80::1]:50001",
        "dst": "[fe80::2]:61000",
        "flow": 1,
        "payload_type": 0x8001,
        "protocol": "iso2",
        "message": "SessionSetupReq",
        "decoded": SESSION_SETUP_REQ,
        "error": None,
        "payload": codec(Namespace.ISO2).encode(SESSION_SETUP_REQ).hex(),
    }
    assert lines[11]["kind"] == "stream" and lines[11]["payload"] is None and lines[11]["error"].startswith("TLS")


def test_a_file_that_is_no_capture_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not a capture", encoding="utf-8")
    status, out, err = run(capsys, "exi", "decode-pcap", str(path))
    assert (status, out) == (2, "")
    assert "not a readable pcap or pcapng capture" in err


def test_an_empty_capture_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "empty.pcap"
    with path.open("wb") as handle:
        dpkt.pcap.Writer(handle)
    status, out, _ = run(capsys, "exi", "decode-pcap", str(path))
    assert status == 0 and "no V2GTP messages" in out


# ------------------------------------------------------------------------------- the real entry point


def _evse(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware.cli", "exi", *argv],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_entry_point_decode_encode_and_decode_pcap(tmp_path: Path) -> None:
    hex_text = v2gtp(0x8001, codec(Namespace.ISO2).encode(SESSION_SETUP_REQ)).hex(" ")
    proc = _evse("decode", "--proto", "iso2", "--xml", "-", stdin=hex_text)
    assert proc.returncode == 0, proc.stderr
    assert ET.fromstring(proc.stdout.encode()).tag == "{urn:iso:15118:2:2013:MsgDef}V2G_Message"
    assert proc.stderr.startswith("V2GTP frame, payload type 0x8001 EXI")

    proc = _evse("encode", "--proto", "iso2", "-", stdin=json.dumps(SESSION_SETUP_REQ))
    assert (proc.returncode, proc.stdout.strip()) == (0, codec(Namespace.ISO2).encode(SESSION_SETUP_REQ).hex())

    path = tmp_path / "session.pcapng"
    write_capture(path, ng=True)
    proc = _evse("decode-pcap", "--json", str(path))
    assert proc.returncode == 0, proc.stderr
    messages = [json.loads(line)["message"] for line in proc.stdout.splitlines()]
    assert messages[2:8] == [
        "supportedAppProtocolReq",
        "supportedAppProtocolRes",
        "SessionSetupReq",
        "SessionSetupRes",
        "ServiceDiscoveryReq",
        "ServiceDiscoveryRes",
    ]

    proc = _evse("decode", "--proto", "iso2", "80 zz")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "evse exi decode: not hex: 'z' at character 4 of the input\n"


def test_a_stream_whose_start_was_not_captured_is_reported(tmp_path: Path) -> None:
    session = Session(50001, 61000)
    frames = session.syn()
    session.seq[EV] += 100  # the first 100 bytes never made it into the capture
    frames.append(session.send(EV, v2gtp(0x8001, b"\x80\x00")))
    path = tmp_path / "gap.pcap"
    write_pcap(path, frames)
    (entry,) = decode_capture(path)
    assert (entry.kind, entry.flow, entry.error) == (
        "stream",
        1,
        "110 bytes, but the start of the stream is missing from the capture",
    )
