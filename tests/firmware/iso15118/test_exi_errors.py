"""Trees that do not fit the schema and streams that are not valid EXI fail with clear errors."""

import json
from pathlib import Path
from typing import Any

import pytest

from firmware.iso15118.exi import ExiDecodeError, ExiEncodeError, ExiError, Namespace, codec
from firmware.iso15118.exi.bitstream import BitWriter

SAP = Namespace.SAP
ISO2 = Namespace.ISO2


def protocol(**changes: Any) -> dict[str, Any]:
    base = {
        "ProtocolNamespace": "urn:x",
        "VersionNumberMajor": 2,
        "VersionNumberMinor": 0,
        "SchemaID": 1,
        "Priority": 1,
    }
    return {**base, **changes}


def iso2(body: dict[str, Any], header: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"V2G_Message": {"Header": header or {"SessionID": "0A0B"}, "Body": body}}


@pytest.mark.parametrize(
    ("namespace", "tree", "message"),
    [
        (SAP, {"nope": {}}, "'nope' is not a global element"),
        (SAP, {}, "exactly one key"),
        (SAP, [], "exactly one key"),
        (SAP, {"supportedAppProtocolReq": {}, "supportedAppProtocolRes": {}}, "exactly one key"),
        (
            SAP,
            {"supportedAppProtocolReq": {"AppProtocol": [protocol(Priority=0)]}},
            r"AppProtocol\[0\]/Priority: 0 outside",
        ),
        (
            SAP,
            {"supportedAppProtocolReq": {"AppProtocol": [protocol(Priority=21)]}},
            "21 outside the schema's range 1..20",
        ),
        (SAP, {"supportedAppProtocolReq": {"AppProtocol": [protocol(SchemaID="1")]}}, "SchemaID: expected an integer"),
        (SAP, {"supportedAppProtocolReq": {"AppProtocol": [protocol(SchemaID=True)]}}, "expected an integer"),
        (SAP, {"supportedAppProtocolReq": {"AppProtocol": [protocol(ProtocolNamespace="x" * 101)]}}, "length 101"),
        (
            SAP,
            {"supportedAppProtocolReq": {"AppProtocol": [protocol(Extra=1)]}},
            "unknown element or attribute 'Extra'",
        ),
        (SAP, {"supportedAppProtocolReq": {"AppProtocol": [protocol()] * 21}}, r"AppProtocol\[20\]: not allowed here"),
        (SAP, {"supportedAppProtocolReq": {"AppProtocol": []}}, "incomplete, expected AppProtocol"),
        (SAP, {"supportedAppProtocolReq": {"AppProtocol": [None]}}, "null is not a value"),
        (SAP, {"supportedAppProtocolReq": {"AppProtocol": [[]]}}, "expected an object, got list"),
        (SAP, {"supportedAppProtocolRes": {"ResponseCode": "Maybe"}}, "'Maybe' is not one of"),
        (ISO2, iso2({"SessionSetupReq": {}}), "SessionSetupReq: incomplete, expected EVCCID"),
        (ISO2, iso2({"SessionSetupReq": {"EVCCID": "0g"}}), "EVCCID: expected hex digits"),
        (ISO2, iso2({"SessionSetupRes": {"EVSEID": "x"}}), "EVSEID: not allowed here, missing required ResponseCode"),
        (ISO2, iso2({"BodyElement": {}}), "unknown element or attribute 'BodyElement'"),
        (ISO2, iso2({"AuthorizationReq": {"GenChallenge": "not base64!"}}), "not valid base64"),
        (
            ISO2,
            iso2({"AuthorizationReq": {"GenChallenge": "AAEC"}}),
            "base64Binary length 3 outside the schema's 16..16",
        ),
        (ISO2, iso2({"SessionStopReq": {"ChargingSession": "Terminate"}}, {"SessionID": "00" * 9}), "length 9"),
        (ISO2, iso2({"SessionStopReq": {"ChargingSession": 1}}), "not one of the schema's values"),
        (ISO2, iso2({"SessionStopReq": "Terminate"}), "SessionStopReq: expected an object, got str"),
        (ISO2, {"V2G_Message": {"Body": {}}}, "V2G_Message/Body: not allowed here, missing required Header"),
        (Namespace.ISO20_DC, {"DC_ChargeLoopReq": {}}, "DC_ChargeLoopReq: incomplete, expected Header"),
    ],
)
def test_trees_that_do_not_fit_the_schema_name_the_path(namespace: Namespace, tree: Any, message: str) -> None:
    with pytest.raises(ExiEncodeError, match=message):
        codec(namespace).encode(tree)


