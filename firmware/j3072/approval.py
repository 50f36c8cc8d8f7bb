"""The utility's approval list of Inverter System Models, signed, with a validity, kept across power cuts.

Seed 003 / R107: a utility may require its approval of the PEV's ISM number for its service area, kept
in a database the EVSE checks after plug-in. Here that database is a signed document the utility issues
(format 1, JSON)::

    {"format": 1, "issuer": "PG&E", "service_area": "PGE-BAY", "serial": 4,
     "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00Z",
     "ism_numbers": ["ACME/OBI/7K6A/J3072_202406", ...], "signature": "<base64>"}

``signature`` is ECDSA P-256 with SHA-256 (DER) over the canonical JSON of every other field (sorted keys,
no spaces, UTF-8). The EVSE knows each issuer's public key (configuration). A list is refused when its
signature does not verify (tampered), its issuer or service area is not this site's, it is not valid now,
or its serial is older than the list in force (a replayed old list). A refused update keeps the list in
force; an accepted one is written atomically (firmware.files.write_atomic), so a power cut leaves the old
or the new list, never a torn one. The list's validity is checked at every question, so a list that
expires mid-session stops approving.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from firmware.files import write_atomic
from firmware.j3072.gatekeeper import ApprovalFact

log = logging.getLogger(__name__)

__all__ = [
    "ApprovalCheck",
    "ApprovalList",
    "ApprovalListError",
    "ApprovalStore",
    "canonical",
    "load_trusted_keys",
    "sign_list",
]

FORMAT = 1
#: A list larger than this is refused before parsing: a service area's approved models number in the
#: hundreds, not the tens of thousands.
MAX_BYTES = 256 * 1024
MAX_NUMBERS = 10_000
_KEYS = {"format", "issuer", "service_area", "serial", "valid_from", "valid_until", "ism_numbers", "signature"}


class ApprovalListError(ValueError):
    """An approval list that cannot be used; the message says why (tampered, expired, ...)."""


@dataclass(frozen=True)
class ApprovalList:
    issuer: str
    service_area: str
    serial: int
    valid_from: float  # Unix seconds
    valid_until: float
    ism_numbers: frozenset[str]


#: The list's answer for one ISM number is the gate's approval fact itself (approved, reason, detail).
ApprovalCheck = ApprovalFact


def canonical(document: Mapping[str, Any]) -> bytes:
    """The signed bytes: every field but the signature, canonical JSON."""
    body = {k: v for k, v in document.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_list(document: Mapping[str, Any], key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    """``document`` with its signature (what a utility's tool does; the tests and the HIL rig use it)."""
    signature = key.sign(canonical(document), ec.ECDSA(hashes.SHA256()))
    return {**document, "signature": base64.b64encode(signature).decode()}


def load_trusted_keys(entries: Mapping[str, str]) -> dict[str, ec.EllipticCurvePublicKey]:
    """Issuer name -> PEM public key text, each checked to be an EC P-256 key."""
    keys = {}
    for issuer, pem in entries.items():
        try:
            key = serialization.load_pem_public_key(pem.encode())
        except ValueError as exc:
            raise ApprovalListError(f"the key of issuer {issuer!r} is not a PEM public key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ApprovalListError(f"the key of issuer {issuer!r} is not an EC P-256 key")
        keys[issuer] = key
    return keys


def _time(document: Mapping[str, Any], key: str) -> float:
    value = document.get(key)
    if not isinstance(value, str) or not value.endswith("Z"):
        raise ApprovalListError(f"{key} must be an RFC 3339 UTC time ending in Z, not {value!r}")
    try:
        parsed = datetime.fromisoformat(value[:-1]).replace(tzinfo=UTC)
    except ValueError:
        raise ApprovalListError(f"{key} {value!r} is not an RFC 3339 time") from None
    return parsed.timestamp()


def parse_and_verify(
    data: bytes, trusted: Mapping[str, ec.EllipticCurvePublicKey], service_area: str, now: float
) -> ApprovalList:
    """The list in ``data`` if its signature, issuer, service area and validity hold at ``now``."""
    if len(data) > MAX_BYTES:
        raise ApprovalListError(f"the list is {len(data)} bytes, more than {MAX_BYTES}")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApprovalListError(f"the list is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ApprovalListError("the list must be a JSON object")
    unknown = sorted(set(document) - _KEYS)
    if unknown:
        raise ApprovalListError(f"unknown field {unknown[0]!r}")
    if document.get("format") != FORMAT:
        raise ApprovalListError(f"format {document.get('format')!r} is not supported ({FORMAT} is)")
    issuer = document.get("issuer")
    if not isinstance(issuer, str) or issuer not in trusted:
        raise ApprovalListError(f"issuer {issuer!r} is not a trusted issuer of this site")
    signature = document.get("signature")
    try:
        raw = base64.b64decode(signature, validate=True) if isinstance(signature, str) else b""
        trusted[issuer].verify(raw, canonical(document), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise ApprovalListError(f"the signature does not verify with {issuer}'s key: the list was tampered") from None
    area = document.get("service_area")
    if area != service_area:
        raise ApprovalListError(f"the list is for service area {area!r}, this site is in {service_area!r}")
    serial = document.get("serial")
    if not isinstance(serial, int) or isinstance(serial, bool) or serial < 1:
        raise ApprovalListError(f"serial must be an integer >= 1, not {serial!r}")
    valid_from, valid_until = _time(document, "valid_from"), _time(document, "valid_until")
    if valid_until <= valid_from:
        raise ApprovalListError("valid_until must be after valid_from")
    numbers = document.get("ism_numbers")
    if not isinstance(numbers, list) or len(numbers) > MAX_NUMBERS or not all(isinstance(n, str) for n in numbers):
        raise ApprovalListError(f"ism_numbers must be a list of at most {MAX_NUMBERS} texts")
    cleaned = [n.strip() for n in numbers]
    if len(set(cleaned)) != len(cleaned):
        raise ApprovalListError("ism_numbers lists a number twice")
    approvals = ApprovalList(issuer, area, serial, valid_from, valid_until, frozenset(cleaned))
    problem = _validity(approvals, now)
    if problem is not None:
        raise ApprovalListError(problem[1])
    return approvals


def _validity(approvals: ApprovalList, now: float) -> tuple[str, str] | None:
    if now < approvals.valid_from:
        return "list_not_yet_valid", f"the list of {approvals.issuer} (serial {approvals.serial}) is not valid yet"
    if now >= approvals.valid_until:
        until = datetime.fromtimestamp(approvals.valid_until, UTC).isoformat(timespec="seconds")
        return "list_expired", f"the list of {approvals.issuer} (serial {approvals.serial}) expired at {until}"
    return None


class ApprovalStore:
    """The list in force, loaded from and saved to ``path`` (None: kept in memory only)."""

    def __init__(
        self,
        path: Path | None,
        trusted: Mapping[str, ec.EllipticCurvePublicKey],
        service_area: str,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.trusted = dict(trusted)
        self.service_area = service_area
        self.wall_clock = wall_clock
        self.current: ApprovalList | None = None
        self.last_error: str | None = None

    def load(self) -> None:
        """At boot: the stored list, if it still verifies (a damaged or tampered file: no list). A list that
        has expired since it was stored is kept: its expiry is reported at each check."""
        self.current = None
        if self.path is None or not self.path.exists():
            return
        try:
            data = self.path.read_bytes()
            self.current = parse_and_verify(data, self.trusted, self.service_area, now=self._validity_probe(data))
        except (OSError, ApprovalListError) as exc:
            self.last_error = f"{self.path}: {exc}"
            log.error("J3072 approval list not used: %s", self.last_error)

    def _validity_probe(self, data: bytes) -> float:
        """The time to check the stored list's signature and fields at: its own start, so that a stored
        list that has expired meanwhile still loads (and says it expired) instead of vanishing."""
        try:
            document = json.loads(data)
            return _time(document, "valid_from") if isinstance(document, dict) else self.wall_clock()
        except (ValueError, ApprovalListError):
            return self.wall_clock()

    def update(self, data: bytes) -> ApprovalList:
        """A new list (backend or file): verified, no older than the one in force, then stored."""
        try:
            approvals = parse_and_verify(data, self.trusted, self.service_area, self.wall_clock())
            if self.current is not None and approvals.serial < self.current.serial:
                raise ApprovalListError(
                    f"serial {approvals.serial} is older than the list in force ({self.current.serial})"
                )
        except ApprovalListError as exc:
            self.last_error = f"update refused: {exc}"
            raise
        if self.path is not None:
            write_atomic(self.path, data, mode=0o644)
        self.current, self.last_error = approvals, None
        return approvals

    def check(self, ism: str) -> ApprovalCheck:
        approvals = self.current
        if approvals is None:
            detail = "no approval list" + (f" ({self.last_error})" if self.last_error else "")
            return ApprovalCheck(False, "no_list", detail)
        problem = _validity(approvals, self.wall_clock())
        if problem is not None:
            return ApprovalCheck(False, problem[0], problem[1])
        if ism.strip() in approvals.ism_numbers:
            return ApprovalCheck(True, "approved", f"listed by {approvals.issuer} (serial {approvals.serial})")
        return ApprovalCheck(
            False, "ism_not_listed", f"{ism} is not on the list of {approvals.issuer} (serial {approvals.serial})"
        )


def document(
    issuer: str, service_area: str, serial: int, valid_from: float, valid_until: float, numbers: list[str]
) -> dict[str, Any]:
    """An unsigned list document (times as Unix seconds, written RFC 3339 UTC)."""

    def stamp(t: float) -> str:
        if not math.isfinite(t):
            raise ValueError("times must be finite")
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    return {
        "format": FORMAT,
        "issuer": issuer,
        "service_area": service_area,
        "serial": serial,
        "valid_from": stamp(valid_from),
        "valid_until": stamp(valid_until),
        "ism_numbers": numbers,
    }
