"""ISO 15118-2 Plug & Charge on the SECC side: contract certificate chains, the GenChallenge, the EV's
signatures, and the seams to the backend and to the EXI codec.

What the SECC checks itself (ISO 15118-2 Annex F; the certificate profiles as the ``iso15118``
package's test PKI encodes them, ``shared/pki/configs/*.cnf``):

* the contract certificate chain of PaymentDetailsReq / CertificateUpdateReq: leaf first, then its
  issuer, then that one's issuer (``SubCertificates`` in chain order, at most two sub-CAs: V2G or MO root
  -> Sub-CA 1 -> Sub-CA 2 -> contract certificate), every link signed by the next, the last one signed by
  one of the configured root certificates; every certificate within its validity period; CA certificates
  with BasicConstraints CA=true, a path length that allows the certificates below them and KeyUsage
  keyCertSign; the leaf not a CA, with KeyUsage digitalSignature and a secp256r1 key (ISO 15118-2 signs
  with ECDSA on secp256r1 and SHA-256);
* the eMAID: the common name of the contract certificate's subject;
* the EV's xmldsig signature in the message Header (ISO 15118-2 Annex J.2, as the ``iso15118`` package
  cites it): canonical EXI, ECDSA-SHA256, one SHA-256 Reference per signed element, the SignatureValue as
  the raw 32-byte r and s.

What it leaves to others, through the seams below: revocation and the contract's standing
(:class:`PncPort.contract_status`: the CSMS's Authorize with the certificate hash data, or a local list),
certificate installation and update (the CSMS / CPS via OCPP Get15118EVCertificate), and the EXI
encoding a signature covers (:class:`SignedElementEncoder`, built on the project's codec).

Every failure is a :class:`PncError` carrying the ISO 15118-2 ResponseCode that answers it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from itertools import pairwise
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import NameOID

# ----------------------------------------------------------------------------------------- constants
CERTIFICATE_MAX_BYTES = 800  # certificateType: base64Binary maxLength 800 (V2G_CI_MsgDataTypes.xsd)
SUB_CERTIFICATES_MAX = 4  # SubCertificatesType: Certificate maxOccurs 4 (V2G_CI_MsgDataTypes.xsd)
MAX_SUB_CAS = 2  # ISO 15118-2 Annex F: at most two sub-CA levels below a V2G or MO root
GEN_CHALLENGE_BYTES = 16  # genChallengeType: base64Binary length 16 (V2G_CI_MsgDataTypes.xsd)
EMAID_MIN_CHARS, EMAID_MAX_CHARS = 14, 15  # eMAIDType (V2G_CI_MsgDataTypes.xsd)
SIGNATURE_VALUE_BYTES = 64  # r || s, 32 bytes each on secp256r1 (ISO 15118-2 Annex J.2)

# xmldsig algorithm identifiers of ISO 15118-2 signatures (Annex J.2; the iso15118 package's security.py).
CANONICAL_EXI = "http://www.w3.org/TR/canonical-exi/"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
DIGEST_SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"


class Code(StrEnum):
    """The ISO 15118-2 ResponseCodes a Plug & Charge check can end in (responseCodeType)."""

    FAILED = "FAILED"
    SIGNATURE_ERROR = "FAILED_SignatureError"
    CERTIFICATE_EXPIRED = "FAILED_CertificateExpired"
    CERTIFICATE_REVOKED = "FAILED_CertificateRevoked"
    NO_CERTIFICATE_AVAILABLE = "FAILED_NoCertificateAvailable"
    CERT_CHAIN_ERROR = "FAILED_CertChainError"
    CHALLENGE_INVALID = "FAILED_ChallengeInvalid"
    CONTRACT_CANCELED = "FAILED_ContractCanceled"


class PncError(ValueError):
    """A Plug & Charge check failed: ``code`` is the ResponseCode that answers it, the message says why."""

    def __init__(self, code: Code, why: str) -> None:
        super().__init__(why)
        self.code = code


class ContractStatus(StrEnum):
    """The backend's word on a validated contract (OCPP 2.0.1 AuthorizeCertificateStatusEnumType plus
    the idToken's standing, and PENDING while the answer is still to come)."""

    ACCEPTED = "Accepted"
    PENDING = "Pending"  # AuthorizationRes answers Ongoing until the backend has spoken
    REJECTED = "Rejected"  # the eMAID is not allowed here (blocked, unknown, no credit)
    SIGNATURE_ERROR = "SignatureError"
    CERTIFICATE_EXPIRED = "CertificateExpired"
    CERTIFICATE_REVOKED = "CertificateRevoked"
    NO_CERTIFICATE_AVAILABLE = "NoCertificateAvailable"
    CERT_CHAIN_ERROR = "CertChainError"
    CONTRACT_CANCELLED = "ContractCancelled"