VALID = bytes.fromhex("809802000000000000000011d01804080c10141800")  # ISO-2 SessionSetupReq


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty stream"),
        (b"\x00" + VALID[1:], "header byte 0x00"),
        (b"$EXI" + VALID, "header byte 0x24"),
        (b"\x80", "truncated"),
        (VALID + b"\x01", "unexpected bytes after the end"),
        (b"\x80" + b"\x00" * 65536, "exceeds the 65536-byte limit"),
        (bytes([0x80, 0b1010_0010]), "does not declare"),  # DocContent code 81 = SE(*)
        ("80", "expected bytes, got str"),
    ],
)
def test_malformed_streams_are_decode_errors(data: Any, message: str) -> None:
    with pytest.raises(ExiDecodeError, match=message):
        codec(ISO2).decode(data)


def test_every_truncation_of_a_valid_stream_is_a_decode_error() -> None:
    for vector in json.loads((Path(__file__).parent / "golden_exi.json").read_text("utf-8"))["vectors"][:40]:
        if vector["source"] == "json-fragment":
            continue
        data = bytes.fromhex(vector["hex"])
        for end in range(len(data)):
            with pytest.raises(ExiDecodeError):
                codec(vector["namespace"]).decode(data[:end])


def test_trailing_zero_padding_is_tolerated() -> None:
    assert codec(ISO2).decode(VALID + b"\x00\x00") == codec(ISO2).decode(VALID)


def test_unsupported_schema_deviations_are_named() -> None:
    # A SessionSetupReq whose first event is the escape to the second level (8.5.4.4.1) and there
    # SE(*): entry 5 of [EE, xsi:type, xsi:nil, AT(*), AT untyped, SE(*), CH untyped] (3 bits).
    writer = BitWriter()
    writer.write_bits(0x80, 8)
    writer.write_bits(76, 7)  # DocContent: V2G_Message
    writer.write_bits(0, 1)  # SE(Header)
    writer.write_bits(0, 1)  # SE(SessionID)
    writer.write_bits(0, 1)  # CH
    writer.write_uint(1)
    writer.write_bytes(b"\x01")
    writer.write_bits(0, 1)  # EE of SessionID
    writer.write_bits(2, 2)  # EE of Header (after Notification and Signature)
    writer.write_bits(0, 1)  # SE(Body)
    writer.write_bits(29, 6)  # SessionSetupReq
    writer.write_bits(1, 1)  # escape: EVCCID is production 0 of 1
    writer.write_bits(5, 3)  # SE(*)
    writer.write_bits(0, 16)
    with pytest.raises(ExiDecodeError, match=r"SessionSetupReq: undeclared element SE\(\*\) \(a schema deviation\)"):
        codec(ISO2).decode(writer.getvalue())


def test_unknown_namespace_is_an_exi_error() -> None:
    with pytest.raises(ExiError, match="no EXI grammar"):
        codec("urn:example:nothing")
    assert codec("urn:din:70121:2012:MsgDef") is codec(Namespace.DIN)


def test_errors_are_value_errors() -> None:
    assert issubclass(ExiEncodeError, ExiError) and issubclass(ExiDecodeError, ExiError)
    assert issubclass(ExiError, ValueError)
