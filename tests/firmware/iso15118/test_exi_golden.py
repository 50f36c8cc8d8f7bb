"""Byte-exactness against vectors the oracle (EXIficient via the iso15118 package) produced once.

golden_exi.json says how the vectors were made; the broad random interop test against the live oracle
is test_exi_interop.py.
"""

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.iso15118.exi import Namespace, codec
from firmware.iso15118.exi.fragment import encode_signed_info

GOLDEN = json.loads((Path(__file__).parent / "golden_exi.json").read_text(encoding="utf-8"))["vectors"]


def _id(vector: dict[str, Any]) -> str:
    root = next(iter(vector["json"]))
    if root == "V2G_Message":
        root = next(iter(vector["json"]["V2G_Message"]["Body"]))
    return f"{vector['namespace'].rsplit(':', 1)[-1]}-{root}"


@pytest.mark.parametrize("vector", GOLDEN, ids=[_id(v) for v in GOLDEN])
def test_encode_matches_the_oracle_bytes(vector: dict[str, Any]) -> None:
    assert codec(vector["namespace"]).encode(vector["json"]).hex() == vector["hex"]


@pytest.mark.parametrize(
    "vector",
    [v for v in GOLDEN if v["source"] != "json-fragment"],
    ids=[_id(v) for v in GOLDEN if v["source"] != "json-fragment"],
)
def test_decode_gives_the_oracle_tree(vector: dict[str, Any]) -> None:
    assert codec(vector["namespace"]).decode(bytes.fromhex(vector["hex"])) == vector["json"]


def test_every_namespace_and_message_type_has_vectors() -> None:
    seen = {(v["namespace"], _id(v).split("-", 1)[1]) for v in GOLDEN}
    for namespace in Namespace:
        types = codec(namespace).message_types()
        if namespace in (Namespace.DIN, Namespace.ISO2):
            assert sum(1 for ns, _ in seen if ns == namespace.value) >= 34
        else:
            messages = [t for t in types if t.endswith(("Req", "Res"))]
            assert {(namespace.value, t) for t in messages} <= seen, namespace


def test_oracle_quirks_are_decoded_like_the_oracle() -> None:
    # EXIficient writes a value its type cannot hold (here the JAXB default 0 for an absent
    # SAScheduleTupleID, range 1..255) as CH [untyped value] at the second level (8.5.4.4.1).
    stream = bytes.fromhex("8098004290f00d84010a1c0661001b6a00")  # oracle output for the tree below
    receipt = {"Id": "a", "SessionID": "0A", "MeterInfo": {"MeterID": "m"}}
    tree = {"V2G_Message": {"Header": {"SessionID": "0A"}, "Body": {"MeteringReceiptReq": receipt}}}
    oracle_decoded = {"Id": "a", "SessionID": "0A", "SAScheduleTupleID": 0, "MeterInfo": {"MeterID": "m"}}
    assert codec(Namespace.ISO2).decode(stream)["V2G_Message"]["Body"]["MeteringReceiptReq"] == oracle_decoded
    # We encode the tree as given (the schema allows leaving SAScheduleTupleID out) and never write
    # deviations ourselves.
    assert codec(Namespace.ISO2).decode(codec(Namespace.ISO2).encode(tree)) == tree


def test_empty_values_have_no_characters_event() -> None:
    # EXIficient sends no CH for an empty string or binary value: the element ends via its
    # second-level EE. Both vectors are the oracle's.
    iso2 = codec(Namespace.ISO2)
    fault = {"FaultCode": "UnknownError", "FaultMsg": ""}
    tree = {
        "V2G_Message": {
            "Header": {"SessionID": "0A0B", "Notification": fault},
            "Body": {"SessionStopReq": {"ChargingSession": "Terminate"}},
        }
    }
    assert iso2.encode(tree).hex() == "8098008282c10827c000"
    assert iso2.decode(bytes.fromhex("8098008282c10827c000")) == tree
    empty_id = {
        "V2G_Message": {"Header": {"SessionID": ""}, "Body": {"SessionStopReq": {"ChargingSession": "Terminate"}}}
    }
    assert iso2.encode(empty_id).hex() == "8098447c00"


