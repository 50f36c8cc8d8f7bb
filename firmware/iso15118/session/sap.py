"""SupportedAppProtocol: which protocol this session speaks (ISO 15118-2 8.2, standards-facts.md 2.2).

The EV lists up to 20 protocols (namespace, major and minor version, its SchemaID, a Priority from 1,
the most preferred, to 20). An ISO 15118-20 EV names the namespace of the energy service it wants,
``urn:iso:std:iso:15118:-20:AC`` or ``...:-20:DC`` (not CommonMessages, which is a message schema only;
the namespaces EVerest's libiso15118 and the `iso15118` package's EVCC send and accept). The SECC
picks the EV's most preferred protocol it supports with the same major version:
``OK_SuccessfulNegotiation`` when the minor version matches too,
``OK_SuccessfulNegotiationWithMinorDeviation`` when only the major one does; ``Failed_NoNegotiation``
when none fits. The answer carries the EV's SchemaID of the chosen protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from firmware.iso15118.exi.namespaces import Namespace

DIN, ISO2 = Namespace.DIN, Namespace.ISO2
ISO20_AC, ISO20_DC = Namespace.ISO20_AC, Namespace.ISO20_DC


@dataclass(frozen=True)
class Protocol:
    namespace: str
    major: int
    minor: int


#: What this SECC speaks, with the versions EVerest and Josev accept (standards-facts.md 2.2).
SUPPORTED: tuple[Protocol, ...] = (
    Protocol(ISO20_AC, 1, 0),
    Protocol(ISO20_DC, 1, 0),
    Protocol(ISO2, 2, 0),
    Protocol(DIN, 2, 0),
)


class SapError(ValueError):
    """A supportedAppProtocolReq that cannot be read."""


@dataclass(frozen=True)
class Negotiated:
    protocol: Protocol | None  # None: no common protocol
    schema_id: int | None
    response: dict[str, Any]


def negotiate(request: dict[str, Any], supported: tuple[Protocol, ...] = SUPPORTED) -> Negotiated:
    try:
        offers = request["supportedAppProtocolReq"]["AppProtocol"]
    except (KeyError, TypeError) as exc:
        raise SapError("not a supportedAppProtocolReq with AppProtocol entries") from exc
    offers = offers if isinstance(offers, list) else [offers]
    if not 1 <= len(offers) <= 20:  # AppProtocol maxOccurs="20" (V2G_CI_AppProtocol.xsd)
        raise SapError(f"{len(offers)} AppProtocol entries; 1..20 allowed")
    parsed = []
    for offer in offers:
        try:
            parsed.append(
                (
                    int(offer["Priority"]),
                    str(offer["ProtocolNamespace"]),
                    int(offer["VersionNumberMajor"]),
                    int(offer["VersionNumberMinor"]),
                    int(offer["SchemaID"]),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SapError(f"an AppProtocol entry is incomplete: {offer!r}") from exc
    for _priority, namespace, major, minor, schema_id in sorted(parsed):
        for ours in supported:
            if ours.namespace == namespace and ours.major == major:
                exact = ours.minor == minor
                code = "OK_SuccessfulNegotiation" if exact else "OK_SuccessfulNegotiationWithMinorDeviation"
                response = {"supportedAppProtocolRes": {"ResponseCode": code, "SchemaID": schema_id}}
                return Negotiated(Protocol(namespace, major, minor), schema_id, response)
    return Negotiated(None, None, {"supportedAppProtocolRes": {"ResponseCode": "Failed_NoNegotiation"}})
