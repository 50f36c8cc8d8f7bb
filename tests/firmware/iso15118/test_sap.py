"""SupportedAppProtocol negotiation: the EV's most preferred protocol we speak, by major version."""

from __future__ import annotations

from typing import Any

import pytest

from firmware.iso15118.exi.namespaces import Namespace
from firmware.iso15118.session.sap import SUPPORTED, Protocol, SapError, negotiate

DIN, ISO2, ISO20_COMMON, ISO20_AC = Namespace.DIN, Namespace.ISO2, Namespace.ISO20_COMMON, Namespace.ISO20_AC


def offer(*entries: tuple[str, int, int, int, int]) -> dict[str, Any]:
    return {
        "supportedAppProtocolReq": {
            "AppProtocol": [
                {
                    "ProtocolNamespace": ns,
                    "VersionNumberMajor": major,
                    "VersionNumberMinor": minor,
                    "SchemaID": schema,
                    "Priority": priority,
                }
                for ns, major, minor, schema, priority in entries
            ]
        }
    }


@pytest.mark.parametrize(
    ("entries", "supported", "code", "schema"),
    [
        pytest.param(
            [(ISO2, 2, 0, 1, 1), (DIN, 2, 0, 2, 2)], SUPPORTED, "OK_SuccessfulNegotiation", 1, id="first-choice"
        ),
        pytest.param(
            [(ISO2, 2, 0, 1, 2), (DIN, 2, 0, 2, 1)], SUPPORTED, "OK_SuccessfulNegotiation", 2, id="by-priority"
        ),
        pytest.param(
            [(ISO2, 2, 1, 4, 1)], SUPPORTED, "OK_SuccessfulNegotiationWithMinorDeviation", 4, id="minor-deviation"
        ),
        pytest.param(
            [(ISO2, 3, 0, 1, 1), (DIN, 2, 0, 9, 2)], SUPPORTED, "OK_SuccessfulNegotiation", 9, id="major-skips"
        ),
        pytest.param([("urn:other", 1, 0, 1, 1)], SUPPORTED, "Failed_NoNegotiation", None, id="nothing-common"),
        pytest.param(
            [(ISO20_COMMON, 1, 0, 3, 1), (DIN, 2, 0, 2, 2)],
            (Protocol(DIN, 2, 0),),
            "OK_SuccessfulNegotiation",
            2,
            id="configured-din-only",
        ),
        pytest.param([(ISO20_AC, 1, 0, 5, 1)], SUPPORTED, "OK_SuccessfulNegotiation", 5, id="iso20-by-service"),
        # CommonMessages is a message schema, not a service an EV can ask for.
        pytest.param([(ISO20_COMMON, 1, 0, 3, 1)], SUPPORTED, "Failed_NoNegotiation", None, id="iso20-common"),
    ],
)
def test_negotiation(
    entries: list[tuple[str, int, int, int, int]], supported: tuple[Protocol, ...], code: str, schema: int | None
) -> None:
    result = negotiate(offer(*entries), supported)
    body = result.response["supportedAppProtocolRes"]
    assert body["ResponseCode"] == code
    assert body.get("SchemaID") == schema and result.schema_id == schema
    assert (result.protocol is None) == (schema is None)


@pytest.mark.parametrize(
    "request_",
    [
        {},
        {"supportedAppProtocolReq": {}},
        {"supportedAppProtocolReq": {"AppProtocol": []}},
        offer(*[(DIN, 2, 0, i, 1) for i in range(21)]),
        {"supportedAppProtocolReq": {"AppProtocol": [{"ProtocolNamespace": DIN}]}},
    ],
)
def test_unreadable_requests_are_errors(request_: dict[str, Any]) -> None:
    with pytest.raises(SapError):
        negotiate(request_)
