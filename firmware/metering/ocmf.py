"""Signed meter values in the Open Charge Metering Format (OCMF, SAFE e.V.; standards-facts.md 5.1).

A record is ``OCMF|<payload JSON>|<signature JSON>``. The payload is signed exactly as it is written
(no re-formatting, not even whitespace, between signing and verifying), so it is kept as text next
to its parsed form. Signatures are ECDSA on secp256r1 with SHA-256 (``SA`` "ECDSA-secp256r1-SHA256",
the default since OCMF 0.4), hex-encoded DER (``SE`` hex, ``SM`` application/x-der, the defaults).

The signing key is created at first boot in a file only the firmware can read (mode 0600, written
atomically); its public key, hex DER SubjectPublicKeyInfo as transparency software expects it, is
what the CSMS is told.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from firmware.files import write_atomic

#: OCMF signature algorithm identifier (OCMF "Signature" section, SA).
SIGNATURE_ALGORITHM = "ECDSA-secp256r1-SHA256"
#: The format version we write (payload FV).
FORMAT_VERSION = "1.0"
#: OCMF reading time: ``YYYY-MM-DDThh:mm:ss,fff+zzzz <status>`` (status S = synchronised clock).
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2},\d{3}[+-]\d{4} [UISR]$")
#: TX values of a reading (OCMF RD.TX): begin, charging, exception, end, local/remote stop, abort,
#: power failure, suspended, tariff change.
READING_TYPES = frozenset("BCXELRAPST")
#: Meter status values (OCMF RD.ST).
METER_STATUSES = frozenset("NGTDRMXIOSEF")

TimeStatus = Literal["U", "I", "S", "R"]


class OcmfError(ValueError):
    """A record that is not well-formed OCMF, or a key that cannot be used."""


def ocmf_time(moment: datetime, status: TimeStatus = "S") -> str:
    """An OCMF reading time: local offset written as +hhmm, milliseconds after a comma."""
    if moment.tzinfo is None:
        raise OcmfError(f"{moment!r} has no time zone")
    text = moment.strftime("%Y-%m-%dT%H:%M:%S,") + f"{moment.microsecond // 1000:03d}" + moment.strftime("%z")
    return f"{text} {status}"


@dataclass(frozen=True)
class Reading:
    """One reading of a record (OCMF RD entry)."""

    time: str  # ocmf_time()
    value_kwh: float
    reading_type: str = "C"  # TX
    status: str = "G"  # ST: G = OK
    obis: str = "01-00:01.08.00*FF"  # RI: active energy import, total
    error_flags: str = ""  # EF: "E" energy, "t" time (empty: no error)
    current_type: str = "AC"  # RT: AC or DC

    def to_json(self) -> dict[str, Any]:
        if not _TIME.match(self.time):
            raise OcmfError(f"reading time {self.time!r} is not 'YYYY-MM-DDThh:mm:ss,fff+zzzz S'")
        if (self.reading_type and self.reading_type not in READING_TYPES) or self.status not in METER_STATUSES:
            raise OcmfError(f"reading type {self.reading_type!r} / status {self.status!r} are not OCMF values")
        if self.current_type not in ("AC", "DC"):
            raise OcmfError(f"current type {self.current_type!r} is not AC or DC (RT)")
        if set(self.error_flags) - {"E", "t"}:
            raise OcmfError(f"error flags {self.error_flags!r} are not OCMF EF values (E, t)")
        out: dict[str, Any] = {"TM": self.time}
        if self.reading_type:  # fiscal readings have no TX
            out["TX"] = self.reading_type
        # Two decimals for kWh, as OCMF recommends; written once, never re-formatted. Cut, not rounded,
        # as a meter register shows only completed units (the 1e-6 absorbs binary float error:
        # 19.35 * 100 is 1934.9999999999998).
        out.update(
            {"RV": math.floor(self.value_kwh * 100 + 1e-6) / 100, "RI": self.obis, "RU": "kWh", "RT": self.current_type}
        )
        if self.error_flags:
            out["EF"] = self.error_flags
        out["ST"] = self.status
        return out


@dataclass(frozen=True)
class Identity:
    """Who charged (OCMF user assignment: IS, IL, IF, IT, ID)."""

    id_value: str | None = None
    id_type: str = "NONE"  # IT, e.g. ISO14443, LOCAL, NONE
    level: str = "NONE"  # IL
    flags: tuple[str, ...] = ()  # IF, at most 4

    def to_json(self) -> dict[str, Any]:
        if len(self.flags) > 4:
            raise OcmfError("OCMF allows at most 4 identification flags (IF)")
        out: dict[str, Any] = {"IS": self.id_value is not None, "IL": self.level, "IF": list(self.flags)}
        out["IT"] = self.id_type
        if self.id_value is not None:
            out["ID"] = self.id_value
        return out


@dataclass(frozen=True)
class MeterInfo:
    serial: str  # MS: the signing source's serial; records of one source share it
    vendor: str = "evse-firmware"  # MV
    model: str = "host-accumulated"  # MM
    firmware: str = "0.1.0"  # MF
    gateway_id: str | None = None  # GI
    gateway_serial: str | None = None  # GS
    gateway_version: str | None = None  # GV
    charge_controller_fw: str | None = None  # CF, at most 25 characters
    current_type: str = "AC"  # RT of its readings: what the meter measures
    extra: dict[str, Any] = field(default_factory=dict)


def payload(meter: MeterInfo, pagination: str, identity: Identity, readings: list[Reading]) -> dict[str, Any]:
    """The OCMF payload object. ``pagination`` is ``T<n>`` (transaction context) or ``F<n>``."""
    if not re.fullmatch(r"[TF][1-9]\d*", pagination):
        raise OcmfError(f"pagination {pagination!r}: T or F and a number without leading zeros (PG)")
    if not readings:
        raise OcmfError("an OCMF record needs at least one reading (RD)")
    out: dict[str, Any] = {"FV": FORMAT_VERSION}
    for key, value in (("GI", meter.gateway_id), ("GS", meter.gateway_serial), ("GV", meter.gateway_version)):
        if value is not None:
            out[key] = value
    out["PG"] = pagination
    out.update({"MV": meter.vendor, "MM": meter.model, "MS": meter.serial, "MF": meter.firmware})
    out.update(identity.to_json())
    if meter.charge_controller_fw is not None:
        out["CF"] = meter.charge_controller_fw[:25]
    out.update(meter.extra)
    out["RD"] = [r.to_json() for r in readings]
    return out


# ------------------------------------------------------------------------------------------- keys
def load_or_create_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The station's signing key: read from ``path``, or created there at first boot (0600, atomic)."""
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise OcmfError(f"{path}: cannot read the OCMF signing key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise OcmfError(f"{path}: the OCMF signing key must be an EC secp256r1 key")
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        write_atomic(path, pem)  # private: 0600
    except OSError as exc:
        raise OcmfError(f"{path}: cannot store the OCMF signing key: {exc}") from exc
    return key


def public_key_hex(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    """Hex DER SubjectPublicKeyInfo: the form OCMF transparency software takes."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo).hex()


def public_key_from(text: str) -> ec.EllipticCurvePublicKey:
    """A public key given as hex DER, base64 DER or PEM text."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        elif re.fullmatch(r"[0-9a-fA-F]+", text):
            key = serialization.load_der_public_key(bytes.fromhex(text))
        else:  # base64 DER, as OCPP 2.0.1 SignedMeterValueType.publicKey carries it
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except ValueError as exc:
        raise OcmfError(f"not a public key (hex or base64 DER, or PEM): {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise OcmfError("the public key must be an EC secp256r1 key")
    return key


# ------------------------------------------------------------------------------------------- records
def sign(data: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    """The OCMF record of ``data`` signed with ``key``."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if "|" in text:
        raise OcmfError("'|' is not allowed inside an OCMF section")
    signature = key.sign(text.encode("utf-8"), ec.ECDSA(hashes.SHA256()))
    sig = json.dumps({"SA": SIGNATURE_ALGORITHM, "SD": signature.hex()}, separators=(",", ":"))
    return f"OCMF|{text}|{sig}"


@dataclass(frozen=True)
class ParsedRecord:
    payload_text: str  # exactly as signed
    payload: dict[str, Any]
    signature: dict[str, Any]

    @property
    def signature_der(self) -> bytes:
        encoding = self.signature.get("SE", "hex")
        data = self.signature.get("SD")
        if not isinstance(data, str):
            raise OcmfError("the signature section has no SD")
        try:
            if encoding == "hex":
                return bytes.fromhex(data)
            if encoding == "base64":
                return base64.b64decode(data, validate=True)
        except ValueError as exc:
            raise OcmfError(f"SD is not valid {encoding}: {exc}") from exc
        raise OcmfError(f"signature encoding SE={encoding!r} is not supported (hex, base64)")


def parse(record: str) -> ParsedRecord:
    """Split and check an OCMF record; a clear OcmfError for anything malformed."""
    if not isinstance(record, str) or not record.startswith("OCMF|"):
        raise OcmfError("an OCMF record starts with 'OCMF|'")
    parts = record.strip().split("|")
    if len(parts) != 3:
        raise OcmfError(f"an OCMF record has 3 sections separated by '|', this one has {len(parts)}")
    _, payload_text, signature_text = parts
    try:
        data = json.loads(payload_text)
        sig = json.loads(signature_text)
    except ValueError as exc:
        raise OcmfError(f"a section is not JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(sig, dict):
        raise OcmfError("both sections must be JSON objects")
    for key in ("FV", "PG", "MS", "RD"):
        if key not in data:
            raise OcmfError(f"the payload lacks {key}")
    if not isinstance(data["RD"], list) or not data["RD"]:
        raise OcmfError("RD must be a non-empty list of readings")
    algorithm = sig.get("SA", SIGNATURE_ALGORITHM)
    if algorithm != SIGNATURE_ALGORITHM:
        raise OcmfError(f"signature algorithm {algorithm!r} is not supported ({SIGNATURE_ALGORITHM})")
    if sig.get("SM", "application/x-der") != "application/x-der":
        raise OcmfError(f"signature format SM={sig.get('SM')!r} is not supported (application/x-der)")
    return ParsedRecord(payload_text, data, sig)


def verify(record: str, public_key: ec.EllipticCurvePublicKey) -> ParsedRecord:
    """The parsed record when its signature is valid for ``public_key``; OcmfError otherwise."""
    parsed = parse(record)
    try:
        public_key.verify(parsed.signature_der, parsed.payload_text.encode("utf-8"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise OcmfError("the signature does not match the payload and the public key") from exc
    return parsed


def now_reading(value_kwh: float, reading_type: str, moment: datetime | None = None) -> Reading:
    return Reading(ocmf_time(moment or datetime.now(UTC)), value_kwh, reading_type)
