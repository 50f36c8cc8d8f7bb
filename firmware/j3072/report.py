"""The backend's copy of every J3072 decision (issue 9 point 5: audited in the journal, the trace and OCPP).

OCPP has no J3072 message. Each decision goes to the CSMS as a DataTransfer (vendor id
``org.evse-firmware``, message id ``J3072Decision``, the decision as JSON), through the station's
persistent outbox: a decision taken while the backend link is down is sent when it comes back, and
survives a power cut. On OCPP 2.1 the start and the end of a discharge authorisation are also reported
with the DER function set's NotifyDERStartStop (OCPP 2.1 R04), under the control id
``J3072-<connector>``, so a CSMS that follows DER controls sees the PEV's discharge like any other.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from firmware.j3072.session import AuditRecord

__all__ = ["DECISION_MESSAGE_ID", "VENDOR_ID", "ocpp_messages"]

#: The project's vendor id (reverse DNS, as the billing records: firmware/ocpp/signed_meter.py).
VENDOR_ID = "org.evse-firmware"
DECISION_MESSAGE_ID = "J3072Decision"


def control_id(connector: int) -> str:
    return f"J3072-{connector}"


def ocpp_messages(record: AuditRecord, version: str, *, was_authorised: bool) -> list[tuple[str, dict[str, Any]]]:
    """The (action, camelCase payload) pairs that report ``record`` on OCPP ``version``."""
    data = json.dumps(record.as_dict(), separators=(",", ":"), sort_keys=True)
    messages: list[tuple[str, dict[str, Any]]] = [
        ("DataTransfer", {"vendorId": VENDOR_ID, "messageId": DECISION_MESSAGE_ID, "data": data})
    ]
    if version == "2.1" and record.authorised != was_authorised:
        timestamp = datetime.fromtimestamp(record.at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        messages.append(
            (
                "NotifyDERStartStop",
                {"controlId": control_id(record.connector), "started": record.authorised, "timestamp": timestamp},
            )
        )
    return messages
