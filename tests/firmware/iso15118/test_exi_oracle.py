"""The independent test side for the EXI codec: the oracle (tests/peers/iso15118_peer.py) and the
schema-driven message generator (instances.py). Nothing here uses our own codec.

* Every generated instance is valid against the XSD (both modes), checked with xmlschema.
* The oracle round-trips generated instances of every message type it can carry unchanged, and
  refuses the rest (pinned, so that a change of the oracle shows up here).
* The oracle's known deviations from the schema are pinned one by one (each is why the generator
  avoids something in its oracle-compatible mode).
* Golden vectors, error answers, and a server that hangs or dies never hangs a test.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.firmware.iso15118 import instances
from tests.firmware.iso15118.instances import (
    DIN,
    ISO2,
    ISO20_AC,
    ISO20_ACDP,
    ISO20_COMMON,
    ISO20_DC,
    ISO20_WPT,
    NAMESPACES,
    SAP,
    message_types,
    messages,
    oracle_message_types,
    oracle_refusals,
)
from tests.peers import iso15118_peer
from tests.peers.iso15118_peer import ExiOracle, Iso15118PeerError, OracleError

# The oracle is installed on first use (pip, up to INSTALL_TIMEOUT_S) inside the first test that needs it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(iso15118_peer.INSTALL_TIMEOUT_S + 120)]

_SETTINGS = settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

ORACLE_CASES = [(ns, name) for ns in NAMESPACES for name in oracle_message_types(ns)]
REFUSED_CASES = [(ns, name) for ns in NAMESPACES for name in oracle_refusals(ns)]
ALL_CASES = [(ns, name) for ns in NAMESPACES for name in message_types(ns)]

#: Known answers of the EXIficient codec (task brief; the SAP one is the request of an EV offering ISO-2).
GOLDEN: list[tuple[str, dict[str, Any], str]] = [
    (
        SAP,
        {
            "supportedAppProtocolReq": {
                "AppProtocol": [
                    {
                        "ProtocolNamespace": "urn:iso:15118:2:2013:MsgDef",
                        "VersionNumberMajor": 2,
                        "VersionNumberMinor": 0,
                        "SchemaID": 1,
                        "Priority": 1,
                    }
                ]
            }
        },
        "8000ebab9371d34b9b79d189a98989c1d191d191818999d26b9b3a232b30020000040040",
    ),
    (
        ISO2,
        {
            "V2G_Message": {
                "Header": {"SessionID": "0000000000000000"},
                "Body": {"SessionSetupReq": {"EVCCID": "010203040506"}},
            }
        },
        "809802000000000000000011d01804080c10141800",
    ),
]


def _case_id(case: tuple[str, str]) -> str:
    ns, name = case
    return f"{instances.SHORT_NAMES[ns]}-{name}"


def _v2g(body: dict[str, Any], header: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"V2G_Message": {"Header": header or {"SessionID": "0A0B"}, "Body": body}}


def _signed_header(**key_info: Any) -> dict[str, Any]:
    signed_info = {
        "CanonicalizationMethod": {"Algorithm": "http://www.w3.org/TR/canonical-exi/"},
        "SignatureMethod": {"Algorithm": "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"},
        "Reference": [
            {"DigestMethod": {"Algorithm": "http://www.w3.org/2001/04/xmlenc#sha256"}, "DigestValue": "AAEC"}
        ],
    }
    signature: dict[str, Any] = {"SignedInfo": signed_info, "SignatureValue": {"value": "AQID"}}
    if key_info:
        signature["KeyInfo"] = key_info
    return {"SessionID": "0A0B", "Signature": signature}


_STOP = {"SessionStopReq": {"ChargingSession": "Terminate"}}


# -- the generator alone -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "total", "for_oracle"),
    [
        (SAP, 2, 2),
        (DIN, 34, 29),
        (ISO2, 34, 34),
        (ISO20_COMMON, 28, 28),
        (ISO20_AC, 16, 16),
        (ISO20_DC, 22, 22),
        (ISO20_ACDP, 8, 0),
        (ISO20_WPT, 12, 0),
    ],
)
def test_message_types_per_namespace(ns: str, total: int, for_oracle: int) -> None:
    assert len(message_types(ns)) == total
    assert len(oracle_message_types(ns)) == for_oracle
    assert sorted(oracle_message_types(ns) + list(oracle_refusals(ns))) == message_types(ns)


def test_din_refusals_are_the_pnc_messages() -> None:
    # DIN's PnC messages carry certificates (base64Binary), which the oracle cannot handle in DIN.
    assert sorted(oracle_refusals(DIN)) == [
        "CertificateInstallationReq",
        "CertificateInstallationRes",
        "CertificateUpdateReq",
        "CertificateUpdateRes",
        "PaymentDetailsReq",
    ]


def test_unknown_namespace_or_message_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown namespace"):
        message_types("urn:example:nothing")
    with pytest.raises(ValueError, match="is not a message type"):
        messages(ISO2, "NoSuchReq")
    with pytest.raises(ValueError, match="oracle can carry"):
        messages(DIN, "PaymentDetailsReq")


@pytest.mark.parametrize("compatible", [True, False], ids=["oracle", "full"])
@pytest.mark.parametrize("case", ALL_CASES, ids=_case_id)
@_SETTINGS
@given(data=st.data())
def test_generated_instances_are_valid_against_the_schema(
    case: tuple[str, str], compatible: bool, data: st.DataObject
) -> None:
    ns, name = case
    if compatible and name in oracle_refusals(ns) and ns not in instances.ORACLE_UNSUPPORTED_NAMESPACES:
        with pytest.raises(ValueError):
            messages(ns, name)
        return
    tree = data.draw(messages(ns, name, oracle_compatible=compatible))
    assert list(tree) == (["V2G_Message"] if ns in (DIN, ISO2) else [name])
    errors = [str(error).splitlines()[0] for error in instances.schema(ns).iter_errors(instances.to_xml(ns, tree))]
    assert errors == [], json.dumps(tree)[:2000]


def test_schema_check_catches_invalid_trees() -> None:
    # The check above can fail: duplicated IDs, dangling IDREFs, facets and unknown keys are all caught.
    chain = {"Certificate": "AAEC"}
    body = {
        "CertificateInstallationRes": {
            "ResponseCode": "OK",
            "SAProvisioningCertificateChain": chain,
            "ContractSignatureCertChain": chain,
            "ContractSignatureEncryptedPrivateKey": {"Id": "K", "value": "AQID"},
            "DHpublickey": {"Id": "K", "value": "AQID"},
            "eMAID": {"Id": "E", "value": "DE8AA1A2B3C4D5"},
        }
    }
    assert any(
        "duplicated xs:ID" in str(e) for e in instances.schema(ISO2).iter_errors(instances.to_xml(ISO2, _v2g(body)))
    )
    dangling = _v2g({"ContractAuthenticationReq": {"Id": "NOWHERE"}})
    assert any("NOWHERE" in str(e) for e in instances.schema(DIN).iter_errors(instances.to_xml(DIN, dangling)))
    too_big = {"supportedAppProtocolRes": {"ResponseCode": "OK_SuccessfulNegotiation", "SchemaID": 256}}
    assert list(instances.schema(SAP).iter_errors(instances.to_xml(SAP, too_big)))
    with pytest.raises(ValueError, match="no attribute or child element"):
        instances.to_xml(ISO2, _v2g({"SessionStopReq": {"ChargingSession": "Terminate", "Bogus": 1}}))


# -- the oracle ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ns", "tree", "hex_text"), GOLDEN, ids=["sap", "iso2"])
def test_golden_vectors(exi_oracle: ExiOracle, ns: str, tree: dict[str, Any], hex_text: str) -> None:
    assert exi_oracle.encode(ns, tree).hex() == hex_text
    assert exi_oracle.decode(ns, bytes.fromhex(hex_text)) == tree


@pytest.mark.parametrize("case", ORACLE_CASES, ids=_case_id)
@_SETTINGS
@given(data=st.data())
def test_oracle_round_trips_every_message_type(
    exi_oracle: ExiOracle, case: tuple[str, str], data: st.DataObject
) -> None:
    ns, name = case
    tree = data.draw(messages(ns, name))
    data_bytes = exi_oracle.encode(ns, tree)
    assert data_bytes[:1] == b"\x80"  # EXI header without options (standards-facts.md 2.1)
    assert exi_oracle.decode(ns, data_bytes) == tree, json.dumps(tree)[:2000]


@pytest.mark.parametrize("case", REFUSED_CASES, ids=_case_id)
@settings(max_examples=2, deadline=None, suppress_health_check=list(_SETTINGS.suppress_health_check))
@given(data=st.data())
def test_oracle_refuses_the_message_types_it_cannot_carry(
    exi_oracle: ExiOracle, case: tuple[str, str], data: st.DataObject
) -> None:
    ns, name = case
    tree = data.draw(messages(ns, name, oracle_compatible=False))
    with pytest.raises(OracleError):
        exi_oracle.encode(ns, tree)


@pytest.mark.parametrize(
    "key_info",
    [
        {"X509Data": [{"X509SKI": ["AAEC"]}]},
        {"X509Data": [{"X509Certificate": ["AAEC"]}]},
        {"X509Data": [{"X509CRL": ["AAEC"]}]},
        {"PGPData": [{"PGPKeyID": "AAEC"}]},
        {"SPKIData": [{"SPKISexp": ["AAEC"]}]},
    ],
    ids=lambda k: next(iter(k)),
)
def test_oracle_cannot_carry_base64_in_mixed_xmldsig_content(exi_oracle: ExiOracle, key_info: dict[str, Any]) -> None:
    with pytest.raises(OracleError, match="javax/mail"):
        exi_oracle.encode(ISO2, _v2g(_STOP, _signed_header(**key_info)))
    # ... while the same signature without that KeyInfo child is fine.
    plain = _v2g(_STOP, _signed_header(KeyName=["k1"]))
    assert exi_oracle.decode(ISO2, exi_oracle.encode(ISO2, plain)) == plain


def test_oracle_cannot_carry_base64_in_din(exi_oracle: ExiOracle) -> None:
    with pytest.raises(OracleError, match="javax/mail"):
        exi_oracle.encode(DIN, _v2g({"SessionStopReq": {}}, _signed_header()))
    with pytest.raises(OracleError, match="javax/mail"):
        exi_oracle.encode(
            DIN,
            _v2g({"MeteringReceiptReq": {"SessionID": "0A", "MeterInfo": {"MeterID": "m", "SigMeterReading": "AAEC"}}}),
        )


@pytest.mark.parametrize(
    ("ns", "tree", "path", "filled"),
    [
        (
            SAP,
            {"supportedAppProtocolRes": {"ResponseCode": "Failed_NoNegotiation"}},
            ["supportedAppProtocolRes"],
            "SchemaID",
        ),
        (
            ISO2,
            _v2g({"MeteringReceiptReq": {"SessionID": "0A", "MeterInfo": {"MeterID": "m"}}}),
            ["V2G_Message", "Body", "MeteringReceiptReq"],
            "SAScheduleTupleID",
        ),
    ],
    ids=["sap-SchemaID", "iso2-SAScheduleTupleID"],
)
def test_oracle_fills_in_some_absent_optional_elements(
    exi_oracle: ExiOracle, ns: str, tree: dict[str, Any], path: list[str], filled: str
) -> None:
    # Why instances.ORACLE_ZERO_FILLED elements are always generated in oracle-compatible mode.
    decoded: Any = exi_oracle.decode(ns, exi_oracle.encode(ns, tree))
    for key in path:
        decoded = decoded[key]
    assert decoded[filled] == 0


def test_oracle_normalises_whitespace_in_attributes_only(exi_oracle: ExiOracle) -> None:
    # The oracle goes through XML text: attribute values lose tab/CR/LF, element text keeps them.
    header = {"SessionID": "0A", "Notification": {"FaultCode": "UnknownError", "FaultMsg": "a\tb\r\nc "}}
    body = {
        "ServiceDetailRes": {
            "ResponseCode": "OK",
            "ServiceID": 1,
            "ServiceParameterList": {
                "ParameterSet": [{"ParameterSetID": 1, "Parameter": [{"Name": "x\ty", "intValue": 1}]}]
            },
        }
    }
    decoded = exi_oracle.decode(ISO2, exi_oracle.encode(ISO2, _v2g(body, header)))
    assert decoded["V2G_Message"]["Header"]["Notification"]["FaultMsg"] == "a\tb\r\nc "
    parameter = decoded["V2G_Message"]["Body"]["ServiceDetailRes"]["ServiceParameterList"]["ParameterSet"][0]
    assert parameter["Parameter"][0]["Name"] == "x y"


def test_oracle_gets_value_after_attributes(exi_oracle: ExiOracle) -> None:
    # The oracle encodes empty content when "value" precedes an attribute; ExiOracle reorders for it.
    header = _signed_header()
    header["Signature"]["SignatureValue"] = {"value": "AQID", "Id": "SV"}
    value_first = _v2g(_STOP, header)
    decoded = exi_oracle.decode(ISO2, exi_oracle.encode(ISO2, value_first))
    assert decoded["V2G_Message"]["Header"]["Signature"]["SignatureValue"] == {"Id": "SV", "value": "AQID"}
    assert list(decoded["V2G_Message"]["Header"]["Signature"]["SignatureValue"]) == ["Id", "value"]


@pytest.mark.parametrize(
    ("sent", "answered"),
    [
        ({"EVCCID": "0a0b0c"}, {"EVCCID": "0A0B0C"}),  # hexBinary answers in upper case
        ({"EVCCID": ""}, {"EVCCID": ""}),
    ],
)
def test_oracle_hex_binary_form(exi_oracle: ExiOracle, sent: dict[str, Any], answered: dict[str, Any]) -> None:
    decoded = exi_oracle.decode(ISO2, exi_oracle.encode(ISO2, _v2g({"SessionSetupReq": sent})))
    assert decoded == _v2g({"SessionSetupReq": answered})


def test_oracle_error_answers_become_oracle_errors(exi_oracle: ExiOracle) -> None:
    with pytest.raises(OracleError, match="NoSuchMessage"):
        exi_oracle.encode(ISO2, {"NoSuchMessage": {}})
    with pytest.raises(OracleError, match="hexBinary"):
        exi_oracle.encode(ISO2, _v2g({"SessionSetupReq": {"EVCCID": "ABC"}}))  # odd number of hex digits
    with pytest.raises(OracleError, match="EOS"):
        exi_oracle.decode(ISO2, b"\x80\x98\x02")  # truncated stream
    # The server keeps serving after errors.
    assert exi_oracle.encode(*GOLDEN[1][:2]).hex() == GOLDEN[1][2]


def test_oracle_version_and_latency(exi_oracle: ExiOracle) -> None:
    assert exi_oracle.version == "1.55"
    ns, tree, _ = GOLDEN[1]
    began = time.monotonic()
    for _ in range(10):
        exi_oracle.decode(ns, exi_oracle.encode(ns, tree))
    assert (time.monotonic() - began) / 20 < 1.0, "an oracle call should take tens of milliseconds"


# -- the harness never hangs ---------------------------------------------------------------------------


def _fake_server(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake_server.py"
    script.write_text("import json, sys, time\n" + textwrap.dedent(body))
    return script


def test_a_server_that_never_answers_times_out(exi_oracle: ExiOracle, tmp_path: Path) -> None:
    script = _fake_server(
        tmp_path,
        """
        print(json.dumps({"ready": True, "version": "fake"}), flush=True)
        for line in sys.stdin:
            time.sleep(60)
        """,
    )
    with ExiOracle(call_timeout=0.5, server_script=script) as oracle:
        began = time.monotonic()
        with pytest.raises(OracleError, match="no answer"):
            oracle.encode(ISO2, GOLDEN[1][1])
        assert time.monotonic() - began < 5.0
        assert not oracle.running  # killed: its state is unknown


def test_a_server_that_never_starts_times_out(exi_oracle: ExiOracle, tmp_path: Path) -> None:
    script = _fake_server(tmp_path, "time.sleep(60)\n")
    began = time.monotonic()
    with pytest.raises(Iso15118PeerError, match="did not start"), ExiOracle(start_timeout=0.5, server_script=script):
        pass
    assert time.monotonic() - began < 5.0


def test_a_server_that_dies_is_reported(exi_oracle: ExiOracle, tmp_path: Path) -> None:
    script = _fake_server(
        tmp_path,
        """
        print(json.dumps({"ready": True, "version": "fake"}), flush=True)
        sys.stdin.readline()
        print("dying", file=sys.stderr, flush=True)
        sys.exit(3)
        """,
    )
    with ExiOracle(server_script=script) as oracle, pytest.raises(OracleError, match="exited") as info:
        oracle.decode(ISO2, b"\x80")
    assert "dying" in str(info.value)


def test_a_server_that_prints_garbage_is_reported(exi_oracle: ExiOracle, tmp_path: Path) -> None:
    script = _fake_server(
        tmp_path,
        """
        print(json.dumps({"ready": True, "version": "fake"}), flush=True)
        for line in sys.stdin:
            print("not json", flush=True)
        """,
    )
    with ExiOracle(server_script=script) as oracle, pytest.raises(OracleError, match="non-JSON"):
        oracle.decode(ISO2, b"\x80")


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(Iso15118PeerError, match="java not found"):
        ExiOracle().start()


def test_install_is_idempotent(exi_oracle: ExiOracle) -> None:
    began = time.monotonic()
    python = iso15118_peer.ensure_iso15118_venv()
    assert time.monotonic() - began < 1.0  # the marker says it is complete: nothing to do
    assert python.is_file() and os.access(python, os.X_OK)
    marker = json.loads((iso15118_peer.peer_dir() / "evse-peer-install.json").read_text())
    assert f"iso15118=={iso15118_peer.ISO15118_VERSION}" in marker["requirements"]


def test_peer_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(iso15118_peer.ENV_PEER_DIR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert iso15118_peer.peer_dir() == tmp_path / "evse-firmware" / "iso15118-peer"
    monkeypatch.setenv(iso15118_peer.ENV_PEER_DIR, str(tmp_path / "elsewhere"))
    assert iso15118_peer.peer_dir() == tmp_path / "elsewhere"