#: The ResponseCode each refusal answers (PaymentDetailsRes may carry all of them; AuthorizationRes only
#: FAILED, FAILED_SignatureError and FAILED_ChallengeInvalid besides the sequence codes, so the session
#: maps the others to FAILED there).
STATUS_CODE: dict[ContractStatus, Code] = {
    ContractStatus.REJECTED: Code.FAILED,
    ContractStatus.SIGNATURE_ERROR: Code.SIGNATURE_ERROR,
    ContractStatus.CERTIFICATE_EXPIRED: Code.CERTIFICATE_EXPIRED,
    ContractStatus.CERTIFICATE_REVOKED: Code.CERTIFICATE_REVOKED,
    ContractStatus.NO_CERTIFICATE_AVAILABLE: Code.NO_CERTIFICATE_AVAILABLE,
    ContractStatus.CERT_CHAIN_ERROR: Code.CERT_CHAIN_ERROR,
    ContractStatus.CONTRACT_CANCELLED: Code.CONTRACT_CANCELED,
}


@dataclass(frozen=True)
class Contract:
    """A contract certificate chain that passed the checks above, and its eMAID."""

    emaid: str
    leaf: x509.Certificate
    sub_cas: tuple[x509.Certificate, ...]  # the leaf's issuer first
    root: x509.Certificate

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """Leaf to root (what OCPP's iso15118CertificateHashData is computed over)."""
        return (self.leaf, *self.sub_cas, self.root)

    @property
    def expires(self) -> datetime:
        return min(cert.not_valid_after_utc for cert in self.chain)


class SignedElementEncoder(Protocol):
    """The seam to the EXI codec: the bytes an ISO 15118-2 signature covers (Annex J.2).

    ``element`` is the local name of what is signed, ``tree`` its content in the codec's tree form:

    * a signed body element (``AuthorizationReq``, ``MeteringReceiptReq``, ``CertificateInstallationReq``,
      ``CertificateUpdateReq``; the ``Id`` attribute included): its canonical EXI encoding with the
      ISO 15118-2 MsgDef grammar, the element as the document's root, as a Reference's DigestValue is
      computed over;
    * ``SignedInfo``: its canonical EXI encoding with the xmldsig grammar, which the SignatureValue signs.

    It raises ValueError (the codec's ExiEncodeError is one) for a tree it cannot encode; the check then
    fails with FAILED_SignatureError.
    """

    def __call__(self, element: str, tree: Mapping[str, Any]) -> bytes: ...