def test_a_single_object_is_accepted_for_an_array_like_the_oracle() -> None:
    sap = codec(Namespace.SAP)
    protocol = {
        "ProtocolNamespace": "x",
        "VersionNumberMajor": 2,
        "VersionNumberMinor": 0,
        "SchemaID": 1,
        "Priority": 1,
    }
    assert sap.encode({"supportedAppProtocolReq": {"AppProtocol": protocol}}).hex() == "80001bc0020000040040"


PHYSICAL = st.fixed_dictionaries(
    {
        "Multiplier": st.integers(-3, 3),
        "Unit": st.sampled_from(["A", "V", "W", "h", "s"]),
        "Value": st.integers(-32768, 32767),
    }
)


@settings(max_examples=150, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "DC_EVStatus": st.fixed_dictionaries(
                {
                    "EVReady": st.booleans(),
                    "EVErrorCode": st.sampled_from(["NO_ERROR", "FAILED_EVShiftPosition", "NoData"]),
                    "EVRESSSOC": st.integers(0, 100),
                }
            ),
            "EVTargetCurrent": PHYSICAL,
            "ChargingComplete": st.booleans(),
            "EVTargetVoltage": PHYSICAL,
        },
        optional={
            "EVMaximumVoltageLimit": PHYSICAL,
            "EVMaximumCurrentLimit": PHYSICAL,
            "BulkChargingComplete": st.booleans(),
            "RemainingTimeToFullSoC": PHYSICAL,
        },
    ),
    st.binary(min_size=1, max_size=8),
)
def test_charge_loop_messages_round_trip(request: dict[str, Any], session_id: bytes) -> None:
    tree = {"V2G_Message": {"Header": {"SessionID": session_id.hex().upper()}, "Body": {"CurrentDemandReq": request}}}
    iso2 = codec(Namespace.ISO2)
    assert iso2.decode(iso2.encode(tree)) == tree


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "ProtocolNamespace": st.text(max_size=100),
                "VersionNumberMajor": st.integers(0, 2**32 - 1),
                "VersionNumberMinor": st.integers(0, 2**32 - 1),
                "SchemaID": st.integers(0, 255),
                "Priority": st.integers(1, 20),
            }
        ),
        min_size=1,
        max_size=20,
    )
)
def test_supported_app_protocol_requests_round_trip(protocols: list[dict[str, Any]]) -> None:
    tree = {"supportedAppProtocolReq": {"AppProtocol": protocols}}
    sap = codec(Namespace.SAP)
    # Includes the empty string, which has no CH event and still decodes as "".
    assert sap.decode(sap.encode(tree)) == tree


def test_signed_info_fragment_matches_the_oracle() -> None:
    # The iso15118 package encodes SignedInfo with the xmldsig grammar alone (namespace XML_DSIG) as a
    # fragment; this is its output for the SignedInfo below, the shape its signatures use.
    signed_info = {
        "CanonicalizationMethod": {"Algorithm": "http://www.w3.org/TR/canonical-exi/"},
        "SignatureMethod": {"Algorithm": "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"},
        "Reference": [
            {
                "URI": "#id1",
                "Transforms": {"Transform": [{"Algorithm": "http://www.w3.org/TR/canonical-exi/"}]},
                "DigestMethod": {"Algorithm": "http://www.w3.org/2001/04/xmlenc#sha256"},
                "DigestValue": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            }
        ],
    }
    expected = (
        "808112b43a3a381d1797bbbbbb973b999737b93397aa2917b1b0b737b734b1b0b616b2bc3497a1ab43a3a381d1797bbbbbb973b"
        "999737b933979918181897981a17bc36b63239b4b396b6b7b93291b2b1b239b096b9b430991a9b220623696431025687474703a"
        "2f2f7777772e77332e6f72672f54522f63616e6f6e6963616c2d6578692f4852d0e8e8e0745e5eeeeeee5cee665cdee4ce5e64"
        "6060625e60685ef0dad8cadcc646e6d0c2646a6c84000020406080a0c0e10121416181a1c1e20222426282a2c2e30323436383a"
        "3c3e370"
    )
    assert encode_signed_info(signed_info).hex() == expected
