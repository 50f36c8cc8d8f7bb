"""Every J3072 decision is audited: journal (append-only, survives a reopen), OCPP messages, backend input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from ocpp.v16 import call as call16
from ocpp.v21 import call as call21
from ocpp.v201 import call as call201

from firmware.j3072.report import VENDOR_ID, ocpp_messages
from firmware.j3072.service import J3072Service, backend_v2x_message
from firmware.j3072.session import AuditRecord
from firmware.journal import Journal, JournalError
from firmware.ocpp.calls import camel_to_snake_case

RECORD = AuditRecord(
    connector=1,
    at=1_800_000_000.0,
    authorised=True,
    reason="authorised",
    detail="every link of the J3072 chain is positive",
    ism="ACME/OBI/7K6A/J3072_202406",
    lfdi="3E4F45AB31EDFE5B67E343E5E4562E31984E23E5",
    parameters_version=2,
    max_discharge_w=5999.0,
)
DENIED = AuditRecord(1, 1_800_000_060.0, False, "backend_forbids_v2x", "backend: curtailment", None, None, 2, 0.0)


def test_decisions_are_kept_in_the_journal_across_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = Journal(path)
    for r in (RECORD, DENIED):
        journal.record_j3072(r)
    journal.close()
    again = Journal(path)
    rows = again.j3072_decisions(1)
    assert [(d.authorised, d.reason) for d in rows] == [(False, "backend_forbids_v2x"), (True, "authorised")]
    assert rows[1].ism == RECORD.ism and rows[1].max_discharge_w == 5999.0
    again.close()
    with sqlite3.connect(path) as raw, pytest.raises(sqlite3.IntegrityError, match="audit log"):
        raw.execute("DELETE FROM j3072_decisions")


def test_a_decision_must_be_consistent(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    with pytest.raises(JournalError, match="cannot carry the reason"):
        journal.record_j3072(AuditRecord(1, 1e9, True, "ism_not_approved", "", None, None, 1, 0.0))
    assert journal.j3072_decisions() == []
    journal.close()


@pytest.mark.parametrize(("version", "module"), [("1.6", call16), ("2.0.1", call201), ("2.1", call21)])
def test_each_decision_reaches_the_backend_in_a_message_the_version_knows(version: str, module: object) -> None:
    messages = ocpp_messages(RECORD, version, was_authorised=False)
    transfer = messages[0]
    assert transfer[0] == "DataTransfer" and transfer[1]["vendorId"] == VENDOR_ID
    assert json.loads(transfer[1]["data"])["reason"] == "authorised"
    for action, payload in messages:
        getattr(module, action)(**camel_to_snake_case(payload))  # the ocpp package builds it
    actions = [action for action, _ in messages]
    assert actions == (["DataTransfer", "NotifyDERStartStop"] if version == "2.1" else ["DataTransfer"])
    # No start/stop report when the authorisation did not change.
    assert [a for a, _ in ocpp_messages(RECORD, version, was_authorised=True)] == ["DataTransfer"]
    end = ocpp_messages(DENIED, "2.1", was_authorised=True)
    assert end[1][1]["started"] is False and end[1][1]["controlId"] == "J3072-1"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"allowed": true}', (True, "allowed")),
        ({"allowed": False, "reason": "feeder maintenance"}, (False, "feeder maintenance")),
    ],
)
def test_backend_v2x_messages(data: object, expected: tuple[bool, str]) -> None:
    assert backend_v2x_message(data) == expected


@pytest.mark.parametrize("data", ["nope", "[]", '{"allowed": "yes"}', {}, 3])
def test_bad_backend_v2x_messages_are_refused_clearly(data: object) -> None:
    with pytest.raises(ValueError, match="J3072V2X"):
        backend_v2x_message(data)


def test_service_reports_through_the_outbox_and_follows_plug_events(tmp_path: Path) -> None:
    from firmware.j3072.config import parse_j3072_config
    from tests.firmware.ocpp.certs import make_pki

    pki = make_pki(tmp_path)
    config = parse_j3072_config(
        {
            "bind": "127.0.0.1",
            "port": 0,
            "server_cert": str(pki.server_cert),
            "server_key": str(pki.server_key),
            "pev_roots": str(pki.ca_cert),
            "utility": {"approval_required": False},
            "backend": {"v2x": "ask"},
        }
    )
    now = [0.0]
    journal = Journal(tmp_path / "journal.db")
    service = J3072Service.build(
        config, monotonic=lambda: now[0], wall_clock=lambda: 1_800_000_000 + now[0], journal=journal
    )
    sent: list[tuple[str, dict[str, object]]] = []
    service.attach_station("2.0.1", lambda action, payload: sent.append((action, payload)))
    service.on_connector_event("pilot", {"state": "B"})
    assert service.session.active
    assert service.session.decision is not None and service.session.decision.reason == "site_not_configured"
    assert sent and sent[-1][0] == "DataTransfer"
    assert journal.j3072_decisions(1)[0].reason == "site_not_configured"
    assert service.data_transfer("J3072V2X", '{"allowed": true}') == ("Accepted", "applied")
    assert service.session.backend_v2x is True
    assert service.data_transfer("J3072V2X", "[]")[0] == "Rejected"
    assert service.data_transfer("J3072ApprovalList", "{}")[0] == "Rejected"  # no list configured here
    assert service.data_transfer("Other", "{}")[0] == "UnknownMessageId"
    service.on_connector_event("pilot", {"state": "A"})
    assert not service.session.active
    assert journal.j3072_decisions(1)[0].reason == "session_ended"
    journal.close()


@pytest.mark.parametrize("broken", ["server_key", "trusted_issuers"])
def test_unusable_files_are_clear_errors_at_start(tmp_path: Path, broken: str) -> None:
    """`evse run --j3072` stops with the file named (a ValueError, which `evse run` prints), no traceback."""
    from firmware.j3072.config import J3072ConfigError, parse_j3072_config
    from tests.firmware.ocpp.certs import make_pki

    pki = make_pki(tmp_path)
    doc: dict[str, object] = {
        "bind": "127.0.0.1",
        "server_cert": str(pki.server_cert),
        "server_key": str(tmp_path / "missing.key") if broken == "server_key" else str(pki.server_key),
        "pev_roots": str(pki.ca_cert),
        "utility": {"approval_required": True, "approval_list": str(tmp_path / "a.json"),
                    "trusted_issuers": {"U": str(tmp_path / "missing.pem")}} if broken == "trusted_issuers" else
                   {"approval_required": False},
    }  # fmt: skip
    with pytest.raises(J3072ConfigError, match="missing"):
        J3072Service.build(parse_j3072_config(doc), monotonic=lambda: 0.0, wall_clock=lambda: 1e9)