class PncPort(Protocol):
    """What Plug & Charge needs from the charger's backend. Every method returns at once, like the
    charger ports: the backend round trip of a certificate request (OCPP Get15118EVCertificate) cannot
    happen inside the call, and ISO 15118-2 has no Ongoing answer for it, so the runner awaits it before
    it hands the request to the session (the EV waits at most 5 s, the SECC answers within 4.5 s:
    ``iso2.CERTIFICATE_ANSWER_WITHIN_S``) and the port returns what came back."""

    def contract_status(self, contract: Contract) -> ContractStatus:
        """The backend's decision on a contract whose chain the SECC validated (OCPP Authorize with the
        eMAID and the chain's hash data, or a local authorisation list); PENDING while it is awaited."""
        ...

    def certificate_installation(self, request: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The CPS's answer to a CertificateInstallationReq: ``request`` is the whole ``V2G_Message``
        tree the EV sent (its Header Signature included: the CPS checks it), the answer a whole
        ``V2G_Message`` tree with a CertificateInstallationRes Body and the CPS's Signature in its
        Header; None when no backend or no certificate is available."""
        ...

    def certificate_update(self, request: Mapping[str, Any], contract: Contract) -> Mapping[str, Any] | None:
        """The same for a CertificateUpdateReq, whose old contract chain the SECC validated."""
        ...


@dataclass(frozen=True)
class PlugAndCharge:
    """Plug & Charge as configured on a charger: the trusted roots (V2G roots, and MO roots where the
    operator trusts them directly), the backend and the codec seam."""

    roots: tuple[x509.Certificate, ...]
    port: PncPort
    encode: SignedElementEncoder

    def __post_init__(self) -> None:
        if not self.roots:
            raise ValueError("PlugAndCharge.roots: at least one V2G root certificate is needed")
        for root in self.roots:
            check_root(root)


# ----------------------------------------------------------------------------------------- certificates
def load_certificate(blob: bytes, *, what: str = "certificate") -> x509.Certificate:
    """A PEM or DER certificate from configuration; ValueError naming ``what`` when it is neither."""
    try:
        if blob.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(blob)
        return x509.load_der_x509_certificate(blob)
    except ValueError as exc:
        raise ValueError(f"{what}: not a PEM or DER X.509 certificate ({exc})") from exc


def load_roots(blobs: Iterable[bytes]) -> tuple[x509.Certificate, ...]:
    """Root certificates from configuration files' contents, each checked by :func:`check_root`."""
    roots = tuple(load_certificate(blob, what=f"root certificate {i + 1}") for i, blob in enumerate(blobs))
    for root in roots:
        check_root(root)
    return roots


def check_root(root: x509.Certificate) -> None:
    """A configured root must be a self-signed CA allowed to sign certificates (Annex F root profile)."""
    name = root.subject.rfc4514_string()
    if not _is_ca(root) or not _can_sign_certificates(root):
        raise ValueError(f"root certificate {name}: not a CA with KeyUsage keyCertSign")
    try:
        root.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ValueError(f"root certificate {name}: not self-signed") from exc


def decode_certificate(value: Any, *, what: str) -> bytes:
    """The DER bytes of one base64 ``certificateType`` value from a message."""
    if not isinstance(value, str):
        raise PncError(Code.CERT_CHAIN_ERROR, f"{what} is not base64 text")
    try:
        der = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PncError(Code.CERT_CHAIN_ERROR, f"{what} is not base64") from exc
    if not der or len(der) > CERTIFICATE_MAX_BYTES:
        raise PncError(Code.CERT_CHAIN_ERROR, f"{what} has {len(der)} bytes, not 1..{CERTIFICATE_MAX_BYTES}")
    return der


def chain_from_tree(tree: Any) -> tuple[bytes, list[bytes]]:
    """(leaf DER, sub-CA DERs in the order sent) from a ``CertificateChainType`` tree."""
    if not isinstance(tree, Mapping):
        raise PncError(Code.CERT_CHAIN_ERROR, "the certificate chain is not a structure")
    leaf = decode_certificate(tree.get("Certificate"), what="the contract certificate")
    subs: list[bytes] = []
    sub_tree = tree.get("SubCertificates")
    if sub_tree is not None:
        items = sub_tree.get("Certificate") if isinstance(sub_tree, Mapping) else None
        listed = items if isinstance(items, list) else [items]
        if not 1 <= len(listed) <= SUB_CERTIFICATES_MAX:
            raise PncError(Code.CERT_CHAIN_ERROR, f"SubCertificates holds {len(listed)} certificates")
        subs = [decode_certificate(item, what=f"sub-CA certificate {i + 1}") for i, item in enumerate(listed)]
    return leaf, subs


def _parse(der: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise PncError(Code.CERT_CHAIN_ERROR, f"{what} is not a DER X.509 certificate") from exc


def validate_contract_chain(
    leaf_der: bytes, sub_ca_ders: Sequence[bytes], roots: Sequence[x509.Certificate], now: datetime
) -> Contract:
    """Check a contract certificate chain as the module docstring lists; the Contract, or PncError."""
    if len(sub_ca_ders) > MAX_SUB_CAS:
        raise PncError(Code.CERT_CHAIN_ERROR, f"{len(sub_ca_ders)} sub-CA certificates, at most {MAX_SUB_CAS}")
    leaf = _parse(leaf_der, "the contract certificate")
    subs = tuple(_parse(der, f"sub-CA certificate {i + 1}") for i, der in enumerate(sub_ca_ders))
    _check_leaf(leaf)
    for i, sub in enumerate(subs):
        _check_ca(sub, below=i, what=f"sub-CA certificate {i + 1}")
    chain = (leaf, *subs)
    for child, issuer in pairwise(chain):
        _check_issued(child, issuer)
    top = chain[-1]
    root = next((r for r in roots if _issued_by(top, r)), None)
    if root is None:
        top_issuer = top.issuer.rfc4514_string()
        raise PncError(Code.CERT_CHAIN_ERROR, f"the chain ends at {top_issuer}, which is not a configured root")
    _check_ca(root, below=len(subs), what="the root certificate")
    for cert in (*chain, root):
        _check_validity(cert, now)
    return Contract(emaid_of(leaf), leaf, subs, root)


def check_certificate_validity(cert: x509.Certificate, now: datetime) -> None:
    """FAILED_CertificateExpired unless ``now`` lies within the certificate's validity period."""
    _check_validity(cert, now)


def emaid_of(cert: x509.Certificate) -> str:
    """The eMAID: the common name of the contract certificate's subject (ISO 15118-2 Annex F)."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str) or not names[0].value:
        raise PncError(Code.CERT_CHAIN_ERROR, "the contract certificate has no single common name (the eMAID)")
    return names[0].value


def same_emaid(a: str, b: str) -> bool:
    """eMAIDs compared case-insensitively, with or without the '-' separators the written form uses."""
    return a.replace("-", "").upper() == b.replace("-", "").upper()


def _check_leaf(leaf: x509.Certificate) -> None:
    if _is_ca(leaf):
        raise PncError(Code.CERT_CHAIN_ERROR, "the contract certificate is a CA certificate")
    usage = _key_usage(leaf)
    if usage is None or not usage.digital_signature:
        raise PncError(Code.CERT_CHAIN_ERROR, "the contract certificate lacks KeyUsage digitalSignature")
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise PncError(Code.CERT_CHAIN_ERROR, "the contract certificate's key is not an secp256r1 key")


def _check_ca(cert: x509.Certificate, *, below: int, what: str) -> None:
    """A CA certificate with ``below`` CA certificates under it in the chain."""
    constraints = _basic_constraints(cert)
    if constraints is None or not constraints.ca:
        raise PncError(Code.CERT_CHAIN_ERROR, f"{what} is not a CA (BasicConstraints)")
    if constraints.path_length is not None and constraints.path_length < below:
        raise PncError(Code.CERT_CHAIN_ERROR, f"{what} has path length {constraints.path_length}, {below} needed")
    if not _can_sign_certificates(cert):
        raise PncError(Code.CERT_CHAIN_ERROR, f"{what} lacks KeyUsage keyCertSign")


def _check_issued(child: x509.Certificate, issuer: x509.Certificate) -> None:
    if not _issued_by(child, issuer):
        raise PncError(
            Code.CERT_CHAIN_ERROR,
            f"{child.subject.rfc4514_string()} is not signed by the next certificate of the chain "
            f"({issuer.subject.rfc4514_string()}): wrong order or a broken chain",
        )


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_validity(cert: x509.Certificate, now: datetime) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise PncError(
            Code.CERTIFICATE_EXPIRED,
            f"{cert.subject.rfc4514_string()} is valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not now ({now:%Y-%m-%d %H:%M})",
        )


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _is_ca(cert: x509.Certificate) -> bool:
    constraints = _basic_constraints(cert)
    return constraints is not None and constraints.ca


def _can_sign_certificates(cert: x509.Certificate) -> bool:
    usage = _key_usage(cert)
    return usage is not None and usage.key_cert_sign


def utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


# ----------------------------------------------------------------------------------------- the challenge
def new_challenge(random_bytes: Callable[[int], bytes] = os.urandom) -> bytes:
    """A fresh GenChallenge for PaymentDetailsRes (16 random bytes)."""
    challenge = random_bytes(GEN_CHALLENGE_BYTES)
    if len(challenge) != GEN_CHALLENGE_BYTES:
        raise ValueError(f"the random source gave {len(challenge)} bytes, {GEN_CHALLENGE_BYTES} needed")
    return challenge


def check_challenge(sent: bytes, received: Any) -> None:
    """FAILED_ChallengeInvalid unless the AuthorizationReq returns the challenge of PaymentDetailsRes."""
    try:
        echoed = base64.b64decode(received, validate=True) if isinstance(received, str) else b""
    except (binascii.Error, ValueError):
        echoed = b""
    if not sent or not hmac.compare_digest(sent, echoed):
        raise PncError(Code.CHALLENGE_INVALID, "the GenChallenge is not the one PaymentDetailsRes sent")


# ----------------------------------------------------------------------------------------- signatures
def create_signature(
    elements: Mapping[str, tuple[str, Mapping[str, Any]]],
    key: ec.EllipticCurvePrivateKey,
    encode: SignedElementEncoder,
) -> dict[str, Any]:
    """The Header ``Signature`` over ``elements`` (Id -> (element name, tree)), as Annex J.2 builds it:
    for the EV simulator, and for tests."""
    references = [
        {
            "URI": "#" + element_id,
            "Transforms": {"Transform": [{"Algorithm": CANONICAL_EXI}]},
            "DigestMethod": {"Algorithm": DIGEST_SHA256},
            "DigestValue": base64.b64encode(hashlib.sha256(encode(name, tree)).digest()).decode(),
        }
        for element_id, (name, tree) in elements.items()
    ]
    signed_info = {
        "CanonicalizationMethod": {"Algorithm": CANONICAL_EXI},
        "SignatureMethod": {"Algorithm": ECDSA_SHA256},
        "Reference": references,
    }
    r, s = decode_dss_signature(key.sign(encode("SignedInfo", signed_info), ec.ECDSA(hashes.SHA256())))
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return {"SignedInfo": signed_info, "SignatureValue": {"value": base64.b64encode(raw).decode()}}


def verify_signature(
    signature: Any,
    elements: Mapping[str, tuple[str, Mapping[str, Any]]],
    key: Any,
    encode: SignedElementEncoder,
) -> None:
    """Check the Header ``Signature`` of a message: exactly one Reference per element of ``elements``
    (Id -> (element name, tree)), none to anything else, every digest right, the SignatureValue made with
    the private key of ``key`` (the signer's certificate's public key). FAILED_SignatureError otherwise."""
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise PncError(Code.SIGNATURE_ERROR, "the signer's key is not an secp256r1 key")
    if not isinstance(signature, Mapping):
        raise PncError(Code.SIGNATURE_ERROR, "the message has no Signature in its Header")
    signed_info = signature.get("SignedInfo")
    if not isinstance(signed_info, Mapping):
        raise PncError(Code.SIGNATURE_ERROR, "the Signature has no SignedInfo")
    _expect_algorithm(signed_info.get("CanonicalizationMethod"), CANONICAL_EXI, "CanonicalizationMethod")
    _expect_algorithm(signed_info.get("SignatureMethod"), ECDSA_SHA256, "SignatureMethod")
    references = signed_info.get("Reference")
    listed = references if isinstance(references, list) else [references]
    by_uri: dict[str, Mapping[str, Any]] = {}
    for item in listed:
        if not isinstance(item, Mapping):
            raise PncError(Code.SIGNATURE_ERROR, "SignedInfo has no Reference")
        uri = item.get("URI")
        if not isinstance(uri, str) or not uri.startswith("#") or uri[1:] not in elements or uri in by_uri:
            raise PncError(Code.SIGNATURE_ERROR, f"a Reference to {uri!r} is not one to a signed element")
        by_uri[uri] = item
    for element_id, (name, tree) in elements.items():
        reference = by_uri.get("#" + element_id)
        if reference is None:
            raise PncError(Code.SIGNATURE_ERROR, f"{name} (Id {element_id!r}) is not signed")
        _check_reference(reference, name, tree, encode)
    value = signature.get("SignatureValue")
    raw = _b64(value.get("value") if isinstance(value, Mapping) else None, "SignatureValue")
    if len(raw) != SIGNATURE_VALUE_BYTES:
        raise PncError(Code.SIGNATURE_ERROR, f"SignatureValue has {len(raw)} bytes, not {SIGNATURE_VALUE_BYTES}")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        key.verify(der, _encoded("SignedInfo", signed_info, encode), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise PncError(Code.SIGNATURE_ERROR, "the SignatureValue does not verify with the signer's key") from exc


def _check_reference(reference: Mapping[str, Any], name: str, tree: Mapping[str, Any], encode: Any) -> None:
    transforms = reference.get("Transforms")
    if transforms is not None:
        items = transforms.get("Transform") if isinstance(transforms, Mapping) else None
        for transform in items if isinstance(items, list) else [items]:
            _expect_algorithm(transform, CANONICAL_EXI, "Transform")
    _expect_algorithm(reference.get("DigestMethod"), DIGEST_SHA256, "DigestMethod")
    digest = _b64(reference.get("DigestValue"), "DigestValue")
    if not hmac.compare_digest(digest, hashlib.sha256(_encoded(name, tree, encode)).digest()):
        raise PncError(Code.SIGNATURE_ERROR, f"the digest of {name} does not match its Reference")


def _encoded(name: str, tree: Mapping[str, Any], encode: SignedElementEncoder) -> bytes:
    try:
        return encode(name, tree)
    except ValueError as exc:
        raise PncError(Code.SIGNATURE_ERROR, f"{name} cannot be EXI-encoded to check its signature: {exc}") from exc


def _expect_algorithm(node: Any, algorithm: str, what: str) -> None:
    found = node.get("Algorithm") if isinstance(node, Mapping) else None
    if found != algorithm:
        raise PncError(Code.SIGNATURE_ERROR, f"{what} {found!r} is not {algorithm}")


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise PncError(Code.SIGNATURE_ERROR, f"{what} is missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PncError(Code.SIGNATURE_ERROR, f"{what} is not base64") from exc
