"""Plug & Charge checks of the SECC: contract certificate chains against configured V2G roots (order,
validity, the Annex F profile of every certificate), the eMAID, the GenChallenge and the EV's xmldsig
signature. The test PKI is generated here with ``cryptography``: V2G root -> Sub-CA 1 -> Sub-CA 2 ->
contract certificate, and an OEM root -> OEM provisioning certificate."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.iso15118.exi import Namespace, codec
from firmware.iso15118.session.pnc import (
    CANONICAL_EXI,
    DIGEST_SHA256,
    ECDSA_SHA256,
    Code,
    Contract,
    ContractStatus,
    PlugAndCharge,
    PncError,
    chain_from_tree,
    check_challenge,
    create_signature,
    emaid_of,
    load_roots,
    new_challenge,
    same_emaid,
    utc,
    validate_contract_chain,
    verify_signature,
)

NOW_S = 1_750_000_000.0  # 2025-06-15: the wall clock every test reads
NOW = utc(NOW_S)
EMAID = "DEEVFC123456789"
_ISO2 = codec(Namespace.ISO2)


def encode(element: str, tree: Mapping[str, Any]) -> bytes:
    """The test's SignedElementEncoder: the project's ISO 15118-2 codec, the element as the root."""
    return _ISO2.encode({element: dict(tree)})


# ------------------------------------------------------------------------------------------ the test PKI
@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def b64(self) -> str:
        return base64.b64encode(self.der).decode()


def issue(
    cn: str,
    issuer: Issued | None,
    *,
    ca: bool,
    path_length: int | None = None,
    key_cert_sign: bool | None = None,
    digital_signature: bool | None = None,
    basic_constraints: bool = True,
    dc: str | None = None,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    curve: ec.EllipticCurve | None = None,
    common_name: bool = True,
) -> Issued:
    """One certificate of the Annex F kind (the profiles of the iso15118 package's test PKI)."""
    key = ec.generate_private_key(curve or ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if common_name else []
    attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "EVF test PKI")]
    if dc is not None:
        attributes.append(x509.NameAttribute(NameOID.DOMAIN_COMPONENT, dc))
    name = x509.Name(attributes)
    signing_key = issuer.key if issuer is not None else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from or NOW - timedelta(days=1))
        .not_valid_after(valid_to or NOW + timedelta(days=365))
    )
    if basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    sign_certs = ca if key_cert_sign is None else key_cert_sign
    signatures = (not ca) if digital_signature is None else digital_signature
    usage = x509.KeyUsage(
        digital_signature=signatures,
        content_commitment=not ca,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=sign_certs,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
    builder = builder.add_extension(usage, critical=True)
    return Issued(builder.sign(signing_key, hashes.SHA256()), key)


@dataclass(frozen=True)
class Pki:
    root: Issued
    sub1: Issued
    sub2: Issued
    contract: Issued
    oem_root: Issued
    oem: Issued
    other_root: Issued

    def chain(self, leaf: Issued | None = None, *subs: Issued) -> dict[str, Any]:
        """A CertificateChainType tree: the contract certificate and its sub-CAs, the leaf's issuer first."""
        leaf = leaf or self.contract
        subs = subs or (self.sub2, self.sub1)
        return {"Certificate": leaf.b64, "SubCertificates": {"Certificate": [s.b64 for s in subs]}}


@cache
def pki() -> Pki:
    root = issue("V2G Root CA", None, ca=True, dc="V2G")
    sub1 = issue("MO Sub-CA 1", root, ca=True, path_length=1, dc="MO")
    sub2 = issue("MO Sub-CA 2", sub1, ca=True, path_length=0, dc="MO")
    contract = issue(EMAID, sub2, ca=False, dc="MO")
    oem_root = issue("OEM Root CA", None, ca=True, dc="OEM")
    oem = issue("OEM Prov Cert", oem_root, ca=False, dc="OEM")
    other_root = issue("Another V2G Root", None, ca=True, dc="V2G")
    return Pki(root, sub1, sub2, contract, oem_root, oem, other_root)


class NoBackend:
    def contract_status(self, contract: Contract) -> ContractStatus:
        return ContractStatus.ACCEPTED

    def certificate_installation(self, request: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return None

    def certificate_update(self, request: Mapping[str, Any], contract: Contract) -> Mapping[str, Any] | None:
        return None


def validate(leaf: Issued, *subs: Issued, roots: tuple[Issued, ...] | None = None, now: datetime = NOW) -> Contract:
    anchors = [r.cert for r in (roots or (pki().root,))]
    return validate_contract_chain(leaf.der, [s.der for s in subs], anchors, now)


# ------------------------------------------------------------------------------------------ chains
def test_a_valid_contract_chain_gives_its_contract_and_emaid() -> None:
    p = pki()
    contract = validate(p.contract, p.sub2, p.sub1)
    assert contract.emaid == EMAID and contract.root == p.root.cert
    assert contract.chain == (p.contract.cert, p.sub2.cert, p.sub1.cert, p.root.cert)
    assert contract.expires == min(c.not_valid_after_utc for c in contract.chain)
    leaf, subs = chain_from_tree(p.chain())
    assert validate_contract_chain(leaf, subs, [p.root.cert], NOW).emaid == EMAID


def test_a_chain_with_one_sub_ca_and_one_signed_by_the_root_directly_are_valid() -> None:
    p = pki()
    sub = issue("MO Sub-CA", p.root, ca=True, path_length=0)
    leaf = issue("DEEVFC000000001", sub, ca=False)
    assert validate(leaf, sub).emaid == "DEEVFC000000001"
    private = issue("DEEVFC000000002", p.root, ca=False)
    assert validate(private).emaid == "DEEVFC000000002"


def _cases() -> list[Any]:
    p = pki()
    late = NOW + timedelta(days=400)
    return [
        pytest.param(lambda: validate(p.contract, p.sub1, p.sub2), Code.CERT_CHAIN_ERROR, id="wrong-order"),
        pytest.param(lambda: validate(p.contract, p.sub2), Code.CERT_CHAIN_ERROR, id="sub-ca-missing"),
        pytest.param(
            lambda: validate(p.contract, p.sub2, p.sub1, roots=(p.other_root,)),
            Code.CERT_CHAIN_ERROR,
            id="unknown-root",
        ),
        pytest.param(lambda: validate(p.contract, p.sub2, p.sub1, now=late), Code.CERTIFICATE_EXPIRED, id="expired"),
        pytest.param(
            lambda: validate(p.contract, p.sub2, p.sub1, now=NOW - timedelta(days=2)),
            Code.CERTIFICATE_EXPIRED,
            id="not-yet-valid",
        ),
        pytest.param(
            lambda: validate(issue(EMAID, p.sub2, ca=False, valid_to=NOW - timedelta(hours=1)), p.sub2, p.sub1),
            Code.CERTIFICATE_EXPIRED,
            id="expired-leaf",
        ),
        pytest.param(lambda: validate(p.sub2, p.sub1), Code.CERT_CHAIN_ERROR, id="leaf-is-a-ca"),
        pytest.param(
            lambda: validate(issue(EMAID, p.sub2, ca=False, digital_signature=False), p.sub2, p.sub1),
            Code.CERT_CHAIN_ERROR,
            id="leaf-without-digital-signature",
        ),
        pytest.param(
            lambda: validate(issue(EMAID, p.sub2, ca=False, curve=ec.SECP384R1()), p.sub2, p.sub1),
            Code.CERT_CHAIN_ERROR,
            id="leaf-not-secp256r1",
        ),
        pytest.param(
            lambda: validate(issue(EMAID, p.sub2, ca=False, common_name=False), p.sub2, p.sub1),
            Code.CERT_CHAIN_ERROR,
            id="no-common-name",
        ),
        pytest.param(_sub_ca_without_key_cert_sign, Code.CERT_CHAIN_ERROR, id="sub-ca-without-keyCertSign"),
        pytest.param(_sub_ca_without_basic_constraints, Code.CERT_CHAIN_ERROR, id="sub-ca-not-a-ca"),
        pytest.param(_path_length_exceeded, Code.CERT_CHAIN_ERROR, id="path-length-exceeded"),
        pytest.param(_three_sub_cas, Code.CERT_CHAIN_ERROR, id="three-sub-cas"),
        pytest.param(
            lambda: validate_contract_chain(b"\x30\x03\x02\x01\x00", [], [p.root.cert], NOW),
            Code.CERT_CHAIN_ERROR,
            id="not-der",
        ),
    ]


def _sub_ca_without_key_cert_sign() -> Contract:
    p = pki()
    sub = issue("MO Sub-CA 2", p.sub1, ca=True, path_length=0, key_cert_sign=False)
    return validate(issue(EMAID, sub, ca=False), sub, p.sub1)


def _sub_ca_without_basic_constraints() -> Contract:
    p = pki()
    sub = issue("MO Sub-CA 2", p.sub1, ca=True, basic_constraints=False)
    return validate(issue(EMAID, sub, ca=False), sub, p.sub1)


def _path_length_exceeded() -> Contract:
    p = pki()
    lower = issue("MO Sub-CA 3", p.sub2, ca=True, path_length=0)  # sub2 has path length 0: no CA below it
    return validate(issue(EMAID, lower, ca=False), lower, p.sub2)


def _three_sub_cas() -> Contract:
    p = pki()
    top = issue("Sub 1", p.root, ca=True)
    middle = issue("Sub 2", top, ca=True)
    bottom = issue("Sub 3", middle, ca=True)
    return validate(issue(EMAID, bottom, ca=False), bottom, middle, top)


@pytest.mark.parametrize(("check", "code"), _cases())
def test_a_chain_that_breaks_the_rules_is_refused_with_its_code(check: Any, code: Code) -> None:
    with pytest.raises(PncError) as caught:
        check()
    assert caught.value.code is code and str(caught.value)


@pytest.mark.parametrize(
    ("tree", "why"),
    [
        (None, "not a structure"),
        ({}, "not base64 text"),
        ({"Certificate": "%%%"}, "not base64"),
        ({"Certificate": base64.b64encode(bytes(801)).decode()}, "801 bytes"),
        ({"Certificate": "AAAA", "SubCertificates": {"Certificate": ["AAAA"] * 5}}, "holds 5"),
        ({"Certificate": "AAAA", "SubCertificates": 3}, "sub-CA certificate 1 is not base64"),
    ],
)
def test_chain_trees_that_are_not_certificates_are_chain_errors(tree: Any, why: str) -> None:
    with pytest.raises(PncError, match=why) as caught:
        leaf, subs = chain_from_tree(tree)
        validate_contract_chain(leaf, subs, [pki().root.cert], NOW)
    assert caught.value.code is Code.CERT_CHAIN_ERROR


def test_roots_from_configuration_are_checked() -> None:
    p = pki()
    pem = p.root.cert.public_bytes(serialization.Encoding.PEM)
    assert load_roots([pem, p.other_root.der]) == (p.root.cert, p.other_root.cert)
    with pytest.raises(ValueError, match="root certificate 1: not a PEM or DER"):
        load_roots([b"garbage"])
    with pytest.raises(ValueError, match="not a CA"):
        load_roots([p.contract.der])
    with pytest.raises(ValueError, match="not self-signed"):
        load_roots([p.sub1.der])
    with pytest.raises(ValueError, match="at least one"):
        PlugAndCharge((), NoBackend(), encode)


def test_emaids_compare_without_separators_and_case() -> None:
    assert emaid_of(pki().contract.cert) == EMAID
    assert same_emaid("DE-EVF-C12345678-9", "deevfc123456789")
    assert not same_emaid("DEEVFC123456780", EMAID)


# ------------------------------------------------------------------------------------------ challenge
def test_the_challenge_must_come_back_unchanged() -> None:
    challenge = new_challenge(lambda n: bytes(range(n)))
    assert challenge == bytes(range(16))
    check_challenge(challenge, base64.b64encode(challenge).decode())
    for wrong in (base64.b64encode(bytes(16)).decode(), None, "not base64!", 17):
        with pytest.raises(PncError) as caught:
            check_challenge(challenge, wrong)
        assert caught.value.code is Code.CHALLENGE_INVALID
    with pytest.raises(PncError):
        check_challenge(b"", "")  # no challenge was sent: nothing can match it
    with pytest.raises(ValueError, match="15 bytes"):
        new_challenge(lambda n: bytes(n - 1))


# ------------------------------------------------------------------------------------------ signatures
AUTH = {"Id": "ID1", "GenChallenge": base64.b64encode(bytes(range(16))).decode()}


def _independent_signature(body: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    """Annex J.2 built by hand (not with create_signature): digest of the element, ECDSA over SignedInfo."""
    digest = hashlib.sha256(encode("AuthorizationReq", body)).digest()
    signed_info = {
        "CanonicalizationMethod": {"Algorithm": "http://www.w3.org/TR/canonical-exi/"},
        "SignatureMethod": {"Algorithm": "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"},
        "Reference": [
            {
                "URI": "#" + body["Id"],
                "Transforms": {"Transform": [{"Algorithm": "http://www.w3.org/TR/canonical-exi/"}]},
                "DigestMethod": {"Algorithm": "http://www.w3.org/2001/04/xmlenc#sha256"},
                "DigestValue": base64.b64encode(digest).decode(),
            }
        ],
    }
    r, s = decode_dss_signature(key.sign(encode("SignedInfo", signed_info), ec.ECDSA(hashes.SHA256())))
    value = base64.b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).decode()
    return {"SignedInfo": signed_info, "SignatureValue": {"value": value}}


def test_an_ev_signature_made_by_hand_verifies_and_create_signature_makes_the_same_kind() -> None:
    key = pki().contract.key
    public = pki().contract.cert.public_key()
    verify_signature(_independent_signature(AUTH, key), {"ID1": ("AuthorizationReq", AUTH)}, public, encode)
    made = create_signature({"ID1": ("AuthorizationReq", AUTH)}, key, encode)
    [reference] = made["SignedInfo"]["Reference"]
    assert (
        reference["DigestValue"] == base64.b64encode(hashlib.sha256(encode("AuthorizationReq", AUTH)).digest()).decode()
    )
    verify_signature(made, {"ID1": ("AuthorizationReq", AUTH)}, public, encode)
    # It travels in the Header of a message the codec accepts.
    _ISO2.encode(
        {"V2G_Message": {"Header": {"SessionID": "00", "Signature": made}, "Body": {"AuthorizationReq": AUTH}}}
    )


def _tampered(change: str) -> tuple[dict[str, Any], dict[str, Any], Any]:
    p = pki()
    signature = create_signature({"ID1": ("AuthorizationReq", AUTH)}, p.contract.key, encode)
    body: dict[str, Any] = dict(AUTH)
    key: Any = p.contract.cert.public_key()
    info = signature["SignedInfo"]
    if change == "element":
        body["GenChallenge"] = base64.b64encode(bytes(16)).decode()
    elif change == "value":
        raw = bytearray(base64.b64decode(signature["SignatureValue"]["value"]))
        raw[5] ^= 1
        signature["SignatureValue"]["value"] = base64.b64encode(bytes(raw)).decode()
    elif change == "short-value":
        signature["SignatureValue"]["value"] = base64.b64encode(bytes(63)).decode()
    elif change == "key":
        key = p.oem.cert.public_key()
    elif change == "other-curve-key":
        key = ec.generate_private_key(ec.SECP384R1()).public_key()
    elif change == "digest-method":
        info["Reference"][0]["DigestMethod"]["Algorithm"] = "http://www.w3.org/2000/09/xmldsig#sha1"
    elif change == "signature-method":
        info["SignatureMethod"]["Algorithm"] = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
    elif change == "canonicalization":
        info["CanonicalizationMethod"]["Algorithm"] = "http://www.w3.org/2001/10/xml-exc-c14n#"
    elif change == "transform":
        info["Reference"][0]["Transforms"]["Transform"][0]["Algorithm"] = "http://example.invalid/"
    elif change == "other-reference":
        info["Reference"][0]["URI"] = "#ID2"
    elif change == "extra-reference":
        info["Reference"].append(dict(info["Reference"][0], URI="#ID9"))
    elif change == "duplicate-reference":
        info["Reference"].append(dict(info["Reference"][0]))
    elif change == "no-signature":
        return {}, body, key
    elif change == "not-encodable":
        body["Unknown"] = 1
    return signature, body, key


@pytest.mark.parametrize(
    "change",
    [
        "element",
        "value",
        "short-value",
        "key",
        "other-curve-key",
        "digest-method",
        "signature-method",
        "canonicalization",
        "transform",
        "other-reference",
        "extra-reference",
        "duplicate-reference",
        "no-signature",
        "not-encodable",
    ],
)
def test_a_signature_that_does_not_hold_is_a_signature_error(change: str) -> None:
    signature, body, key = _tampered(change)
    with pytest.raises(PncError) as caught:
        verify_signature(signature or None, {"ID1": ("AuthorizationReq", body)}, key, encode)
    assert caught.value.code is Code.SIGNATURE_ERROR


def test_the_algorithm_identifiers_are_the_annex_j_ones() -> None:
    assert CANONICAL_EXI == "http://www.w3.org/TR/canonical-exi/"
    assert ECDSA_SHA256 == "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
    assert DIGEST_SHA256 == "http://www.w3.org/2001/04/xmlenc#sha256"


# ------------------------------------------------------------------------------------------ fuzz
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(tree=_json)
def test_any_chain_tree_is_a_chain_error_or_a_chain(tree: Any) -> None:
    try:
        leaf, subs = chain_from_tree(tree)
        validate_contract_chain(leaf, subs, [pki().root.cert], NOW)
    except PncError as exc:
        assert exc.code is Code.CERT_CHAIN_ERROR


@settings(max_examples=150, deadline=None)
@given(signature=_json, body=st.dictionaries(st.sampled_from(["Id", "GenChallenge"]), _json, max_size=2))
def test_any_signature_tree_is_a_signature_error(signature: Any, body: dict[str, Any]) -> None:
    with pytest.raises(PncError) as caught:
        verify_signature(signature, {"ID1": ("AuthorizationReq", body)}, pki().contract.cert.public_key(), encode)
    assert caught.value.code is Code.SIGNATURE_ERROR


@settings(max_examples=100, deadline=None)
@given(blob=st.binary(max_size=900))
def test_any_bytes_as_a_certificate_are_a_chain_error(blob: bytes) -> None:
    with pytest.raises(PncError) as caught:
        validate_contract_chain(blob, [], [pki().root.cert], NOW)
    assert caught.value.code is Code.CERT_CHAIN_ERROR


def test_contract_dataclass_is_frozen() -> None:
    contract = validate(pki().contract, pki().sub2, pki().sub1)
    with pytest.raises(AttributeError):
        contract.emaid = "x"  # type: ignore[misc]
    assert replace(contract, emaid="other").emaid == "other"
